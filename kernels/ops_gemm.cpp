// gemm's front end: checks the operands of c = alpha * op(a) @ op(b) + beta * c (and of
// gemm_ex's epilogue) and runs the product: on the CPU through kernels/cpu/gemm (f32/f64 through
// BLAS, bf16/f16 widened to f32) with the epilogue composed of further CPU steps; on CUDA through
// cuBLASLt with the epilogue fused where it can be (kernels/cuda/gemm).
#include <cstring>

#include "kernels/cpu/activations.h"
#include "kernels/cpu/gemm.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/gemm.h"
#endif

namespace strata::ops {
namespace {

struct Sizes {
  int64_t batch, m, n, k;
};

// The checks gemm and gemm_ex share; the sizes of op(a) [m, k] and op(b) [k, n].
Sizes check_product(const char* op, const Tensor& a, const Tensor& b, const Tensor& c,
                    const GemmArgs& args) {
  check::usable(op, "a", a);
  check::usable(op, "b", b);
  check::usable(op, "c", c);
  check::same_device(op, {{"a", &a}, {"b", &b}, {"c", &c}});
  STRATA_CHECK((a.ndim() == 2 || a.ndim() == 3) && b.ndim() == a.ndim() && c.ndim() == a.ndim(), op,
               ": a, b and c must all be 2-D, or all 3-D with a batch dimension; got a ",
               a.describe(), ", b ", b.describe(), ", c ", c.describe());
  dispatch::dtype_like(op, "b", b, "a", a);
  dispatch::dtype_like(op, "c", c, "a", a);

  // Sizes of op(a) [m, k] and op(b) [k, n], read from the last two dims as stored.
  const int r = a.ndim() - 2;  // index of the row dim
  const int64_t batch = r == 1 ? a.size(0) : 1;
  const int64_t m = args.trans_a ? a.size(r + 1) : a.size(r);
  const int64_t k = args.trans_a ? a.size(r) : a.size(r + 1);
  const int64_t kb = args.trans_b ? b.size(r + 1) : b.size(r);
  const int64_t n = args.trans_b ? b.size(r) : b.size(r + 1);
  STRATA_CHECK(kb == k && (r == 0 || b.size(0) == batch), op, ": inner or batch sizes differ: a ",
               a.describe(), (args.trans_a ? " (transposed)" : ""), " gives op(a) [", m, ", ", k,
               "], b ", b.describe(), (args.trans_b ? " (transposed)" : ""), " gives op(b) [", kb,
               ", ", n, "]");
  Shape expected = r == 1 ? Shape{batch, m, n} : Shape{m, n};
  STRATA_CHECK(c.shape() == expected, op, ": argument 'c' has shape ", shape_string(c.shape()),
               ", expected ", shape_string(expected), " for a ", a.describe(), " and b ",
               b.describe());
  return {batch, m, n, k};
}

// An epilogue tensor: usable, on c's device, c's dtype and the shape given.
void check_extra(const char* op, const char* arg, const Tensor& t, const Tensor& c,
                 const Shape& shape) {
  check::usable(op, arg, t);
  check::same_device(op, {{"c", &c}, {arg, &t}});
  dispatch::dtype_like(op, arg, t, "c", c);
  check::shape_is(op, arg, t, shape);
}

void check_epilogue(const char* op, const Tensor& c, const Sizes& s, const GemmEpilogue& e) {
  STRATA_CHECK(!(e.dgelu_aux && (e.bias || e.gelu || e.gelu_aux)), op,
               ": dgelu_aux (the backward through a GELU) takes no bias, gelu or gelu_aux");
  STRATA_CHECK(!e.gelu_aux || e.gelu, op, ": gelu_aux is given but gelu is off");
  STRATA_CHECK(!e.bias_grad || !(e.bias || e.gelu), op,
               ": bias_grad (a backward epilogue) takes no bias or gelu");
  if (e.bias) check_extra(op, "bias", *e.bias, c, {s.n});
  if (e.gelu_aux) {
    check_extra(op, "gelu_aux", *e.gelu_aux, c, c.shape());
    STRATA_CHECK(e.gelu_aux->raw() != c.raw(), op, ": gelu_aux must not be c itself");
  }
  if (e.dgelu_aux) check_extra(op, "dgelu_aux", *e.dgelu_aux, c, c.shape());
  if (e.bias_grad) {
    STRATA_CHECK(c.ndim() == 2, op, ": bias_grad needs a 2-D product, got c ", c.describe());
    check_extra(op, "bias_grad", *e.bias_grad, c, {e.dgelu_aux ? s.n : s.m});
  }
}

// A CPU vector of `n` ones in dtype T.
template <typename T>
Tensor ones(int64_t n, DType dtype) {
  Tensor t = Tensor::empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) t.data<T>()[i] = cpu::store<T>(cpu::compute_t<T>(1));
  return t;
}

// The CPU epilogue after c holds the product: bias through a rank-1 product, GELU and its
// gradient through kernels/cpu/activations, the bias gradients through products with ones.
template <typename T>
void cpu_epilogue(const Tensor& a, Tensor& c, const GemmArgs& args, const Sizes& s,
                  const GemmEpilogue& e) {
  using C = cpu::compute_t<T>;
  const int64_t rows = s.batch * s.m;
  if (e.bias)  // c[rows, n] += ones[rows, 1] @ bias[1, n]
    cpu::gemm<T>(false, false, 1, rows, s.n, 1, C(1), ones<T>(rows, c.dtype()).template data<T>(),
                 e.bias->data<T>(), C(1), c.data<T>());
  if (e.gelu) {
    if (e.gelu_aux) std::memcpy(e.gelu_aux->raw(), c.raw(), c.nbytes());
    cpu::gelu_forward<T>(c.data<T>(), c.numel(), c.data<T>());
  }
  if (e.dgelu_aux)
    cpu::gelu_backward<T>(c.data<T>(), e.dgelu_aux->data<T>(), c.numel(), c.data<T>());
  if (e.bias_grad) {
    if (e.dgelu_aux)  // [1, n] = ones[1, m] @ c[m, n]
      cpu::gemm<T>(false, false, 1, 1, s.n, s.m, C(1), ones<T>(s.m, c.dtype()).template data<T>(),
                   c.data<T>(), C(0), e.bias_grad->data<T>());
    else  // [m, 1] = op(a)[m, k] @ ones[k, 1]
      cpu::gemm<T>(args.trans_a, false, 1, s.m, 1, s.k, C(1), a.data<T>(),
                   ones<T>(s.k, c.dtype()).template data<T>(), C(0), e.bias_grad->data<T>());
  }
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, Tensor& c, const GemmArgs& args) {
  gemm_ex(a, b, c, args, {});
}

void gemm_ex(const Tensor& a, const Tensor& b, Tensor& c, const GemmArgs& args,
             const GemmEpilogue& epilogue) {
  constexpr const char* op = "gemm";
  const Sizes s = check_product(op, a, b, c, args);
  check_epilogue(op, c, s, epilogue);

  if (dispatch::on_cuda(op, "a", a)) {
#if STRATA_CUDA
    STRATA_CHECK(a.dtype() == DType::f32 || a.dtype() == DType::bf16 || a.dtype() == DType::f16, op,
                 ": argument 'a' ", a.describe(),
                 " has a dtype the CUDA backend's gemm does not take (f32, bf16, f16)");
    cuda::GemmCall call;
    call.trans_a = args.trans_a;
    call.trans_b = args.trans_b;
    call.batch = s.batch;
    call.m = s.m;
    call.n = s.n;
    call.k = s.k;
    call.dtype = a.dtype();
    call.alpha = args.alpha;
    call.beta = args.beta;
    call.a = a.raw();
    call.b = b.raw();
    call.c = c.raw();
    call.bias = epilogue.bias ? epilogue.bias->raw() : nullptr;
    call.gelu = epilogue.gelu;
    call.gelu_aux = epilogue.gelu_aux ? epilogue.gelu_aux->raw() : nullptr;
    call.dgelu_aux = epilogue.dgelu_aux ? epilogue.dgelu_aux->raw() : nullptr;
    call.bias_grad = epilogue.bias_grad ? epilogue.bias_grad->raw() : nullptr;
    cuda::gemm(cuda_device_for(op, "a", a), call);
#endif
    return;
  }
  dispatch::floating(op, "a", a, [&](auto tag) {
    using T = decltype(tag);
    using C = cpu::compute_t<T>;
    cpu::gemm<T>(args.trans_a, args.trans_b, s.batch, s.m, s.n, s.k, static_cast<C>(args.alpha),
                 a.data<T>(), b.data<T>(), static_cast<C>(args.beta), c.data<T>());
    cpu_epilogue<T>(a, c, args, s, epilogue);
  });
}

}  // namespace strata::ops
