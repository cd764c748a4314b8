// The mixture-of-experts routing ops' front ends (kernels/ops.h): the checks are the same for both
// backends; the kernels are kernels/cpu/moe.h and kernels/cuda/moe.h. On the CPU every kept
// choice's row is checked against the packed tensor's rows; on CUDA the rows are on the device,
// so the caller sizes packed tensors from the layout it chose (src/model/moe.cpp does).
#include <limits>
#include <tuple>
#include <utility>

#include "kernels/cpu/moe.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/moe.h"
#endif

namespace strata::ops {
namespace {

// The routing tensor of one forward: row [rows, k] i32 (each choice's packed row, -1 dropped).
struct Routing {
  int64_t rows, k;
};

Routing routing_args(const char* op, const Tensor& row) {
  check::usable(op, "row", row);
  check::ndim_is(op, "row", row, 2);
  check::dtype_is(op, "row", row, DType::i32);
  return {row.size(0), row.size(1)};
}

// A [n, d] row tensor of a dtype the op takes (f32/bf16/f16, and f64 on the CPU).
void rows_arg(const char* op, const char* arg, const Tensor& t, int64_t d) {
  check::usable(op, arg, t);
  check::ndim_is(op, arg, t, 2);
  STRATA_CHECK(t.size(1) == d, op, ": argument '", arg, "' ", t.describe(), " must have ", d,
               " columns");
  if (!t.device().is_cpu()) check::dtype_in(op, arg, t, {DType::f32, DType::bf16, DType::f16});
}

// On the CPU: every kept choice names a row of the packed tensor.
void packed_rows(const char* op, const char* arg, const Tensor& packed, const Tensor& row) {
  if (!row.device().is_cpu()) return;
  const int32_t* r = row.data<int32_t>();
  for (int64_t c = 0; c < row.numel(); ++c)
    STRATA_CHECK(r[c] >= -1 && r[c] < packed.size(0), op, ": token-choice ", c, " names row ", r[c],
                 " of argument '", arg, "' ", packed.describe());
}

// A token-row tensor [rows, d] and a packed one [n, d] of its dtype; returns d.
int64_t token_and_packed(const char* op, const char* token_arg, const Tensor& token, int64_t rows,
                         const char* packed_arg, const Tensor& packed, const Tensor& row) {
  rows_arg(op, token_arg, token, token.ndim() == 2 ? token.size(1) : -1);
  const int64_t d = token.size(1);
  check::shape_is(op, token_arg, token, {rows, d});
  rows_arg(op, packed_arg, packed, d);
  dispatch::dtype_like(op, packed_arg, packed, token_arg, token);
  packed_rows(op, packed_arg, packed, row);
  return d;
}

}  // namespace

void moe_route(const Tensor& scores, int64_t k, Tensor& probs, Tensor& lse, Tensor& expert,
               Tensor& gate) {
  constexpr const char* op = "moe_route";
  check::usable(op, "scores", scores);
  check::same_device(op, {{"scores", &scores},
                          {"probs", &probs},
                          {"lse", &lse},
                          {"expert", &expert},
                          {"gate", &gate}});
  check::ndim_is(op, "scores", scores, 2);
  const int64_t rows = scores.size(0), E = scores.size(1);
  STRATA_CHECK(k >= 1 && k <= E, op, ": k=", k, " must lie in [1, ", E, "] for scores ",
               scores.describe());
  for (const auto& [name, t, shape, dtype] :
       {std::tuple<const char*, Tensor*, Shape, DType>{"probs", &probs, {rows, E}, DType::f64},
        {"lse", &lse, {rows}, DType::f64},
        {"expert", &expert, {rows, k}, DType::i32},
        {"gate", &gate, {rows, k}, DType::f64}}) {
    check::usable(op, name, *t);
    check::shape_is(op, name, *t, shape);
    check::dtype_is(op, name, *t, dtype);
  }
  if (dispatch::on_cuda(op, "scores", scores)) {
#if STRATA_CUDA
    check::dtype_in(op, "scores", scores, {DType::f32, DType::bf16, DType::f16});
    cuda::moe_route(scores.raw(), scores.dtype(), rows, E, k, probs.data<double>(),
                    lse.data<double>(), expert.data<int32_t>(), gate.data<double>(),
                    dispatch::stream_of(op, "scores", scores));
#endif
    return;
  }
  dispatch::floating(op, "scores", scores, [&](auto tag) {
    using T = decltype(tag);
    cpu::moe_route<T>(scores.data<T>(), rows, E, k, probs.data<double>(), lse.data<double>(),
                      expert.data<int32_t>(), gate.data<double>());
  });
}

void moe_capacity(const Tensor& expert, int64_t n_experts, int64_t capacity, int64_t rows_per_expert,
                  Tensor& row, Tensor& counts) {
  constexpr const char* op = "moe_capacity";
  check::same_device(op, {{"expert", &expert}, {"row", &row}, {"counts", &counts}});
  check::usable(op, "expert", expert);
  check::usable(op, "counts", counts);
  check::ndim_is(op, "expert", expert, 2);
  check::dtype_is(op, "expert", expert, DType::i32);
  check::dtype_is(op, "counts", counts, DType::i64);
  check::shape_is(op, "counts", counts, {2, n_experts});
  const auto [rows, k] = routing_args(op, row);
  check::shape_is(op, "row", row, expert.shape());
  const int64_t E = n_experts;
  STRATA_CHECK(capacity >= 0, op, ": capacity ", capacity, " must not be negative");
  STRATA_CHECK(rows_per_expert == 0 || rows_per_expert >= capacity, op, ": ", rows_per_expert,
               " rows an expert cannot hold a capacity of ", capacity);
  STRATA_CHECK(rows * k <= std::numeric_limits<int32_t>::max() &&
                   E * rows_per_expert <= std::numeric_limits<int32_t>::max(),
               op, ": ", rows * k, " token-choices in ", E * rows_per_expert,
               " fixed rows are more than i32 rows can name");
  if (dispatch::on_cuda(op, "expert", expert)) {
#if STRATA_CUDA
    cuda::moe_capacity(expert.data<int32_t>(), rows, k, E, capacity, rows_per_expert,
                       row.data<int32_t>(), counts.data<int64_t>(),
                       dispatch::stream_of(op, "expert", expert));
#endif
    return;
  }
  const int32_t* ex = expert.data<int32_t>();
  for (int64_t c = 0; c < rows * k; ++c)
    STRATA_CHECK(ex[c] >= 0 && ex[c] < E, op, ": token-choice ", c, " names expert ", ex[c], " of ",
                 E);
  cpu::moe_capacity(ex, rows, k, E, capacity, rows_per_expert, row.data<int32_t>(),
                    counts.data<int64_t>());
}

void moe_routing_losses(const Tensor& probs, const Tensor& lse, const Tensor& counts, int64_t k,
                        Tensor& losses) {
  constexpr const char* op = "moe_routing_losses";
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"probs", &probs},
                                {"lse", &lse},
                                {"counts", &counts},
                                {"losses", &losses}})
    check::usable(op, name, *t);
  check::same_device(op,
                     {{"probs", &probs}, {"lse", &lse}, {"counts", &counts}, {"losses", &losses}});
  check::ndim_is(op, "probs", probs, 2);
  const int64_t rows = probs.size(0), E = probs.size(1);
  check::dtype_is(op, "probs", probs, DType::f64);
  check::dtype_is(op, "lse", lse, DType::f64);
  check::dtype_is(op, "counts", counts, DType::i64);
  check::dtype_is(op, "losses", losses, DType::f64);
  check::shape_is(op, "lse", lse, {rows});
  check::shape_is(op, "counts", counts, {2, E});
  check::shape_is(op, "losses", losses, {2});
  STRATA_CHECK(rows > 0 && k >= 1, op, ": ", rows, " tokens of ", k,
               " choices: nothing to average over");
  if (dispatch::on_cuda(op, "probs", probs)) {
#if STRATA_CUDA
    cuda::moe_routing_losses(probs.data<double>(), lse.data<double>(), counts.data<int64_t>(), rows,
                             E, k, losses.data<double>(), dispatch::stream_of(op, "probs", probs));
#endif
    return;
  }
  cpu::moe_routing_losses(probs.data<double>(), lse.data<double>(), counts.data<int64_t>(), rows, E,
                          k, losses.data<double>());
}

