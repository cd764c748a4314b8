#include "model/linear.h"

#include "kernels/ops.h"

namespace strata {

Tensor ones_column(int64_t rows, DType dtype, Allocator& alloc) {
  Tensor t = Tensor::empty({rows, 1}, dtype, alloc);
  ops::fill(t, 1.0);
  return t;
}

Linear::Linear(ParameterRegistry& registry, const LinearSpec& spec, DType dtype) {
  STRATA_CHECK(spec.tp_size >= 1 && spec.tp_rank >= 0 && spec.tp_rank < spec.tp_size, "linear '",
               spec.name, "': tp rank ", spec.tp_rank, " of ", spec.tp_size);
  local_in_ = spec.in_features;
  local_out_ = spec.out_features;
  ShardSpec weight_shard, bias_shard;
  if (spec.split == Split::column) {
    STRATA_CHECK(spec.out_features % spec.tp_size == 0, "linear '", spec.name, "': ",
                 spec.out_features, " output features do not split over tp=", spec.tp_size);
    local_out_ = spec.out_features / spec.tp_size;
    weight_shard = {0, "tp", spec.tp_rank * local_out_};
    bias_shard = weight_shard;
  } else if (spec.split == Split::row) {
    STRATA_CHECK(spec.in_features % spec.tp_size == 0, "linear '", spec.name, "': ",
                 spec.in_features, " input features do not split over tp=", spec.tp_size);
    local_in_ = spec.in_features / spec.tp_size;
    weight_shard = {1, "tp", spec.tp_rank * local_in_};
    bias_here_ = spec.tp_rank == 0;
  } else if (spec.window_size > 0) {
    STRATA_CHECK(spec.window_start >= 0 && spec.window_start + spec.window_size <= spec.out_features,
                 "linear '", spec.name, "': window [", spec.window_start, ", ",
                 spec.window_start + spec.window_size, ") outside ", spec.out_features, " rows");
    windowed_ = spec.window_size < spec.out_features;
    window_start_ = spec.window_start;
    local_out_ = spec.window_size;
  }
  weight_ = &registry.add(spec.name + ".weight", {spec.out_features, spec.in_features}, weight_shard,
                          weight_shard.dim == 0 ? local_out_ : local_in_, Init::normal,
                          spec.init_std, true, dtype);
  if (spec.bias)
    bias_ = &registry.add(spec.name + ".bias", {spec.out_features}, bias_shard,
                          bias_shard.replicated() ? 0 : local_out_, Init::zeros, 0.0, false, dtype);
  if (windowed_) {
    weight_->tp_partial_grad = true;
    if (bias_) bias_->tp_partial_grad = true;
  }
}

Tensor Linear::weight_rows(const Tensor& w) const {
  return windowed_ ? w.slice(0, window_start_, window_start_ + local_out_) : w;
}

Tensor Linear::bias_rows(const Tensor& b) const {
  return windowed_ ? b.slice(0, window_start_, window_start_ + local_out_) : b;
}

std::pair<int64_t, int64_t> Linear::quantize_int8() {
  if (qweight_.defined()) return {0, 0};
  const auto before = static_cast<int64_t>(weight_->value.nbytes());
  qweight_ = ops::quantize_int8(weight_->value);
  weight_->value = Tensor();
  return {before, qweight_.nbytes()};
}

void Linear::forward(const Tensor& x, Tensor& y) const {
  if (qweight_.defined())
    ops::gemm_int8(x, windowed_ ? qweight_.rows_slice(window_start_, window_start_ + local_out_) : qweight_,
                   y);
  else
    ops::gemm(x, weight_rows(weight_->value), y, {.trans_b = true});
  if (bias_ && bias_here_) {
    // y += ones[rows, 1] @ b[1, out]: the bias broadcast over rows as a rank-1 product.
    Tensor ones = ones_column(x.size(0), x.dtype(), allocator_of(x));
    ops::gemm(ones, bias_rows(bias_->value).view({1, local_out_}), y, {.beta = 1.0});
  }
}

void Linear::backward(const Tensor& x, const Tensor& dy, Tensor& dx, bool accumulate_dx) const {
  STRATA_CHECK(!qweight_.defined(), "an int8-quantised linear runs forward only (inference)");
  // dW[out, in] += dy^T[out, rows] @ x[rows, in]
  Tensor dw = weight_rows(weight_->grad);
  ops::gemm(dy, x, dw, {.trans_a = true, .beta = 1.0});
  if (bias_) {
    // db[1, out] += ones^T[1, rows] @ dy[rows, out]. Every tp rank computes it (dy is the same on
    // all of them for a row-parallel linear), so the replicated bias stays the same everywhere.
    Tensor ones = ones_column(x.size(0), x.dtype(), allocator_of(x));
    Tensor db = bias_rows(bias_->grad).view({1, local_out_});
    ops::gemm(ones, dy, db, {.trans_a = true, .beta = 1.0});
  }
  if (dx.defined())
    ops::gemm(dy, weight_rows(weight_->value), dx, {.beta = accumulate_dx ? 1.0 : 0.0});
}

}  // namespace strata
