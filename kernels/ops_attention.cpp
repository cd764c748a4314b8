// Tensor front ends of the attention ops: argument checks, then the kernel for the device and
// dtype (kernels/cpu/attention.h on the CPU, kernels/cuda/attention.h on CUDA: f32, bf16, f16).
#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/ops.h"
#include "kernels/ops_check.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/attention.h"
#endif

namespace strata::ops {
namespace {

// Checks q [batch, seq_q, n_heads, head_dim], k and v [batch, seq_k, n_kv_heads, head_dim] with
// n_kv_heads dividing n_heads, and returns the sizes.
cpu::AttentionShape attention_shape(std::string_view op, const Tensor& q, const Tensor& k,
                                    const Tensor& v) {
  check::usable(op, "q", q);
  check::usable(op, "k", k);
  check::usable(op, "v", v);
  check::ndim_is(op, "q", q, 4);
  check::ndim_is(op, "k", k, 4);
  check::dtype_is(op, "k", k, q.dtype());
  check::shape_is(op, "v", v, k.shape());
  check::dtype_is(op, "v", v, q.dtype());
  cpu::AttentionShape shape{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
  STRATA_CHECK(k.size(0) == shape.batch && k.size(3) == shape.head_dim, op, ": k ", k.describe(),
               " must be [batch, seq_k, n_kv_heads, head_dim] with batch and head_dim of q ",
               q.describe());
  STRATA_CHECK(shape.head_dim > 0, op, ": head_dim of q ", q.describe(), " must be positive");
  STRATA_CHECK(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0, op,
               ": n_kv_heads=", shape.n_kv_heads, " (k ", k.describe(),
               ") must divide n_heads=", shape.n_heads, " (q ", q.describe(), ")");
  return shape;
}

Shape lse_shape(const cpu::AttentionShape& s) {
  return {s.batch, s.n_heads, s.seq_q};
}

// Defined, contiguous, of the expected shape and dtype (outputs, statistics, gradients).
void check_tensor(std::string_view op, std::string_view arg, const Tensor& t, const Shape& shape,
                  DType dtype) {
  check::usable(op, arg, t);
  check::shape_is(op, arg, t, shape);
  check::dtype_is(op, arg, t, dtype);
}

cpu::AttentionMask attention_mask(std::string_view op, const AttentionArgs& args,
                                  int64_t head_dim) {
  STRATA_CHECK(std::isfinite(args.scale), op, ": scale=", args.scale, " must be finite");
  const double scale =
      args.scale == 0.0 ? 1.0 / std::sqrt(static_cast<double>(head_dim)) : args.scale;
  return {args.causal, args.q_offset, args.k_offset, scale};
}

#if STRATA_CUDA
cuda::AttentionProblem cuda_problem(const cpu::AttentionShape& s, const cpu::AttentionMask& m) {
  return {s.batch,    s.seq_q,  s.seq_k,    s.n_heads,  s.n_kv_heads,
          s.head_dim, m.causal, m.q_offset, m.k_offset, m.scale};
}
#endif

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                       Tensor& out, Tensor& lse) {
  constexpr std::string_view op = "attention_forward";
  const cpu::AttentionShape shape = attention_shape(op, q, k, v);
  check_tensor(op, "out", out, q.shape(), q.dtype());
  check_tensor(op, "lse", lse, lse_shape(shape), stats_dtype(q.dtype()));
  check::same_device(op, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}});
  const cpu::AttentionMask mask = attention_mask(op, args, shape.head_dim);
  if (dispatch::on_cuda(op, "q", q)) {
#if STRATA_CUDA
    cuda::attention_forward(q.raw(), k.raw(), v.raw(), q.dtype(), cuda_problem(shape, mask),
                            out.raw(), lse.data<float>(), dispatch::stream_of(op, "q", q));
#endif
    return;
  }
  dispatch::floating(op, "q", q, [&]<typename T>(T) {
    cpu::attention_forward<T>(q.data<T>(), k.data<T>(), v.data<T>(), shape, mask, {}, out.data<T>(),
                              lse.data<cpu::compute_t<T>>());
  });
}