void moe_routing_accumulate(const Tensor& counts, const Tensor& losses, Tensor& sum) {
  constexpr const char* op = "moe_routing_accumulate";
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"counts", &counts},
                                {"losses", &losses},
                                {"sum", &sum}})
    check::usable(op, name, *t);
  check::same_device(op, {{"counts", &counts}, {"losses", &losses}, {"sum", &sum}});
  check::ndim_is(op, "counts", counts, 2);
  check::dtype_is(op, "counts", counts, DType::i64);
  check::dtype_is(op, "losses", losses, DType::f64);
  check::dtype_is(op, "sum", sum, DType::f64);
  STRATA_CHECK(counts.size(0) == 2, op, ": argument 'counts' ", counts.describe(),
               " must be [2, n_experts]");
  const int64_t E = counts.size(1);
  check::shape_is(op, "losses", losses, {2});
  check::shape_is(op, "sum", sum, {2 * E + 2});
  if (dispatch::on_cuda(op, "sum", sum)) {
#if STRATA_CUDA
    cuda::moe_routing_accumulate(counts.data<int64_t>(), losses.data<double>(), E,
                                 sum.data<double>(), dispatch::stream_of(op, "sum", sum));
#endif
    return;
  }
  cpu::moe_routing_accumulate(counts.data<int64_t>(), losses.data<double>(), E, sum.data<double>());
}

