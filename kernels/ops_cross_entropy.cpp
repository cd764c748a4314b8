// Tensor front ends of the cross-entropy ops: argument checks (the same for both backends), then
// the kernel for the device, the logits' dtype and the targets' index type
// (kernels/cpu/cross_entropy.h on the CPU, kernels/cuda/cross_entropy.h on CUDA).
#include <cstdint>

#include "kernels/cpu/cross_entropy.h"
#include "kernels/ops.h"
#include "kernels/ops_check.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/cross_entropy.h"
#endif

namespace strata::ops {
namespace {

// A per-row vector ([rows]) or the logits' companion: defined, contiguous, shape and dtype.
void check_tensor(std::string_view op, std::string_view arg, const Tensor& t, const Shape& shape,
                  DType dtype) {
  check::usable(op, arg, t);
  check::shape_is(op, arg, t, shape);
  check::dtype_is(op, arg, t, dtype);
}

// targets: [rows], i32 or i64.
void check_targets(std::string_view op, const Tensor& targets, int64_t rows) {
  check::usable(op, "targets", targets);
  check::index_dtype(op, "targets", targets);
  check::shape_is(op, "targets", targets, {rows});
}

// logits: [rows, vocab_shard], contiguous; returns rows.
int64_t check_logits(std::string_view op, const Tensor& logits) {
  check::usable(op, "logits", logits);
  check::ndim_is(op, "logits", logits, 2);
  return logits.size(0);
}

// Runs `run(T{}, I{})` for the floating dtype of `values` (T = float, double, bf16 or f16) and the
// index type of `targets` (I = int32_t or int64_t): the CPU kernels.
template <typename F>
void run_cpu(std::string_view op, std::string_view values_arg, const Tensor& values,
             const Tensor& targets, F&& run) {
  dispatch::floating(op, values_arg, values, [&](auto t) {
    dispatch::index(op, "targets", targets, [&](auto i) { run(t, i); });
  });
}

#if STRATA_CUDA
// The CUDA kernels take f32, bf16 or f16 values (so f32 statistics): f64 is refused by name here,
// before any statistic is read as f32.
void check_cuda_dtype(std::string_view op, std::string_view arg, const Tensor& t) {
  STRATA_CHECK(t.dtype() != DType::f64, op, ": argument '", arg, "' ", t.describe(),
               " is f64, which the CUDA backend does not take (f32, bf16 or f16)");
}
#endif

}  // namespace

void cross_entropy_stats(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                         Tensor& max, Tensor& sum_exp, Tensor& target_logit) {
  constexpr std::string_view op = "cross_entropy_stats";
  const int64_t rows = check_logits(op, logits), vocab_shard = logits.size(1);
  check_targets(op, targets, rows);
  const DType stats = stats_dtype(logits.dtype());
  check_tensor(op, "max", max, {rows}, stats);
  check_tensor(op, "sum_exp", sum_exp, {rows}, stats);
  check_tensor(op, "target_logit", target_logit, {rows}, stats);
  STRATA_CHECK(vocab_start >= 0, op, ": vocab_start=", vocab_start, " must be >= 0");
  check::same_device(op, {{"logits", &logits},
                          {"targets", &targets},
                          {"max", &max},
                          {"sum_exp", &sum_exp},
                          {"target_logit", &target_logit}});
  if (dispatch::on_cuda(op, "logits", logits)) {
#if STRATA_CUDA
    check_cuda_dtype(op, "logits", logits);
    cuda::cross_entropy_stats(logits.raw(), logits.dtype(), targets.raw(), targets.dtype(), rows,
                              vocab_shard, vocab_start, max.data<float>(), sum_exp.data<float>(),
                              target_logit.data<float>(), dispatch::stream_of(op, "logits", logits));
#endif
    return;
  }
  run_cpu(op, "logits", logits, targets, [&]<typename T, typename I>(T, I) {
    cpu::cross_entropy_stats<T, I>(logits.data<T>(), targets.data<I>(), rows, vocab_shard,
                                   vocab_start, max.data<cpu::compute_t<T>>(),
                                   sum_exp.data<cpu::compute_t<T>>(),
                                   target_logit.data<cpu::compute_t<T>>());
  });
}

void cross_entropy_combine(const Tensor& max, const Tensor& sum_exp, const Tensor& target_logit,
                           const Tensor& targets, Tensor& loss, Tensor& lse) {
  constexpr std::string_view op = "cross_entropy_combine";
  check::usable(op, "max", max);
  check::ndim_is(op, "max", max, 2);
  const int64_t shards = max.size(0), rows = max.size(1);
  check_tensor(op, "sum_exp", sum_exp, max.shape(), max.dtype());
  check_tensor(op, "target_logit", target_logit, max.shape(), max.dtype());
  check_targets(op, targets, rows);
  check_tensor(op, "loss", loss, {rows}, max.dtype());
  check_tensor(op, "lse", lse, {rows}, max.dtype());
  check::same_device(op, {{"max", &max},
                          {"sum_exp", &sum_exp},
                          {"target_logit", &target_logit},
                          {"targets", &targets},
                          {"loss", &loss},
                          {"lse", &lse}});
  // Statistics only, so f32 or f64 (the stats dtype of every floating dtype); f32 on CUDA, which
  // has no f64 logits.
  if (dispatch::on_cuda(op, "max", max)) {
#if STRATA_CUDA
    check_cuda_dtype(op, "max", max);
    cuda::cross_entropy_combine(max.data<float>(), sum_exp.data<float>(), target_logit.data<float>(),
                                targets.raw(), targets.dtype(), shards, rows, loss.data<float>(),
                                lse.data<float>(), dispatch::stream_of(op, "max", max));
#endif
    return;
  }
  dispatch::real(op, "max", max, [&]<typename C>(C) {
    dispatch::index(op, "targets", targets, [&]<typename I>(I) {
      cpu::cross_entropy_combine<C, I>(max.data<C>(), sum_exp.data<C>(), target_logit.data<C>(),
                                       targets.data<I>(), shards, rows, loss.data<C>(),
                                       lse.data<C>());
    });
  });
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse) {
  constexpr std::string_view op = "cross_entropy_forward";
  const int64_t rows = check_logits(op, logits), vocab = logits.size(1);
  STRATA_CHECK(vocab > 0, op, ": logits ", logits.describe(), " have no vocabulary columns");
  check_targets(op, targets, rows);
  const DType stats = stats_dtype(logits.dtype());
  check_tensor(op, "loss", loss, {rows}, stats);
  check_tensor(op, "lse", lse, {rows}, stats);
  check::same_device(op,
                     {{"logits", &logits}, {"targets", &targets}, {"loss", &loss}, {"lse", &lse}});
  if (dispatch::on_cuda(op, "logits", logits)) {
#if STRATA_CUDA
    // A kernel cannot throw: a target outside the vocabulary makes that row's loss NaN instead.
    check_cuda_dtype(op, "logits", logits);
    cuda::cross_entropy_forward(logits.raw(), logits.dtype(), targets.raw(), targets.dtype(), rows,
                                vocab, loss.data<float>(), lse.data<float>(),
                                dispatch::stream_of(op, "logits", logits));
#endif
    return;
  }
  run_cpu(op, "logits", logits, targets, [&]<typename T, typename I>(T, I) {
    const int64_t bad = cpu::cross_entropy_forward<T, I>(logits.data<T>(), targets.data<I>(), rows,
                                                         vocab, loss.data<cpu::compute_t<T>>(),
                                                         lse.data<cpu::compute_t<T>>());
    // The message's arguments are evaluated only when the check fails, so bad >= 0 there.
    STRATA_CHECK(bad < 0, op, ": targets[", bad, "]=", static_cast<int64_t>(targets.data<I>()[bad]),
                 " is outside the vocabulary [0, ", vocab, ") of logits ", logits.describe());
  });
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                            const Tensor& lse, const Tensor& dloss, Tensor& dlogits) {
  constexpr std::string_view op = "cross_entropy_backward";
  const int64_t rows = check_logits(op, logits), vocab_shard = logits.size(1);
  check_targets(op, targets, rows);
  const DType stats = stats_dtype(logits.dtype());
  check_tensor(op, "lse", lse, {rows}, stats);
  check_tensor(op, "dloss", dloss, {rows}, stats);
  check_tensor(op, "dlogits", dlogits, logits.shape(), logits.dtype());
  STRATA_CHECK(vocab_start >= 0, op, ": vocab_start=", vocab_start, " must be >= 0");
  check::same_device(op, {{"logits", &logits},
                          {"targets", &targets},
                          {"lse", &lse},
                          {"dloss", &dloss},
                          {"dlogits", &dlogits}});
  if (dispatch::on_cuda(op, "logits", logits)) {
#if STRATA_CUDA
    check_cuda_dtype(op, "logits", logits);
    cuda::cross_entropy_backward(logits.raw(), logits.dtype(), targets.raw(), targets.dtype(), rows,
                                 vocab_shard, vocab_start, lse.data<float>(), dloss.data<float>(),
                                 dlogits.raw(), dispatch::stream_of(op, "logits", logits));
#endif
    return;
  }
  run_cpu(op, "logits", logits, targets, [&]<typename T, typename I>(T, I) {
    cpu::cross_entropy_backward<T, I>(logits.data<T>(), targets.data<I>(), rows, vocab_shard,
                                      vocab_start, lse.data<cpu::compute_t<T>>(),
                                      dloss.data<cpu::compute_t<T>>(), dlogits.data<T>());
  });
}

}  // namespace strata::ops
