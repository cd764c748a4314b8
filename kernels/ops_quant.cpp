// Weight-only int8's front end: quantisation (on the host, once), dequantisation, and the product
// with a quantised weight. The checks are the same for both backends; the kernels are
// kernels/cpu/quant.h and kernels/cuda/quant.h.
#include "kernels/cpu/quant.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/quant.h"
#endif

namespace strata::ops {

namespace {

// The codes and scales of q are usable together: [rows, words] i32 and [rows] f32 on one device,
// words the whole words that hold q.cols bytes.
void check_weight(std::string_view op, const Int8Weight& q) {
  check::usable(op, "codes", q.codes);
  check::usable(op, "scale", q.scale);
  check::same_device(op, {{"codes", &q.codes}, {"scale", &q.scale}});
  check::dtype_is(op, "codes", q.codes, DType::i32);
  check::dtype_is(op, "scale", q.scale, DType::f32);
  check::ndim_is(op, "codes", q.codes, 2);
  check::shape_is(op, "scale", q.scale, {q.codes.size(0)});
  STRATA_CHECK(q.cols >= 0 && q.codes.size(1) == (q.cols + 3) / 4, op, ": codes ",
               q.codes.describe(), " do not hold ", q.cols, " int8 columns in whole words");
}

const int8_t* codes_of(const Int8Weight& q) {
  return static_cast<const int8_t*>(q.codes.raw());
}

}  // namespace

Int8Weight Int8Weight::rows_slice(int64_t start, int64_t end) const {
  return {codes.slice(0, start, end), scale.slice(0, start, end), cols};
}

Int8Weight quantize_int8(const Tensor& w) {
  constexpr const char* op = "quantize_int8";
  check::usable(op, "w", w);
  check::ndim_is(op, "w", w, 2);
  const int64_t rows = w.size(0), cols = w.size(1);
  const Tensor host = w.to_cpu();
  Tensor f32 = Tensor::empty(w.shape(), DType::f32);
  cast(host, f32);
  Tensor codes = Tensor::empty({rows, (cols + 3) / 4}, DType::i32);
  Tensor scale = Tensor::empty({rows}, DType::f32);
  cpu::quantize_int8(f32.data<float>(), rows, cols, static_cast<int8_t*>(codes.raw()),
                     codes.size(1) * 4, scale.data<float>());
  Allocator& home = allocator_of(w);
  return {codes.placed(home), scale.placed(home), cols};
}

void dequantize_int8(const Int8Weight& q, Tensor& w) {
  constexpr const char* op = "dequantize_int8";
  check_weight(op, q);
  check::usable(op, "w", w);
  check::same_device(op, {{"codes", &q.codes}, {"w", &w}});
  check::shape_is(op, "w", w, {q.rows(), q.cols});
  if (dispatch::on_cuda(op, "w", w)) {
#if STRATA_CUDA
    check::dtype_in(op, "w", w, {DType::f32, DType::bf16, DType::f16});
    cuda::dequantize_int8(codes_of(q), q.row_bytes(), q.scale.data<float>(), q.rows(), q.cols,
                          w.dtype(), w.raw(), dispatch::stream_of(op, "w", w));
#endif
    return;
  }
  dispatch::floating(op, "w", w, [&](auto tag) {
    using T = decltype(tag);
    cpu::dequantize_int8<T>(codes_of(q), q.row_bytes(), q.scale.data<float>(), q.rows(), q.cols,
                            w.data<T>());
  });
}

void gemm_int8(const Tensor& x, const Int8Weight& w, Tensor& y) {
  constexpr const char* op = "gemm_int8";
  check_weight(op, w);
  check::usable(op, "x", x);
  check::usable(op, "y", y);
  check::same_device(op, {{"x", &x}, {"codes", &w.codes}, {"y", &y}});
  check::ndim_is(op, "x", x, 2);
  STRATA_CHECK(x.size(1) == w.cols, op, ": x ", x.describe(), " has ", x.size(1),
               " columns; the weight has ", w.cols);
  check::shape_is(op, "y", y, {x.size(0), w.rows()});
  dispatch::dtype_like(op, "y", y, "x", x);
  if (dispatch::on_cuda(op, "x", x)) {
#if STRATA_CUDA
    check::dtype_in(op, "x", x, {DType::f32, DType::bf16, DType::f16});
    if (x.size(0) <= cuda::kInt8GemvMaxRows) {
      cuda::gemv_int8(x.raw(), x.dtype(), x.size(0), w.cols, codes_of(w), w.row_bytes(),
                      w.scale.data<float>(), w.rows(), y.raw(), dispatch::stream_of(op, "x", x));
      return;
    }
#endif
  }
  // The weight dequantised into a scratch buffer of x's dtype, then the ordinary product.
  Tensor dense = Tensor::empty({w.rows(), w.cols}, x.dtype(), allocator_of(x));
  dequantize_int8(w, dense);
  gemm(x, dense, y, {.trans_b = true});
}

}  // namespace strata::ops