void moe_dispatch(const Tensor& x, const Tensor& row, Tensor& packed) {
  constexpr const char* op = "moe_dispatch";
  check::same_device(op, {{"x", &x}, {"row", &row}, {"packed", &packed}});
  const auto [rows, k] = routing_args(op, row);
  const int64_t d = token_and_packed(op, "x", x, rows, "packed", packed, row);
  if (dispatch::on_cuda(op, "x", x)) {
#if STRATA_CUDA
    cuda::moe_dispatch(x.raw(), x.dtype(), row.data<int32_t>(), rows, k, d, packed.raw(),
                       dispatch::stream_of(op, "x", x));
#endif
    return;
  }
  dispatch::floating(op, "x", x, [&](auto tag) {
    using T = decltype(tag);
    cpu::moe_dispatch<T>(x.data<T>(), row.data<int32_t>(), rows, k, d, packed.data<T>());
  });
}

void moe_combine(const Tensor& out, const Tensor& row, const Tensor& gate, Tensor& y) {
  constexpr const char* op = "moe_combine";
  check::same_device(op, {{"out", &out}, {"row", &row}, {"gate", &gate}, {"y", &y}});
  const auto [rows, k] = routing_args(op, row);
  const int64_t d = token_and_packed(op, "y", y, rows, "out", out, row);
  check::usable(op, "gate", gate);
  check::shape_is(op, "gate", gate, {rows, k});
  check::dtype_is(op, "gate", gate, DType::f64);
  if (dispatch::on_cuda(op, "y", y)) {
#if STRATA_CUDA
    cuda::moe_combine(out.raw(), out.dtype(), row.data<int32_t>(), gate.data<double>(), rows, k, d,
                      y.raw(), dispatch::stream_of(op, "y", y));
#endif
    return;
  }
  dispatch::floating(op, "y", y, [&](auto tag) {
    using T = decltype(tag);
    cpu::moe_combine<T>(out.data<T>(), row.data<int32_t>(), gate.data<double>(), rows, k, d,
                        y.data<T>());
  });
}

void moe_combine_backward(const Tensor& dy, const Tensor& out, const Tensor& row, const Tensor& gate,
                          Tensor& dout, Tensor& dgate) {
  constexpr const char* op = "moe_combine_backward";
  check::same_device(op, {{"dy", &dy},
                          {"out", &out},
                          {"row", &row},
                          {"gate", &gate},
                          {"dout", &dout},
                          {"dgate", &dgate}});
  const auto [rows, k] = routing_args(op, row);
  const int64_t d = token_and_packed(op, "dy", dy, rows, "out", out, row);
  dispatch::like(op, "dout", dout, "out", out);
  for (const auto& [name, t] :
       {std::pair<const char*, const Tensor*>{"gate", &gate}, {"dgate", &dgate}}) {
    check::usable(op, name, *t);
    check::shape_is(op, name, *t, {rows, k});
    check::dtype_is(op, name, *t, DType::f64);
  }
  if (dispatch::on_cuda(op, "dy", dy)) {
#if STRATA_CUDA
    cuda::moe_combine_backward(dy.raw(), out.raw(), dy.dtype(), row.data<int32_t>(),
                               gate.data<double>(), rows, k, d, dout.raw(), dgate.data<double>(),
                               dispatch::stream_of(op, "dy", dy));
#endif
    return;
  }
  dispatch::floating(op, "dy", dy, [&](auto tag) {
    using T = decltype(tag);
    cpu::moe_combine_backward<T>(dy.data<T>(), out.data<T>(), row.data<int32_t>(),
                                 gate.data<double>(), rows, k, d, dout.data<T>(),
                                 dgate.data<double>());
  });
}