void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, const AttentionArgs& args, Tensor& dq,
                        Tensor& dk, Tensor& dv) {
  constexpr std::string_view op = "attention_backward";
  const cpu::AttentionShape shape = attention_shape(op, q, k, v);
  check_tensor(op, "dout", dout, q.shape(), q.dtype());
  check_tensor(op, "out", out, q.shape(), q.dtype());
  check_tensor(op, "lse", lse, lse_shape(shape), stats_dtype(q.dtype()));
  check_tensor(op, "dq", dq, q.shape(), q.dtype());
  check_tensor(op, "dk", dk, k.shape(), q.dtype());
  check_tensor(op, "dv", dv, k.shape(), q.dtype());
  check::same_device(op, {{"q", &q},
                          {"k", &k},
                          {"v", &v},
                          {"dout", &dout},
                          {"out", &out},
                          {"lse", &lse},
                          {"dq", &dq},
                          {"dk", &dk},
                          {"dv", &dv}});
  const cpu::AttentionMask mask = attention_mask(op, args, shape.head_dim);
  if (dispatch::on_cuda(op, "q", q)) {
#if STRATA_CUDA
    const cuda::AttentionProblem problem = cuda_problem(shape, mask);
    // D = rowsum(dout * out) per query row; freed here, reused only after the stream's kernels
    // (the allocator reuses blocks in compute-stream order).
    Tensor delta = Tensor::empty({cuda::attention_backward_scratch(problem)}, DType::f32,
                                 cuda_device_for(op, "q", q));
    cuda::attention_backward(dout.raw(), q.raw(), k.raw(), v.raw(), out.raw(), lse.data<float>(),
                             q.dtype(), problem, delta.data<float>(), dq.raw(), dk.raw(), dv.raw(),
                             dispatch::stream_of(op, "q", q));
#endif
    return;
  }
  dispatch::floating(op, "q", q, [&]<typename T>(T) {
    cpu::attention_backward<T>(dout.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                               lse.data<cpu::compute_t<T>>(), shape, mask, {}, dq.data<T>(),
                               dk.data<T>(), dv.data<T>());
  });
}

void attention_merge(Tensor& out, Tensor& lse, const Tensor& out_b, const Tensor& lse_b) {
  constexpr std::string_view op = "attention_merge";
  check::usable(op, "out", out);
  check::ndim_is(op, "out", out, 4);
  const int64_t batch = out.size(0), seq_q = out.size(1), n_heads = out.size(2);
  const Shape stats_shape{batch, n_heads, seq_q};
  const DType stats = stats_dtype(out.dtype());
  check_tensor(op, "lse", lse, stats_shape, stats);
  check_tensor(op, "out_b", out_b, out.shape(), out.dtype());
  check_tensor(op, "lse_b", lse_b, stats_shape, stats);
  check::same_device(op, {{"out", &out}, {"lse", &lse}, {"out_b", &out_b}, {"lse_b", &lse_b}});
  if (dispatch::on_cuda(op, "out", out)) {
#if STRATA_CUDA
    cuda::attention_merge(out.raw(), lse.data<float>(), out_b.raw(), lse_b.data<float>(),
                          out.dtype(), batch, seq_q, n_heads, out.size(3),
                          dispatch::stream_of(op, "out", out));
#endif
    return;
  }
  dispatch::floating(op, "out", out, [&]<typename T>(T) {
    cpu::attention_merge<T>(out.data<T>(), lse.data<cpu::compute_t<T>>(), out_b.data<T>(),
                            lse_b.data<cpu::compute_t<T>>(), batch, seq_q, n_heads, out.size(3));
  });
}

void attention_decode(const Tensor& q, const Tensor& k, const Tensor& v, int64_t q_offset,
                      Tensor& out, int64_t split) {
  constexpr std::string_view op = "attention_decode";
  const cpu::AttentionShape shape = attention_shape(op, q, k, v);
  check_tensor(op, "out", out, q.shape(), q.dtype());
  check::same_device(op, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}});
  STRATA_CHECK(q_offset >= 0, op, ": q_offset=", q_offset, " must not be negative");
  STRATA_CHECK(split >= 0, op, ": split=", split, " must not be negative (0 chooses)");
  const cpu::AttentionMask mask = attention_mask(op, {true, q_offset, 0, 0.0}, shape.head_dim);
  if (dispatch::on_cuda(op, "q", q)) {
#if STRATA_CUDA
    const cuda::AttentionProblem problem = cuda_problem(shape, mask);
    // The splits' partial out and lse (f32); freed here, reused in compute-stream order.
    Tensor scratch = Tensor::empty({cuda::attention_decode_scratch(problem, split)}, DType::f32,
                                   cuda_device_for(op, "q", q));
    cuda::attention_decode(q.raw(), k.raw(), v.raw(), q.dtype(), problem, split,
                           scratch.data<float>(), out.raw(), dispatch::stream_of(op, "q", q));
#endif
    return;
  }
  dispatch::floating(op, "q", q, [&]<typename T>(T) {
    cpu::attention_decode<T>(q.data<T>(), k.data<T>(), v.data<T>(), shape, mask, split,
                             out.data<T>());
  });
}

}  // namespace strata::ops
