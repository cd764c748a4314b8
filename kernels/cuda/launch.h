// The host side of a kernel launch, for plain C++ files: the check after a launch.
#pragma once

namespace strata::cuda {

// Names the kernel in the error when a launch is refused (a bad configuration); faults during the
// run surface at the next synchronising call, which is checked too.
void check_launch(const char* kernel_name);

}  // namespace strata::cuda
