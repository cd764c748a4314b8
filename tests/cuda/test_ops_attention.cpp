// CUDA attention against the CPU (op_parity.h): forward, backward, merge and decode over causal and
// full masks, MHA, GQA and MQA, head dims 8 (f32 only), 64 and 128, sequence lengths off every tile
// (1, 5, 17, 67, 130), and offsets that leave query rows seeing no key (lse = -inf, out = 0).
// The 16-bit forward and backward run both kernels (tensor cores where they apply, and SIMT). Small
// batches and head counts: the simulated GPU runs each thread as a fiber.
#include <cmath>
#include <limits>

#include "cuda/op_parity.h"
#include "kernels/cuda/attention.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

struct Problem {
  const char* name;
  int64_t batch, seq_q, seq_k, n_heads, n_kv_heads, head_dim;
  bool causal;
  int64_t q_offset, k_offset;

  ops::AttentionArgs args() const { return {causal, q_offset, k_offset, 0.0}; }
  Shape q_shape() const { return {batch, seq_q, n_heads, head_dim}; }
  Shape kv_shape() const { return {batch, seq_k, n_kv_heads, head_dim}; }
  Shape lse_shape() const { return {batch, n_heads, seq_q}; }
};

const std::vector<Problem>& problems() {
  static const std::vector<Problem> p = {
      // One query row that sees 3 keys. (With a single key its dq and dk are exactly 0 and both
      // backends return rounding noise around it, which no relative tolerance compares; the
      // f32 case q130_k1 keeps seq_k = 1, where the SIMT kernel's noise is the CPU's.)
      {"one_row_d64", 1, 1, 3, 2, 2, 64, true, 2, 0},
      {"q67_k67_causal_gqa_d64", 1, 67, 67, 4, 2, 64, true, 0, 0},
      {"q130_k130_full_mqa_d128", 1, 130, 130, 2, 1, 128, false, 0, 0},
      {"q5_k67_causal_end_d128", 2, 5, 67, 2, 1, 128, true, 62, 0},
      // Key block after the first 40 query rows: rows 0..39 see no key.
      {"q67_k130_koffset_d64", 1, 67, 130, 2, 2, 64, true, 0, 40},
      {"q17_k5_koffset_d8", 2, 17, 5, 3, 1, 8, true, 0, 10},
      {"q130_k1_full_d8", 1, 130, 1, 2, 2, 8, false, 0, 0},
      {"q1_k130_causal_past_d8", 1, 1, 130, 4, 2, 8, true, 200, 0},
  };
  return p;
}

// The 16-bit runs skip the head dim the tensor cores do not take; f32 runs all.
bool runs(const Problem& p, DType dtype) {
  return dtype == DType::f32 || p.head_dim != 8;
}

std::string tag(const Problem& p, DType d) {
  return name_of(p.name, "_", dtype_name(d));
}

// lse with its -inf entries (rows that see no key) set to 0, and where they were: the two compared
// separately, since one infinity would swamp a relative error.
std::vector<Tensor> split_lse(const Tensor& lse) {
  Tensor values = lse.to_cpu(), infinite = Tensor::zeros(lse.shape(), DType::f32);
  for (int64_t i = 0; i < values.numel(); ++i) {
    float& x = values.data<float>()[i];
    if (std::isinf(x) && x < 0) {
      x = 0.0f;
      infinite.data<float>()[i] = 1.0f;
    }
  }
  return {values, infinite};
}

std::vector<Tensor> forward(const Problem& p, const Tensor& q, const Tensor& k, const Tensor& v,
                            Allocator& a) {
  Tensor out = Tensor::empty(q.shape(), q.dtype(), a),
         lse = Tensor::empty(p.lse_shape(), DType::f32, a);
  ops::attention_forward(q, k, v, p.args(), out, lse);
  std::vector<Tensor> r = split_lse(lse);
  r.insert(r.begin(), out);
  return r;
}

cuda::AttentionProblem cuda_problem(const Problem& p) {
  return {p.batch,    p.seq_q,  p.seq_k,    p.n_heads,  p.n_kv_heads,
          p.head_dim, p.causal, p.q_offset, p.k_offset, 1.0 / std::sqrt(double(p.head_dim))};
}

