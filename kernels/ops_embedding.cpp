// Embedding front ends: ids [n] i32/i64, table [vocab_shard, d] f32/f64/bf16/f16, out [n, d].
#include "kernels/cpu/embedding.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

namespace strata::ops {

void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out) {
  constexpr const char* op = "embedding_forward";
  check::usable(op, "ids", ids);
  check::usable(op, "table", table);
  check::usable(op, "out", out);
  check::same_device(op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  dispatch::cpu_only(op, "table", table);
  check::ndim_is(op, "ids", ids, 1);
  check::ndim_is(op, "table", table, 2);
  check::shape_is(op, "out", out, {ids.size(0), table.size(1)});
  dispatch::dtype_like(op, "out", out, "table", table);
  dispatch::floating(op, "table", table, [&](auto t_tag) {
    using T = decltype(t_tag);
    dispatch::index(op, "ids", ids, [&](auto i_tag) {
      using I = decltype(i_tag);
      cpu::embedding_forward<T, I>(ids.data<I>(), ids.size(0), table.data<T>(), vocab_start,
                                   table.size(0), table.size(1), out.data<T>());
    });
  });
}

void embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_start,
                        Tensor& dtable) {
  constexpr const char* op = "embedding_backward";
  check::usable(op, "dout", dout);
  check::usable(op, "ids", ids);
  check::usable(op, "dtable", dtable);
  check::same_device(op, {{"dout", &dout}, {"ids", &ids}, {"dtable", &dtable}});
  dispatch::cpu_only(op, "dtable", dtable);
  check::ndim_is(op, "ids", ids, 1);
  check::ndim_is(op, "dtable", dtable, 2);
  check::shape_is(op, "dout", dout, {ids.size(0), dtable.size(1)});
  dispatch::dtype_like(op, "dout", dout, "dtable", dtable);
  dispatch::floating(op, "dtable", dtable, [&](auto t_tag) {
    using T = decltype(t_tag);
    dispatch::index(op, "ids", ids, [&](auto i_tag) {
      using I = decltype(i_tag);
      cpu::embedding_backward<T, I>(dout.data<T>(), ids.data<I>(), ids.size(0), vocab_start,
                                    dtable.size(0), dtable.size(1), dtable.data<T>());
    });
  });
}

}  // namespace strata::ops
