// A linear layer y = x W^T + b with W stored [out_features, in_features] (the Hugging Face layout,
// so conversion copies weights as they are). Under tensor parallelism (Megatron-LM, Shoeybi et
// al. 2019) a column-parallel linear holds rows [start, start + out/tp) of W and b, a row-parallel
// one holds columns of W (b whole, added once after the reduction). This struct does the local
// product only; the f/g collectives are applied around it by the parallel layers.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include <string>

#include "core/tensor.h"
#include "kernels/ops.h"
#include "model/parameter.h"

namespace strata {

enum class Split : uint8_t { none, column, row };

struct LinearSpec {
  std::string name;  // module name; parameters are <name>.weight and <name>.bias
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = false;
  double init_std = 0.02;
  Split split = Split::none;
  int64_t tp_rank = 0;
  int64_t tp_size = 1;
  // Split::none only: compute just the output rows [window_start, window_start + window_size) of
  // a weight every tp rank holds whole (its gradient is then partial on each rank and summed
  // over tp). 0: every row.
  int64_t window_start = 0;
  int64_t window_size = 0;
};

class Linear {
 public:
  Linear() = default;
  Linear(ParameterRegistry& registry, const LinearSpec& spec, DType dtype);

  int64_t local_in() const { return local_in_; }
  int64_t local_out() const { return local_out_; }

  // x: [rows, local_in] -> y: [rows, local_out].
  void forward(const Tensor& x, Tensor& y) const;
  // Accumulates dW += dy^T x and db += colsum(dy); dx = dy W (or dx += dy W when accumulate_dx).
  // dx may be undefined when the input gradient is not wanted.
  void backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx = false) const;

  // Inference, weight-only int8: the weight becomes int8 with one f32 scale per output row
  // (max |w| / 127, values rounded to the nearest step; ops::Int8Weight), held on the weight's
  // device, and the parameter's value is dropped; forward multiplies by it with ops::gemm_int8.
  // Returns the weight's bytes at rest before and after.
  std::pair<int64_t, int64_t> quantize_int8();
  bool quantized() const { return qweight_.defined(); }

 private:
  ops::Int8Weight qweight_;
  // The rows of W (and b) this rank computes with: all of them, or the window.
  Tensor weight_rows(const Tensor& w) const;
  Tensor bias_rows(const Tensor& b) const;

  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  int64_t local_in_ = 0, local_out_ = 0;
  int64_t window_start_ = 0;
  bool windowed_ = false;
  bool bias_here_ = true;  // row-parallel: the bias is added by tp rank 0 only (once in the sum)
};

// A column of ones [rows, 1] in `dtype`: bias broadcasts and column sums as gemms.
Tensor ones_column(int64_t rows, DType dtype, Allocator& alloc);

}  // namespace strata
