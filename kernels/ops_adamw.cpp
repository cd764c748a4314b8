// The optimizer step's front ends: adamw (one tensor), adamw_multi (every parameter in one pass,
// scaled and skipped by device values), grad_norm_and_check and clip_factor (the step decision the
// trainer takes, kept on the device). param, m, v share a master dtype (f32 or f64; f32 on CUDA)
// and a shape; grad has that shape and the master dtype or bf16/f16 (a low-precision gradient
// applied to master weights).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>
#include <type_traits>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"

#if STRATA_CUDA
#include "kernels/cuda/optim.h"
#endif

namespace strata::ops {
namespace {

void check_hyper(const char* op, const AdamWArgs& args) {
  STRATA_CHECK(args.step >= 1, op, ": step is 1-based (it sets the bias correction), got ",
               args.step);
  STRATA_CHECK(args.beta1 >= 0 && args.beta1 < 1 && args.beta2 >= 0 && args.beta2 < 1, op,
               ": betas must lie in [0, 1), got beta1=", args.beta1, " beta2=", args.beta2);
}

cpu::AdamWCoefficients coefficients(const AdamWArgs& args, double weight_decay, double grad_scale) {
  const double t = static_cast<double>(args.step);
  return {args.lr,
          args.beta1,
          args.beta2,
          args.eps,
          weight_decay,
          1.0 - std::pow(args.beta1, t),
          1.0 - std::pow(args.beta2, t),
          grad_scale};
}

// param, grad, m, v of one update: usable, on one device, m and v like param, grad of param's shape
// in param's dtype or bf16/f16; `where` names the entry in errors (empty for adamw).
void check_update(const char* op, const std::string& where, const Tensor& param, const Tensor& grad,
                  const Tensor& m, const Tensor& v) {
  const std::string p = where + "param", g = where + "grad", mn = where + "m", vn = where + "v";
  check::usable(op, p, param);
  check::usable(op, g, grad);
  check::same_device(op, {{p, &param}, {g, &grad}, {mn, &m}, {vn, &v}});
  dispatch::like(op, mn, m, p, param);
  dispatch::like(op, vn, v, p, param);
  STRATA_CHECK(grad.shape() == param.shape(), op, ": argument '", g, "' ", grad.describe(),
               " must have the shape of '", p, "' ", param.describe());
  dispatch::real(op, p, param, [](auto) {});
  dispatch::dtype_in(op, g, grad, {param.dtype(), DType::bf16, DType::f16});
}

// Calls f(P{}, G{}) for a checked (param, grad) dtype pair.
template <typename F>
void with_update_types(const char* op, const Tensor& param, const Tensor& grad, F&& f) {
  dispatch::real(op, "param", param, [&](auto p_tag) {
    using P = decltype(p_tag);
    dispatch::floating(op, "grad", grad, [&](auto g_tag) {
      using G = decltype(g_tag);
      // grad is the master dtype or a 16-bit one (checked); other pairs are never reached.
      if constexpr (std::is_same_v<G, P> || sizeof(G) == 2) f(p_tag, g_tag);
    });
  });
}

// t holds one element of `dtype`, on `ref`'s device.
void check_scalar(const char* op, const char* arg, const Tensor& t, DType dtype,
                  const char* ref_arg, const Tensor& ref) {
  check::usable(op, arg, t);
  check::same_device(op, {{ref_arg, &ref}, {arg, &t}});
  STRATA_CHECK(t.numel() == 1 && t.dtype() == dtype, op, ": argument '", arg, "' ", t.describe(),
               " must be one ", dtype_name(dtype), " element");
}

#if STRATA_CUDA
cuda::AdamWConstants device_constants(const cpu::AdamWCoefficients& c) {
  // kernels/cpu/adamw.cpp's Constants<float>, term for term.
  return {static_cast<float>(c.beta1),
          static_cast<float>(c.beta2),
          static_cast<float>(1.0 - c.beta1),
          static_cast<float>(1.0 - c.beta2),
          static_cast<float>(c.lr / c.bias_correction1),
          static_cast<float>(1.0 / c.bias_correction2),
          static_cast<float>(c.lr * c.weight_decay),
          static_cast<float>(c.grad_scale),
          static_cast<float>(c.eps)};
}

// A device copy of the bytes of `parts` (each a multiple of 8 bytes), uploaded on the device's
// stream without waiting; the returned pointers are the parts' starts in it.
template <typename... Parts>
Tensor upload_tables(CudaDevice& device, std::tuple<const Parts*...>& starts,
                     const std::vector<Parts>&... parts) {
  const size_t bytes = (... + (parts.size() * sizeof(Parts)));
  Tensor host = Tensor::empty({static_cast<int64_t>(std::max<size_t>(bytes, 8) / 8)}, DType::i64);
  char* out = static_cast<char*>(host.raw());
  size_t offset = 0;
  std::vector<size_t> offsets;
  ((std::memcpy(out + offset, parts.data(), parts.size() * sizeof(Parts)),
    offsets.push_back(offset), offset += parts.size() * sizeof(Parts)),
   ...);
  Tensor on_device = device.upload(host);
  const char* base = static_cast<const char*>(on_device.raw());
  size_t i = 0;
  std::apply(
      [&](auto&... p) {
        ((p = reinterpret_cast<std::remove_reference_t<decltype(p)>>(base + offsets[i++])), ...);
      },
      starts);
  return on_device;
}

// The chunks of a tensor of n elements (entry `index`) appended to `chunks`.
void add_chunks(std::vector<cuda::ChunkEntry>& chunks, int64_t index, int64_t n) {
  for (int64_t start = 0; start < n; start += cuda::kChunk) chunks.push_back({index, start});
}
#endif

}  // namespace

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWArgs& args) {
  constexpr const char* op = "adamw";
  check_update(op, "", param, grad, m, v);
  check_hyper(op, args);
  const cpu::AdamWCoefficients c = coefficients(args, args.weight_decay, args.grad_scale);
  if (dispatch::on_cuda(op, "param", param)) {
#if STRATA_CUDA
    STRATA_CHECK(param.dtype() == DType::f32, op, ": argument 'param' ", param.describe(),
                 " must be f32 on CUDA (the master weights)");
    cuda::adamw(param.data<float>(), grad.raw(), grad.dtype(), m.data<float>(), v.data<float>(),
                param.numel(), device_constants(c), dispatch::stream_of(op, "param", param));
#endif
    return;
  }
  with_update_types(op, param, grad, [&](auto p_tag, auto g_tag) {
    using P = decltype(p_tag);
    using G = decltype(g_tag);
    cpu::adamw<P, G>(param.data<P>(), grad.data<G>(), m.data<P>(), v.data<P>(), param.numel(), c);
  });
}