// As forward() but with the SIMT kernel on CUDA even where attention_forward takes the tensor cores
// (bf16/f16 with head_dim 64 or 128), so both kernels are compared with the CPU.
std::vector<Tensor> forward_simt(const Problem& p, const Tensor& q, const Tensor& k,
                                 const Tensor& v, Allocator& a) {
  if (q.device().is_cpu()) return forward(p, q, k, v, a);
  Tensor out = Tensor::empty(q.shape(), q.dtype(), a),
         lse = Tensor::empty(p.lse_shape(), DType::f32, a);
  const cuda::AttentionProblem problem = cuda_problem(p);
  cuda::attention_forward_simt(q.raw(), k.raw(), v.raw(), q.dtype(), problem, out.raw(),
                               lse.data<float>(), cuda_device_for("forward_simt", "q", q).stream());
  std::vector<Tensor> r = split_lse(lse);
  r.insert(r.begin(), out);
  return r;
}

// dq, dk, dv of in = {q, k, v, dout} through this device's forward; `simt` takes the SIMT backward
// on CUDA even where attention_backward takes the tensor cores.
std::vector<Tensor> backward(const Problem& p, std::vector<Tensor>& in, Allocator& a, bool simt) {
  Tensor o = Tensor::empty(in[0].shape(), in[0].dtype(), a);
  Tensor lse = Tensor::empty(p.lse_shape(), DType::f32, a);
  ops::attention_forward(in[0], in[1], in[2], p.args(), o, lse);
  Tensor dq = Tensor::empty(in[0].shape(), in[0].dtype(), a);
  Tensor dk = Tensor::empty(in[1].shape(), in[1].dtype(), a);
  Tensor dv = Tensor::empty(in[1].shape(), in[1].dtype(), a);
  if (simt && !in[0].device().is_cpu()) {
    CudaDevice& device = cuda_device_for("backward_simt", "q", in[0]);
    const cuda::AttentionProblem problem = cuda_problem(p);
    Tensor delta = Tensor::empty({cuda::attention_backward_scratch(problem)}, DType::f32, device);
    cuda::attention_backward_simt(in[3].raw(), in[0].raw(), in[1].raw(), in[2].raw(), o.raw(),
                                  lse.data<float>(), in[0].dtype(), problem, delta.data<float>(),
                                  dq.raw(), dk.raw(), dv.raw(), device.stream());
  } else {
    ops::attention_backward(in[3], in[0], in[1], in[2], o, lse, p.args(), dq, dk, dv);
  }
  return {dq, dk, dv};
}

std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  for (const Problem& p : problems())
    for (DType d : cuda_dtypes()) {
      if (!runs(p, d)) continue;
      const double tol = dtype_tolerance(d);
      // Scores scale * q.k stay O(1) with entries in [-1, 1]; q in [-2, 2] sharpens the softmax.
      const std::vector<InputSpec> qkv = {
          {"q", p.q_shape(), d, -2, 2}, {"k", p.kv_shape(), d}, {"v", p.kv_shape(), d}};
      out.push_back({"forward_" + tag(p, d),
                     qkv,
                     [p](std::vector<Tensor>& in, Allocator& a) {
                       return forward(p, in[0], in[1], in[2], a);
                     },
                     {tol, tol, 0.0}});
      if (d != DType::f32 && (p.head_dim == 64 || p.head_dim == 128))
        out.push_back({"forward_simt_" + tag(p, d),
                       qkv,
                       [p](std::vector<Tensor>& in, Allocator& a) {
                         return forward_simt(p, in[0], in[1], in[2], a);
                       },
                       {tol, tol, 0.0}});
      std::vector<InputSpec> with_dout = qkv;
      with_dout.push_back({"dout", p.q_shape(), d});
      // Gradients go through out and lse of each backend's own forward (the 16-bit out differs
      // between them by a rounding here and there), and the tensor cores round P and dS to 16
      // bits for their products; all of it stays within the dtype's tolerance.
      const double grad_tol = tol;
      out.push_back(
          {"backward_" + tag(p, d),
           with_dout,
           [p](std::vector<Tensor>& in, Allocator& a) { return backward(p, in, a, false); },
           {grad_tol}});
      if (d != DType::f32 && (p.head_dim == 64 || p.head_dim == 128))
        out.push_back(
            {"backward_simt_" + tag(p, d),
             with_dout,
             [p](std::vector<Tensor>& in, Allocator& a) { return backward(p, in, a, true); },
             {grad_tol}});
    }
  return out;
}