void moe_dispatch_backward(const Tensor& din, const Tensor& row, const Tensor* add, Tensor& dx) {
  constexpr const char* op = "moe_dispatch_backward";
  const Tensor none;
  const Tensor& addend = add ? *add : none;
  check::same_device(op, {{"din", &din}, {"row", &row}, {"add", &addend}, {"dx", &dx}});
  const auto [rows, k] = routing_args(op, row);
  const int64_t d = token_and_packed(op, "dx", dx, rows, "din", din, row);
  if (add) dispatch::like(op, "add", *add, "dx", dx);
  if (dispatch::on_cuda(op, "dx", dx)) {
#if STRATA_CUDA
    cuda::moe_dispatch_backward(din.raw(), dx.dtype(), row.data<int32_t>(),
                                add ? add->raw() : nullptr, rows, k, d, dx.raw(),
                                dispatch::stream_of(op, "dx", dx));
#endif
    return;
  }
  dispatch::floating(op, "dx", dx, [&](auto tag) {
    using T = decltype(tag);
    cpu::moe_dispatch_backward<T>(din.data<T>(), row.data<int32_t>(), add ? add->data<T>() : nullptr,
                                  rows, k, d, dx.data<T>());
  });
}

void moe_router_backward(const Tensor& probs, const Tensor& lse, const Tensor& expert,
                         const Tensor& gate, const Tensor& dgate, const Tensor& counts,
                         MoeLossArgs args, Tensor& dscores) {
  constexpr const char* op = "moe_router_backward";
  check::same_device(op, {{"probs", &probs},
                          {"lse", &lse},
                          {"expert", &expert},
                          {"gate", &gate},
                          {"dgate", &dgate},
                          {"counts", &counts},
                          {"dscores", &dscores}});
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"probs", &probs},
                                {"lse", &lse},
                                {"expert", &expert},
                                {"gate", &gate},
                                {"dgate", &dgate},
                                {"counts", &counts},
                                {"dscores", &dscores}})
    check::usable(op, name, *t);
  check::ndim_is(op, "probs", probs, 2);
  check::ndim_is(op, "expert", expert, 2);
  const int64_t rows = probs.size(0), E = probs.size(1), k = expert.size(1);
  for (const auto& [name, t, shape, dtype] : {std::tuple<const char*, const Tensor*, Shape, DType>{
                                                  "probs", &probs, {rows, E}, DType::f64},
                                              {"lse", &lse, {rows}, DType::f64},
                                              {"expert", &expert, {rows, k}, DType::i32},
                                              {"gate", &gate, {rows, k}, DType::f64},
                                              {"dgate", &dgate, {rows, k}, DType::f64},
                                              {"counts", &counts, {2, E}, DType::i64}}) {
    check::shape_is(op, name, *t, shape);
    check::dtype_is(op, name, *t, dtype);
  }
  check::shape_is(op, "dscores", dscores, {rows, E});
  if (dispatch::on_cuda(op, "dscores", dscores)) {
#if STRATA_CUDA
    check::dtype_in(op, "dscores", dscores, {DType::f32, DType::bf16, DType::f16});
    cuda::moe_router_backward(
        probs.data<double>(), lse.data<double>(), expert.data<int32_t>(), gate.data<double>(),
        dgate.data<double>(), counts.data<int64_t>(), rows, E, k, args.loss_scale, args.aux_coef,
        args.z_coef, dscores.raw(), dscores.dtype(), dispatch::stream_of(op, "dscores", dscores));
#endif
    return;
  }
  dispatch::floating(op, "dscores", dscores, [&](auto tag) {
    using T = decltype(tag);
    cpu::moe_router_backward<T>(probs.data<double>(), lse.data<double>(), expert.data<int32_t>(),
                                gate.data<double>(), dgate.data<double>(), counts.data<int64_t>(),
                                rows, E, k, args.loss_scale, args.aux_coef, args.z_coef,
                                dscores.data<T>());
  });
}

}  // namespace strata::ops
