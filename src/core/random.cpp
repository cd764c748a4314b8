#include "core/random.h"

#include "core/philox.h"

namespace strata {
namespace {

// Writes f(i) converted to x's dtype into every element of a contiguous CPU tensor.
template <typename F>
void fill_with(Tensor& x, const char* what, F f) {
  STRATA_CHECK(x.device().is_cpu() && x.is_contiguous(), what, ": needs a contiguous CPU tensor, got ",
               x.describe());
  const int64_t n = x.numel();
  switch (x.dtype()) {
    case DType::f32: {
      float* p = x.data<float>();
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(f(i));
      return;
    }
    case DType::f64: {
      double* p = x.data<double>();
      for (int64_t i = 0; i < n; ++i) p[i] = f(i);
      return;
    }
    case DType::bf16: {
      bf16* p = x.data<bf16>();
      for (int64_t i = 0; i < n; ++i) p[i] = bf16::from_float(static_cast<float>(f(i)));
      return;
    }
    case DType::f16: {
      f16* p = x.data<f16>();
      for (int64_t i = 0; i < n; ++i) p[i] = f16::from_float(static_cast<float>(f(i)));
      return;
    }
    case DType::i32: {
      int32_t* p = x.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(f(i));
      return;
    }
    case DType::i64: {
      int64_t* p = x.data<int64_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(f(i));
      return;
    }
    case DType::u16: {
      uint16_t* p = x.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<uint16_t>(f(i));
      return;
    }
  }
}

}  // namespace

void fill_normal(Tensor& x, uint64_t seed, uint64_t stream, double mean, double stddev,
                 uint64_t first_index) {
  fill_with(x, "fill_normal", [&](int64_t i) {
    return mean + stddev * static_cast<double>(
                               philox::normal(seed, stream, first_index + static_cast<uint64_t>(i)));
  });
}

void fill_uniform(Tensor& x, uint64_t seed, uint64_t stream, double low, double high,
                  uint64_t first_index) {
  fill_with(x, "fill_uniform", [&](int64_t i) {
    return low + (high - low) * static_cast<double>(philox::uniform(
                                    seed, stream, first_index + static_cast<uint64_t>(i)));
  });
}

void fill(Tensor& x, double value) {
  fill_with(x, "fill", [&](int64_t) { return value; });
}

}  // namespace strata