// Two key blocks attended separately (the second at k_offset = its start) and merged equal the
// whole; the query block starts early enough (q_offset -3) that its first rows see neither block.
std::vector<OpCase> merge_cases() {
  std::vector<OpCase> out;
  for (DType d : cuda_dtypes())
    for (int64_t head_dim : {int64_t{8}, int64_t{64}}) {
      if (d != DType::f32 && head_dim == 8) continue;
      const double tol = dtype_tolerance(d);
      const Problem first{"", 2, 19, 23, 2, 1, head_dim, true, -3, 0};
      const Problem second{"", 2, 19, 11, 2, 1, head_dim, true, -3, 23};
      const std::string name = name_of("d", head_dim, "_", dtype_name(d));
      out.push_back({"merge_blocks_" + name,
                     {{"q", first.q_shape(), d, -2, 2},
                      {"k1", first.kv_shape(), d},
                      {"v1", first.kv_shape(), d},
                      {"k2", second.kv_shape(), d},
                      {"v2", second.kv_shape(), d}},
                     [first, second](std::vector<Tensor>& in, Allocator& a) {
                       Tensor o1 = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       Tensor o2 = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       Tensor l1 = Tensor::empty(first.lse_shape(), DType::f32, a);
                       Tensor l2 = Tensor::empty(first.lse_shape(), DType::f32, a);
                       ops::attention_forward(in[0], in[1], in[2], first.args(), o1, l1);
                       ops::attention_forward(in[0], in[3], in[4], second.args(), o2, l2);
                       ops::attention_merge(o1, l1, o2, l2);
                       std::vector<Tensor> r = split_lse(l1);
                       r.insert(r.begin(), o1);
                       return r;
                     },
                     {tol, tol, 0.0}});
      const Shape o{2, 7, 3, head_dim}, l{2, 3, 7};
      out.push_back({"merge_random_" + name,
                     {{"out", o, d},
                      {"lse", l, DType::f32, -3, 3},
                      {"out_b", o, d},
                      {"lse_b", l, DType::f32, -3, 3}},
                     [](std::vector<Tensor>& in, Allocator&) {
                       ops::attention_merge(in[0], in[1], in[2], in[3]);
                       return std::vector<Tensor>{in[0], in[1]};
                     },
                     {tol, 1e-5}});
    }
  return out;
}

// attention_decode on CUDA (split along the cache, merged by lse) against the CPU's one sweep,
// which is attention_forward with causal on and the rows at the cache's end (or earlier).
std::vector<OpCase> decode_cases() {
  struct Decode {
    int64_t batch, n_q, len, n_heads, n_kv_heads, head_dim, q_offset, split;
  };
  const std::vector<Decode> table = {
      {1, 1, 1, 2, 1, 64, 0, 0},      {2, 1, 67, 4, 2, 64, 66, 0}, {1, 1, 130, 2, 2, 128, 129, 3},
      {1, 4, 130, 2, 1, 64, 126, 7},  {1, 4, 67, 2, 2, 8, 0, 5},   {1, 2, 67, 2, 1, 8, 30, 200},
      {1, 1, 130, 2, 1, 128, 129, 1},
  };
  std::vector<OpCase> out;
  for (const Decode& c : table)
    for (DType d : cuda_dtypes()) {
      if (d != DType::f32 && c.head_dim == 8) continue;
      const Shape q{c.batch, c.n_q, c.n_heads, c.head_dim},
          kv{c.batch, c.len, c.n_kv_heads, c.head_dim};
      const std::string name = name_of("decode_", shape_tag(q), "_len", c.len, "_at", c.q_offset,
                                       "_split", c.split, "_", dtype_name(d));
      out.push_back({name,
                     {{"q", q, d, -2, 2}, {"k", kv, d}, {"v", kv, d}},
                     [c](std::vector<Tensor>& in, Allocator& a) {
                       Tensor o = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       ops::attention_decode(in[0], in[1], in[2], c.q_offset, o, c.split);
                       return std::vector<Tensor>{o};
                     },
                     {dtype_tolerance(d)}});
    }
  return out;
}

class AttentionParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(AttentionParity, MatchesCpu) {
  expect_parity(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cuda, AttentionParity, ::testing::ValuesIn(cases()), CaseName());
INSTANTIATE_TEST_SUITE_P(CudaMerge, AttentionParity, ::testing::ValuesIn(merge_cases()),
                         CaseName());
INSTANTIATE_TEST_SUITE_P(CudaDecode, AttentionParity, ::testing::ValuesIn(decode_cases()),
                         CaseName());

}  // namespace
}  // namespace strata::testing
