// The CUDA backend against the CPU reference, one harness for every op (ggml's test-backend-ops):
// a case says how to make its inputs and how to run the op on tensors of any device; the harness
// runs it on the CPU, then on the CUDA device under three thread/block orders, and requires each
// CUDA output within the case's tolerance of the CPU's and bit-identical across the orders.
//
// On the simulated GPU the orders are ascending, descending and seeded random (gpusim/control.h),
// so a race between threads changes the bits and fails; on a real GPU the three runs check that
// the kernels are deterministic. Without a GPU (the real build on a machine without one) every
// case skips.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda/cuda_allocator.h"
#include "core/cuda/cuda_device.h"
#include "core/tensor.h"
#include "unit/op_harness.h"
#include "unit/op_testing.h"

#if STRATA_GPUSIM
#include "gpusim/control.h"
#endif

namespace strata::testing {

// One input of a case: uniform in [low, high) (integers: floor of it, for index tensors).
struct InputSpec {
  std::string name;
  Shape shape;
  DType dtype = DType::f32;
  double low = -1.0, high = 1.0;
};

struct OpCase {
  std::string name;  // the test's name: op, shape, dtype ("add_3x17_bf16")
  std::vector<InputSpec> inputs;
  // Runs the op on `in` (all on one device) and returns its outputs; new tensors come from
  // `alloc`, which is the CPU allocator or the CUDA device.
  std::function<std::vector<Tensor>(std::vector<Tensor>& in, Allocator& alloc)> run;
  // max_relative_error (op_testing.h) allowed between a CUDA output and the CPU's, per output;
  // one value for all when it has one entry.
  std::vector<double> tolerance = {1e-5};
  // Outputs compared with a tolerance even across orders (float atomics), by index.
  std::vector<size_t> order_tolerant = {};
};

inline std::string case_name(const OpCase& c) { return c.name; }

// The tolerance the issue sets for a dtype: f32 1e-5 relative, the 16-bit formats 1e-2.
inline double dtype_tolerance(DType dtype) { return dtype == DType::f32 ? 1e-5 : 1e-2; }

inline Tensor make_input(const InputSpec& spec, uint64_t seed) {
  if (spec.dtype == DType::i32 || spec.dtype == DType::i64) {
    Tensor real = random_tensor(spec.shape, DType::f64, spec.name, spec.low, spec.high, seed);
    Tensor t = Tensor::empty(spec.shape, spec.dtype);
    for (int64_t i = 0; i < t.numel(); ++i) {
      const auto v = static_cast<int64_t>(std::floor(real.data<double>()[i]));
      if (spec.dtype == DType::i32)
        t.data<int32_t>()[i] = static_cast<int32_t>(v);
      else
        t.data<int64_t>()[i] = v;
    }
    return t;
  }
  return random_tensor(spec.shape, spec.dtype, spec.name, spec.low, spec.high, seed);
}

inline Tensor to_device(const Tensor& host, Allocator& alloc) {
  Tensor t = Tensor::empty(host.shape(), host.dtype(), alloc);
  t.copy_from(host);
  return t;
}

// True when the bits of a and b (CPU tensors) are the same.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

inline void expect_parity(const OpCase& c) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  std::vector<Tensor> host_in;
  for (const InputSpec& spec : c.inputs) host_in.push_back(make_input(spec, 42));

  std::vector<Tensor> cpu_in;
  for (const Tensor& t : host_in) cpu_in.push_back(to_device(t, cpu_allocator()));
  const std::vector<Tensor> want = c.run(cpu_in, cpu_allocator());

  CudaDevice device(0);
#if STRATA_GPUSIM
  const gpusim::Schedule saved = gpusim::schedule();
  const std::vector<gpusim::Schedule> orders = {
      {gpusim::Order::ascending, 0}, {gpusim::Order::descending, 0}, {gpusim::Order::random, 11}};
#else
  const std::vector<int> orders = {0, 1, 2};
#endif
  std::vector<std::vector<Tensor>> runs;
  for (const auto& order : orders) {
#if STRATA_GPUSIM
    gpusim::set_schedule(order);
    const std::string order_name = gpusim::schedule_name(order);
#else
    const std::string order_name = "run " + std::to_string(order);
#endif
    std::vector<Tensor> dev_in;
    for (const Tensor& t : host_in) dev_in.push_back(to_device(t, device));
    std::vector<Tensor> got = c.run(dev_in, device);
    ASSERT_EQ(got.size(), want.size()) << c.name;
    std::vector<Tensor> back;
    for (size_t i = 0; i < got.size(); ++i) {
      back.push_back(got[i].to_cpu());
      const double tol = c.tolerance.size() == 1 ? c.tolerance[0] : c.tolerance.at(i);
      const double err = max_relative_error(back[i], want[i]);
      EXPECT_LE(err, tol) << c.name << ": output " << i << " under " << order_name << " is " << err
                          << " from the CPU (tolerance " << tol << ")";
    }
    runs.push_back(std::move(back));
  }
#if STRATA_GPUSIM
  gpusim::set_schedule(saved);
#endif
  for (size_t r = 1; r < runs.size(); ++r)
    for (size_t i = 0; i < runs[r].size(); ++i) {
      const bool tolerant =
          std::find(c.order_tolerant.begin(), c.order_tolerant.end(), i) != c.order_tolerant.end();
      if (tolerant) {
        EXPECT_LE(max_relative_error(runs[r][i], runs[0][i]), c.tolerance.size() == 1 ? c.tolerance[0] : c.tolerance[i])
            << c.name << ": output " << i << " differs between orders beyond tolerance";
      } else {
        EXPECT_TRUE(same_bits(runs[r][i], runs[0][i]))
            << c.name << ": output " << i << " differs in its bits between thread orders (a race?)";
      }
    }
}

// Shapes that are not multiples of any tile or vector width, and the 1-row / 1-column cases.
inline const std::vector<Shape>& awkward_shapes() {
  static const std::vector<Shape> shapes = {{1, 1}, {1, 37}, {29, 1}, {3, 17}, {7, 131}, {33, 64}, {5, 1000}};
  return shapes;
}

inline const std::vector<DType>& cuda_dtypes() {
  static const std::vector<DType> dtypes = {DType::f32, DType::bf16, DType::f16};
  return dtypes;
}

}  // namespace strata::testing
