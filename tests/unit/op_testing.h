// Shared pieces of the op tests: random inputs from (seed, name), and the finite-difference
// gradient check every backward is held to.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "core/philox.h"
#include "core/random.h"
#include "core/tensor.h"

namespace strata::testing {

// Uniform(low, high) values keyed by `name`, so each input of a case is reproducible on its own.
inline Tensor random_tensor(const Shape& shape, DType dtype, const std::string& name,
                            double low = -1.0, double high = 1.0, uint64_t seed = 42) {
  Tensor t = Tensor::empty(shape, dtype);
  fill_uniform(t, seed, philox::stream_key(name), low, high);
  return t;
}

// Largest elementwise difference relative to the largest reference magnitude:
//   max_i |got_i - want_i| / max(max_i |want_i|, floor).
// Normalising by the tensor's scale (not per element) keeps entries that are near zero by
// cancellation from dominating, while still catching any wrong element of meaningful size.
inline double max_relative_error(const Tensor& got, const Tensor& want, double floor = 1e-12) {
  Tensor g = got.to_cpu(), w = want.to_cpu();
  STRATA_CHECK(g.shape() == w.shape(), "max_relative_error: shapes ", shape_string(g.shape()),
               " and ", shape_string(w.shape()), " differ");
  auto at = [](const Tensor& t, int64_t i) -> double {
    switch (t.dtype()) {
      case DType::f64: return t.data<double>()[i];
      case DType::f32: return t.data<float>()[i];
      case DType::bf16: return t.data<bf16>()[i].to_float();
      case DType::f16: return t.data<f16>()[i].to_float();
      case DType::i32: return t.data<int32_t>()[i];
      case DType::i64: return static_cast<double>(t.data<int64_t>()[i]);
      case DType::u16: return t.data<uint16_t>()[i];
    }
    return 0;
  };
  double diff = 0, scale = floor;
  for (int64_t i = 0; i < g.numel(); ++i) {
    double a = at(g, i), b = at(w, i);
    if (std::isnan(a) != std::isnan(b)) return INFINITY;
    diff = std::max(diff, std::abs(a - b));
    scale = std::max(scale, std::abs(b));
  }
  return diff / scale;
}

// Central finite differences of a scalar loss with respect to every element of the f64 tensor x:
//   dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h).
// `loss` must read x afresh on each call. With h = 1e-5 in f64 the truncation error is O(h^2)
// ~ 1e-10 relative and the rounding error O(eps/h) ~ 1e-11, far inside the 1e-6 the tests demand.
inline Tensor numerical_gradient(const std::function<double()>& loss, Tensor& x, double h = 1e-5) {
  STRATA_CHECK(x.dtype() == DType::f64 && x.device().is_cpu(),
               "numerical_gradient needs an f64 CPU tensor, got ", x.describe());
  Tensor grad = Tensor::empty(x.shape(), DType::f64);
  double* p = x.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double saved = p[i];
    p[i] = saved + h;
    const double up = loss();
    p[i] = saved - h;
    const double down = loss();
    p[i] = saved;
    grad.data<double>()[i] = (up - down) / (2 * h);
  }
  return grad;
}

// sum_i a_i * b_i in f64 (a random projection of an output turns it into a scalar loss whose
// gradient with respect to the output is b).
inline double dot(const Tensor& a, const Tensor& b) {
  STRATA_CHECK(a.dtype() == DType::f64 && b.dtype() == DType::f64 && a.numel() == b.numel(),
               "dot needs two f64 tensors of equal size, got ", a.describe(), " and ", b.describe());
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.data<double>()[i] * b.data<double>()[i];
  return s;
}

}  // namespace strata::testing
