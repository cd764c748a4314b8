// Errors that carry their context: what failed, where, and with which values.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace strata {

// Every failure Strata reports is an Error; the message is complete on its own (what failed, the
// values involved, the file:line that noticed it), so a caller can print it and exit.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace detail
}  // namespace strata

// STRATA_CHECK(n % tp == 0, "n_heads=", n, " is not divisible by tp=", tp);
#define STRATA_CHECK(cond, ...)                                                       \
  do {                                                                                \
    if (!(cond)) [[unlikely]]                                                         \
      ::strata::detail::throw_error(__FILE__, __LINE__,                               \
                                    ::strata::detail::concat(__VA_ARGS__));           \
  } while (0)

#define STRATA_FAIL(...) \
  ::strata::detail::throw_error(__FILE__, __LINE__, ::strata::detail::concat(__VA_ARGS__))

// MPI: every call's return code is checked and turned into the library's error string.
#define STRATA_MPI_CHECK(expr)                                                                 \
  do {                                                                                         \
    int strata_mpi_rc_ = (expr);                                                               \
    if (strata_mpi_rc_ != 0 /* MPI_SUCCESS */) [[unlikely]]                                    \
      ::strata::detail::throw_error(__FILE__, __LINE__,                                        \
                                    ::strata::detail::concat(#expr, " failed: ",               \
                                                             ::strata::detail::mpi_error_string( \
                                                                 strata_mpi_rc_)));            \
  } while (0)

// HDF5: functions return a negative value (herr_t or hid_t) on failure.
#define STRATA_HDF5_CHECK(expr)                                                         \
  ([&]() {                                                                              \
    auto strata_h5_rc_ = (expr);                                                        \
    if (strata_h5_rc_ < 0) [[unlikely]]                                                 \
      ::strata::detail::throw_error(__FILE__, __LINE__,                                 \
                                    ::strata::detail::concat(#expr, " failed (HDF5: ",  \
                                                             ::strata::detail::hdf5_error_string(), \
                                                             ")"));                     \
    return strata_h5_rc_;                                                               \
  }())

namespace strata::detail {
std::string mpi_error_string(int code);
// The innermost message on HDF5's error stack (empty when the stack is empty).
std::string hdf5_error_string();
}  // namespace strata::detail