void adamw_multi(std::vector<AdamWGroup>& tensors, const AdamWArgs& args, const Tensor& grad_scale,
                 const Tensor& skip_flag) {
  constexpr const char* op = "adamw_multi";
  check_hyper(op, args);
  STRATA_CHECK(args.grad_scale == 1.0, op, ": args.grad_scale must be 1 (got ", args.grad_scale,
               "); the gradient scale comes from the 'grad_scale' tensor");
  check::usable(op, "grad_scale", grad_scale);
  check_scalar(op, "grad_scale", grad_scale, DType::f32, "grad_scale", grad_scale);
  check_scalar(op, "skip_flag", skip_flag, DType::i32, "grad_scale", grad_scale);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const AdamWGroup& e = tensors[i];
    const std::string where = "tensors[" + std::to_string(i) + "].";
    check_update(op, where, e.param, e.grad, e.m, e.v);
    check::same_device(op, {{"grad_scale", &grad_scale}, {where + "param", &e.param}});
    if (e.copy.defined()) {
      check::usable(op, where + "copy", e.copy);
      check::same_device(op, {{where + "param", &e.param}, {where + "copy", &e.copy}});
      STRATA_CHECK(e.copy.shape() == e.param.shape(), op, ": argument '", where, "copy' ",
                   e.copy.describe(), " must have the shape of '", where, "param' ",
                   e.param.describe());
      dispatch::dtype_in(op, where + "copy", e.copy, {e.param.dtype(), DType::bf16, DType::f16});
    }
  }

  if (dispatch::on_cuda(op, "grad_scale", grad_scale)) {
#if STRATA_CUDA
    CudaDevice& device = cuda_device_for(op, "grad_scale", grad_scale);
    // One launch per (grad dtype, copy dtype) present; an entry without a copy joins any group.
    std::map<std::pair<DType, DType>,
             std::pair<std::vector<cuda::AdamWEntry>, std::vector<cuda::ChunkEntry>>>
        groups;
    for (size_t i = 0; i < tensors.size(); ++i) {
      AdamWGroup& e = tensors[i];
      STRATA_CHECK(e.param.dtype() == DType::f32, op, ": argument 'tensors[", i, "].param' ",
                   e.param.describe(), " must be f32 on CUDA (the master weights)");
      if (e.param.numel() == 0) continue;
      const DType copy_dtype = e.copy.defined() ? e.copy.dtype() : DType::bf16;
      auto& [entries, chunks] = groups[{e.grad.dtype(), copy_dtype}];
      const double decay = e.weight_decay ? args.weight_decay : 0.0;
      add_chunks(chunks, static_cast<int64_t>(entries.size()), e.param.numel());
      entries.push_back({e.param.data<float>(), e.grad.raw(), e.m.data<float>(), e.v.data<float>(),
                         e.copy.defined() ? e.copy.raw() : nullptr, e.param.numel(),
                         static_cast<float>(args.lr * decay), 0.0f});
    }
    const cuda::AdamWConstants k = device_constants(coefficients(args, 0.0, 1.0));
    for (auto& [dtypes, group] : groups) {
      std::tuple<const cuda::AdamWEntry*, const cuda::ChunkEntry*> starts;
      Tensor tables = upload_tables(device, starts, group.first, group.second);
      cuda::adamw_multi(std::get<0>(starts), std::get<1>(starts),
                        static_cast<int64_t>(group.second.size()), dtypes.first, dtypes.second, k,
                        grad_scale.data<float>(), skip_flag.data<int32_t>(), device.stream());
    }
#endif
    return;
  }
  if (skip_flag.data<int32_t>()[0] != 0) return;
  const double scale = grad_scale.data<float>()[0];
  for (AdamWGroup& e : tensors) {
    const cpu::AdamWCoefficients c =
        coefficients(args, e.weight_decay ? args.weight_decay : 0.0, scale);
    with_update_types(op, e.param, e.grad, [&](auto p_tag, auto g_tag) {
      using P = decltype(p_tag);
      using G = decltype(g_tag);
      cpu::adamw<P, G>(e.param.data<P>(), e.grad.data<G>(), e.m.data<P>(), e.v.data<P>(),
                       e.param.numel(), c);
    });
    if (e.copy.defined()) cast(e.param, e.copy);
  }
}

