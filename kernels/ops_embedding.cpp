// Embedding front ends: ids [n] i32/i64, table [vocab_shard, d] f32/f64/bf16/f16 (f32/bf16/f16 on
// CUDA), out [n, d]. The checks are the same for both backends; the kernels are
// kernels/cpu/embedding.h and kernels/cuda/embedding.h.
#include "kernels/cpu/embedding.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/embedding.h"
#endif

namespace strata::ops {

void embedding_forward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out) {
  constexpr const char* op = "embedding_forward";
  check::usable(op, "ids", ids);
  check::usable(op, "table", table);
  check::usable(op, "out", out);
  check::same_device(op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  check::ndim_is(op, "ids", ids, 1);
  check::ndim_is(op, "table", table, 2);
  check::shape_is(op, "out", out, {ids.size(0), table.size(1)});
  dispatch::dtype_like(op, "out", out, "table", table);
  if (dispatch::on_cuda(op, "table", table)) {
#if STRATA_CUDA
    check::index_dtype(op, "ids", ids);
    check::dtype_in(op, "table", table, {DType::f32, DType::bf16, DType::f16});
    cuda::embedding_forward(ids.raw(), ids.dtype(), ids.size(0), table.raw(), table.dtype(), vocab_start,
                            table.size(0), table.size(1), out.raw(), dispatch::stream_of(op, "table", table));
#endif
    return;
  }
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
  check::ndim_is(op, "ids", ids, 1);
  check::ndim_is(op, "dtable", dtable, 2);
  check::shape_is(op, "dout", dout, {ids.size(0), dtable.size(1)});
  dispatch::dtype_like(op, "dout", dout, "dtable", dtable);
  if (dispatch::on_cuda(op, "dtable", dtable)) {
#if STRATA_CUDA
    check::index_dtype(op, "ids", ids);
    check::dtype_in(op, "dtable", dtable, {DType::f32, DType::bf16, DType::f16});
    // The sort's keys live in scratch from the device's allocator, freed (stream-ordered) on return.
    CudaDevice& device = cuda_device_for(op, "dtable", dtable);
    Tensor scratch = Tensor::empty({cuda::embedding_backward_scratch(ids.size(0))}, DType::i64, device);
    cuda::embedding_backward(dout.raw(), dout.dtype(), ids.raw(), ids.dtype(), ids.size(0), vocab_start,
                             dtable.size(0), dtable.size(1), static_cast<uint64_t*>(scratch.raw()), dtable.raw(),
                             device.stream());
#endif
    return;
  }
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
