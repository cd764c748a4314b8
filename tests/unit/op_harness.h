// Pieces shared by the dense op tests (test_ops_*.cpp): tensors of any floating dtype read and
// made through f64, per-dtype tolerances, the finite-difference harness every backward goes
// through, gradient accumulation, and the misuse check. Builds on unit/op_testing.h.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "unit/op_testing.h"

namespace strata::testing {

// Element i of a CPU tensor of any dtype, as f64 (exact for every dtype but i64 beyond 2^53).
inline double element(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::f64:
      return t.data<double>()[i];
    case DType::f32:
      return t.data<float>()[i];
    case DType::bf16:
      return t.data<bf16>()[i].to_float();
    case DType::f16:
      return t.data<f16>()[i].to_float();
    case DType::i32:
      return t.data<int32_t>()[i];
    case DType::i64:
      return static_cast<double>(t.data<int64_t>()[i]);
    case DType::u16:
      return t.data<uint16_t>()[i];
  }
  return 0;
}

inline std::vector<double> values(const Tensor& t) {
  Tensor c = t.to_cpu();
  std::vector<double> v(static_cast<size_t>(c.numel()));
  for (int64_t i = 0; i < c.numel(); ++i) v[static_cast<size_t>(i)] = element(c, i);
  return v;
}

// A CPU tensor of `dtype` holding v (16-bit formats rounded to nearest even through f32).
inline Tensor tensor_of(const std::vector<double>& v, const Shape& shape, DType dtype) {
  Tensor t = Tensor::from_vector(v, shape);
  if (dtype == DType::f64) return t;
  Tensor out = Tensor::empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double x = v[static_cast<size_t>(i)];
    switch (dtype) {
      case DType::f32:
        out.data<float>()[i] = static_cast<float>(x);
        break;
      case DType::bf16:
        out.data<bf16>()[i] = bf16::from_float(static_cast<float>(x));
        break;
      case DType::f16:
        out.data<f16>()[i] = f16::from_float(static_cast<float>(x));
        break;
      case DType::i32:
        out.data<int32_t>()[i] = static_cast<int32_t>(x);
        break;
      case DType::i64:
        out.data<int64_t>()[i] = static_cast<int64_t>(x);
        break;
      default:
        STRATA_FAIL("tensor_of: unsupported dtype ", dtype_name(dtype));
    }
  }
  return out;
}

inline Tensor converted(const Tensor& t, DType dtype) {
  return tensor_of(values(t), t.shape(), dtype);
}

// How far an op's output in `dtype` may sit from an f64 reference on the same inputs, relative
// to the reference's largest magnitude (max_relative_error): a few roundings of the format.
inline double tolerance(DType dtype) {
  switch (dtype) {
    case DType::f64:
      return 1e-12;
    case DType::f32:
      return 1e-5;
    case DType::f16:
      return 4e-3;
    default:
      return 2e-2;  // bf16: 8 significant bits
  }
}

// How far a gradient in `dtype` may sit from central finite differences of the f64 forward. f64
// is held to the 1e-6 every backward must meet. f32 gets 1e-4: backward reads the statistics the
// forward saved in f32, and RMSNorm's dx = g rstd (1 - x^2 rstd^2) cancels to ~1e-5 of its terms
// when d is small. The 16-bit formats get two roundings of their own.
inline double grad_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f64:
      return 1e-6;
    case DType::f32:
      return 1e-4;
    default:
      return 2 * tolerance(dtype);
  }
}

// A test name from its parts, streamed ("layernorm_", shape_tag(s), "_", dtype_name(d)).
template <typename... Parts>
std::string name_of(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

// gtest's name generator for a table of cases: the case_name(case) found next to the case type.
struct CaseName {
  template <typename Case>
  std::string operator()(const ::testing::TestParamInfo<Case>& param_info) const {
    return case_name(param_info.param);
  }
};

// "3x17" for a test name.
inline std::string shape_tag(const Shape& shape) {
  std::string s;
  for (int64_t d : shape) {
    if (!s.empty()) s += 'x';
    s += std::to_string(d);
  }
  return s.empty() ? "scalar" : s;
}

// A differentiable op as the gradient harness sees it: its inputs (f64), a forward that runs in
// the inputs' dtype, and a backward that returns the gradient of sum(out * dout) with respect to
// each input (same order).
struct GradCheck {
  std::vector<std::pair<std::string, Tensor>> inputs;
  std::function<Tensor(const std::vector<Tensor>& inputs)> forward;
  std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs, const Tensor& dout)>
      backward;
};

// Rounds the inputs to `dtype`, runs backward there, and compares every gradient with central
// finite differences of the f64 forward at the same (rounded) inputs and the same dout.
inline void expect_gradients(const GradCheck& op, DType dtype) {
  std::vector<Tensor> in_d, in_64;
  for (const auto& [name, t] : op.inputs) {
    in_d.push_back(converted(t, dtype));
    in_64.push_back(converted(in_d.back(), DType::f64));
  }
  const Tensor out = op.forward(in_64);
  const Tensor dout_d = converted(random_tensor(out.shape(), DType::f64, "dout"), dtype);
  const Tensor dout_64 = converted(dout_d, DType::f64);
  const std::vector<Tensor> grads = op.backward(in_d, dout_d);
  ASSERT_EQ(grads.size(), op.inputs.size());
  for (size_t i = 0; i < in_64.size(); ++i) {
    const Tensor numeric =
        numerical_gradient([&] { return dot(op.forward(in_64), dout_64); }, in_64[i]);
    EXPECT_LE(max_relative_error(grads[i], numeric), grad_tolerance(dtype))
        << "gradient of '" << op.inputs[i].first << "' in " << dtype_name(dtype);
  }
}

// What `backward_into` adds to a gradient buffer that already holds random values: parameter
// gradients accumulate (+=), and this checks it rather than assuming a zeroed buffer.
inline Tensor accumulated(const Shape& shape, DType dtype,
                          const std::function<void(Tensor& grad)>& backward_into) {
  Tensor grad = converted(random_tensor(shape, DType::f64, "prior gradient"), dtype);
  const std::vector<double> before = values(grad);
  backward_into(grad);
  std::vector<double> added = values(grad);
  for (size_t i = 0; i < added.size(); ++i) added[i] -= before[i];
  return Tensor::from_vector(added, shape);
}

// `call` throws a strata::Error whose message contains every one of `needles`.
inline void expect_error(const std::function<void()>& call,
                         const std::vector<std::string>& needles) {
  try {
    call();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const std::string& n : needles)
      EXPECT_NE(message.find(n), std::string::npos) << "'" << n << "' missing from: " << message;
    return;
  }
  ADD_FAILURE() << "expected a strata::Error";
}

// One wrong call of an op and the words its Error must contain.
struct MisuseCase {
  const char* name;
  std::function<void()> call;
  std::vector<std::string> message_has;  // each must appear in the Error's message
};

// Every case of a misuse table throws an Error naming what its message_has says.
inline void expect_misuse_errors(const std::vector<MisuseCase>& cases) {
  for (const MisuseCase& c : cases) {
    SCOPED_TRACE(c.name);
    expect_error(c.call, c.message_has);
  }
}

}  // namespace strata::testing