void grad_norm_and_check(const std::vector<const Tensor*>& grads, Tensor& sum_squares,
                         Tensor& nonfinite_flag, bool accumulate) {
  constexpr const char* op = "grad_norm_and_check";
  check_scalar(op, "sum_squares", sum_squares, DType::f64, "sum_squares", sum_squares);
  check_scalar(op, "nonfinite_flag", nonfinite_flag, DType::i32, "sum_squares", sum_squares);
  for (size_t i = 0; i < grads.size(); ++i) {
    const std::string name = "grads[" + std::to_string(i) + "]";
    STRATA_CHECK(grads[i], op, ": ", name, " is null");
    check::usable(op, name, *grads[i]);
    check::same_device(op, {{"sum_squares", &sum_squares}, {name, grads[i]}});
    dispatch::dtype_in(op, name, *grads[i], {DType::f32, DType::f64, DType::bf16, DType::f16});
  }

  if (dispatch::on_cuda(op, "sum_squares", sum_squares)) {
#if STRATA_CUDA
    CudaDevice& device = cuda_device_for(op, "sum_squares", sum_squares);
    std::map<DType, std::pair<std::vector<cuda::NormEntry>, std::vector<cuda::ChunkEntry>>> groups;
    int64_t total_chunks = 0;
    for (size_t i = 0; i < grads.size(); ++i) {
      const Tensor& g = *grads[i];
      STRATA_CHECK(g.dtype() != DType::f64, op, ": argument 'grads[", i, "]' ", g.describe(),
                   " is f64, which the CUDA backend does not take (f32, bf16, f16)");
      if (g.numel() == 0) continue;
      auto& [entries, chunks] = groups[g.dtype()];
      add_chunks(chunks, static_cast<int64_t>(entries.size()), g.numel());
      entries.push_back({g.raw(), g.numel()});
      total_chunks += (g.numel() + cuda::kChunk - 1) / cuda::kChunk;
    }
    Tensor partial = Tensor::empty({std::max<int64_t>(total_chunks, 1)}, DType::f64, device);
    int64_t done = 0;
    for (auto& [dtype, group] : groups) {
      std::tuple<const cuda::NormEntry*, const cuda::ChunkEntry*> starts;
      Tensor tables = upload_tables(device, starts, group.first, group.second);
      cuda::chunk_sum_squares(std::get<0>(starts), std::get<1>(starts),
                              static_cast<int64_t>(group.second.size()), dtype,
                              partial.data<double>() + done, device.stream());
      done += static_cast<int64_t>(group.second.size());
    }
    cuda::finish_sum_squares(partial.data<double>(), total_chunks, sum_squares.data<double>(),
                             nonfinite_flag.data<int32_t>(), accumulate, device.stream());
#endif
    return;
  }
  double total = 0;
  for (const Tensor* g : grads)
    dispatch::floating(op, "grads", *g, [&](auto tag) {
      using T = decltype(tag);
      total += cpu::sum_squares<T>(g->data<T>(), g->numel());
    });
  const int32_t bad = std::isfinite(total) ? 0 : 1;
  double& sum = sum_squares.data<double>()[0];
  int32_t& flag = nonfinite_flag.data<int32_t>()[0];
  sum = accumulate ? sum + total : total;
  flag = accumulate ? (flag | bad) : bad;
}

void clip_factor(const Tensor& sum_squares, const Tensor& nonfinite_flag, const Tensor& loss,
                 const ClipArgs& args, Tensor& grad_scale, Tensor& skip_flag, Tensor& norm) {
  constexpr const char* op = "clip_factor";
  check::usable(op, "sum_squares", sum_squares);
  STRATA_CHECK(sum_squares.numel() >= 1 && sum_squares.dtype() == DType::f64, op,
               ": argument 'sum_squares' ", sum_squares.describe(),
               " must hold f64 sums of squares");
  check_scalar(op, "nonfinite_flag", nonfinite_flag, DType::i32, "sum_squares", sum_squares);
  if (loss.defined()) check_scalar(op, "loss", loss, DType::f64, "sum_squares", sum_squares);
  check_scalar(op, "grad_scale", grad_scale, DType::f32, "sum_squares", sum_squares);
  check_scalar(op, "skip_flag", skip_flag, DType::i32, "sum_squares", sum_squares);
  check_scalar(op, "norm", norm, DType::f64, "sum_squares", sum_squares);
  STRATA_CHECK(args.loss_scale > 0, op, ": loss_scale must be positive, got ", args.loss_scale);

  if (dispatch::on_cuda(op, "sum_squares", sum_squares)) {
#if STRATA_CUDA
    cuda::clip_factor(sum_squares.data<double>(), sum_squares.numel(),
                      nonfinite_flag.data<int32_t>(),
                      loss.defined() ? loss.data<double>() : nullptr, args.max_norm,
                      args.loss_scale, grad_scale.data<float>(), skip_flag.data<int32_t>(),
                      norm.data<double>(), dispatch::stream_of(op, "sum_squares", sum_squares));
#endif
    return;
  }
  // src/train/trainer.cpp's formulas, in the same order (the device kernel repeats them).
  double total = 0;
  for (int64_t i = 0; i < sum_squares.numel(); ++i) total += sum_squares.data<double>()[i];
  const double n = std::sqrt(total) / args.loss_scale;
  const bool bad = nonfinite_flag.data<int32_t>()[0] != 0 || !std::isfinite(n) ||
                   (loss.defined() && !std::isfinite(loss.data<double>()[0]));
  const double clip = args.max_norm > 0 && n > args.max_norm ? args.max_norm / (n + 1e-6) : 1.0;
  norm.data<double>()[0] = n;
  skip_flag.data<int32_t>()[0] = bad ? 1 : 0;
  grad_scale.data<float>()[0] = bad ? 0.0f : static_cast<float>(clip / args.loss_scale);
}

}  // namespace strata::ops
