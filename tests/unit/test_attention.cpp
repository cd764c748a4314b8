// Attention: the flash-form forward against a naive masked softmax, the backward against central
// finite differences, blockwise (ring attention) forward and backward against one whole call, and
// misuse. Each test is fed by a table; adding a case is one line.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/ops.h"
#include "kernels/ops_dispatch.h"
#include "unit/op_harness.h"

using namespace strata;
using strata::ops::AttentionArgs;
using strata::testing::element;
using strata::testing::max_relative_error;
using strata::testing::random_tensor;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct AttentionCase {
  const char* name;
  int64_t batch, seq_q, seq_k, n_heads, n_kv_heads, head_dim;
  bool causal;
  int64_t q_offset, k_offset;
  double scale = 0.0;  // 0: 1 / sqrt(head_dim)

  AttentionArgs args() const { return {causal, q_offset, k_offset, scale}; }
  Shape q_shape() const { return {batch, seq_q, n_heads, head_dim}; }
  Shape kv_shape() const { return {batch, seq_k, n_kv_heads, head_dim}; }
  Shape lse_shape() const { return {batch, n_heads, seq_q}; }
};

std::string case_name(const ::testing::TestParamInfo<AttentionCase>& info) {
  return info.param.name;
}

struct Inputs {
  Tensor q, k, v;
};

Inputs make_inputs(const AttentionCase& c, DType dtype) {
  // Scores scale*q.k stay O(1) with entries in [-1, 1]; a wider range for q sharpens the softmax.
  return {random_tensor(c.q_shape(), dtype, "q", -2.0, 2.0),
          random_tensor(c.kv_shape(), dtype, "k"), random_tensor(c.kv_shape(), dtype, "v")};
}

// The definition, in f64 whatever the inputs' dtype: per (batch, head, query row) the full row of
// scores over the visible keys, softmax, weighted sum of v. A row with no visible key gets
// out = 0, lse = -inf.
void naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                     Tensor& out, Tensor& lse) {
  const int64_t batch = q.size(0), seq_q = q.size(1), n_heads = q.size(2), head_dim = q.size(3);
  const int64_t seq_k = k.size(1), n_kv_heads = k.size(2), group = n_heads / n_kv_heads;
  const double scale = args.scale != 0 ? args.scale : 1.0 / std::sqrt(double(head_dim));
  out = Tensor::zeros(q.shape(), DType::f64);
  lse = Tensor::empty({batch, n_heads, seq_q}, DType::f64);
  auto q_at = [&](int64_t b, int64_t i, int64_t h) {
    return ((b * seq_q + i) * n_heads + h) * head_dim;
  };
  auto kv_at = [&](int64_t b, int64_t j, int64_t h) {
    return ((b * seq_k + j) * n_kv_heads + h) * head_dim;
  };
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < n_heads; ++h)
      for (int64_t i = 0; i < seq_q; ++i) {
        std::vector<double> scores(static_cast<size_t>(seq_k), -kInf);
        double top = -kInf;
        for (int64_t j = 0; j < seq_k; ++j) {
          if (args.causal && args.k_offset + j > args.q_offset + i) continue;
          double s = 0;
          for (int64_t d = 0; d < head_dim; ++d)
            s += element(q, q_at(b, i, h) + d) * element(k, kv_at(b, j, h / group) + d);
          scores[size_t(j)] = scale * s;
          top = std::max(top, scale * s);
        }
        double& lse_i = lse.data<double>()[(b * n_heads + h) * seq_q + i];
        if (top == -kInf) {
          lse_i = -kInf;
          continue;
        }
        double total = 0;
        for (double& s : scores) total += (s = std::exp(s - top));
        for (int64_t j = 0; j < seq_k; ++j)
          for (int64_t d = 0; d < head_dim; ++d)
            out.data<double>()[q_at(b, i, h) + d] +=
                scores[size_t(j)] / total * element(v, kv_at(b, j, h / group) + d);
        lse_i = top + std::log(total);
      }
}

// max_relative_error for a log-sum-exp that may hold -inf (rows that see no key): the -inf
// entries must agree exactly, the finite ones are compared relative to the largest of them.
double lse_error(const Tensor& got, const Tensor& want) {
  double diff = 0, scale = 1e-12;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = element(got, i), w = element(want, i);
    if (std::isinf(w) || std::isinf(g) || std::isnan(g)) {
      if (g != w) return kInf;
      continue;
    }
    diff = std::max(diff, std::abs(g - w));
    scale = std::max(scale, std::abs(w));
  }
  return diff / scale;
}

cpu::AttentionShape kernel_shape(const Tensor& q, const Tensor& k) {
  return {q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
}

cpu::AttentionMask kernel_mask(const AttentionArgs& args, int64_t head_dim) {
  const double scale = args.scale != 0 ? args.scale : 1.0 / std::sqrt(double(head_dim));
  return {args.causal, args.q_offset, args.k_offset, scale};
}

// The CPU kernels called directly with explicit tile sizes (the ops use the defaults).
template <typename T>
void forward_tiled(const Inputs& in, const AttentionArgs& args, cpu::AttentionTiles tiles,
                   Tensor& out, Tensor& lse) {
  cpu::attention_forward<T>(in.q.data<T>(), in.k.data<T>(), in.v.data<T>(),
                            kernel_shape(in.q, in.k), kernel_mask(args, in.q.size(3)), tiles,
                            out.data<T>(), lse.data<cpu::compute_t<T>>());
}

void backward_tiled(const Tensor& dout, const Inputs& in, const Tensor& out, const Tensor& lse,
                    const AttentionArgs& args, cpu::AttentionTiles tiles, Tensor& dq, Tensor& dk,
                    Tensor& dv) {
  cpu::attention_backward<double>(dout.data<double>(), in.q.data<double>(), in.k.data<double>(),
                                  in.v.data<double>(), out.data<double>(), lse.data<double>(),
                                  kernel_shape(in.q, in.k), kernel_mask(args, in.q.size(3)), tiles,
                                  dq.data<double>(), dk.data<double>(), dv.data<double>());
}

// Tile sizes independent of the sequence lengths: smaller, larger, coprime to them, and 1.
const std::vector<cpu::AttentionTiles> kTiles = {{16, 32}, {32, 16}, {5, 3}, {1, 1}};

// ---- forward against the definition -------------------------------------------------------

// out against the f64 definition on the same (rounded) inputs: op_harness's tolerance(dtype), a
// few roundings of the format (observed: f64 <= 2e-16, f32 <= 4e-7), since every dtype computes
// in f64 or f32 and rounds out once. lse is a statistic, computed and kept in stats_dtype(dtype).
// A wrong mask, weight or rescale errs by O(0.01..1).
double lse_tolerance(DType dtype) {
  return strata::testing::tolerance(ops::stats_dtype(dtype));
}

class AttentionForward : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionForward, MatchesNaiveSoftmax) {
  const AttentionCase& c = GetParam();
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const Inputs in = make_inputs(c, dtype);
    Tensor want_out, want_lse;
    naive_attention(in.q, in.k, in.v, c.args(), want_out, want_lse);
    const double out_tolerance = strata::testing::tolerance(dtype);

    Tensor out = Tensor::empty(c.q_shape(), dtype);
    Tensor lse = Tensor::empty(c.lse_shape(), ops::stats_dtype(dtype));
    ops::attention_forward(in.q, in.k, in.v, c.args(), out, lse);
    EXPECT_LE(max_relative_error(out, want_out), out_tolerance) << "default tiles";
    EXPECT_LE(lse_error(lse, want_lse), lse_tolerance(dtype)) << "default tiles";

    for (cpu::AttentionTiles tiles : kTiles) {
      SCOPED_TRACE("tiles q=" + std::to_string(tiles.q) + " k=" + std::to_string(tiles.k));
      ops::dispatch::floating("test", "q", in.q, [&]<typename T>(T) {
        forward_tiled<T>(in, c.args(), tiles, out, lse);
      });
      EXPECT_LE(max_relative_error(out, want_out), out_tolerance);
      EXPECT_LE(lse_error(lse, want_lse), lse_tolerance(dtype));
    }
  }
}

// name, batch, seq_q, seq_k, n_heads, n_kv_heads, head_dim, causal, q_offset, k_offset[, scale]
const AttentionCase kForwardCases[] = {
    {"mha_full", 2, 5, 7, 4, 4, 8, false, 0, 0},
    {"mha_causal", 2, 37, 37, 2, 2, 16, true, 0, 0},
    {"gqa_causal_70", 1, 70, 70, 4, 2, 8, true, 0, 0},
    {"gqa_full_70", 1, 70, 70, 6, 3, 5, false, 0, 0},
    {"mqa_causal", 2, 37, 37, 4, 1, 8, true, 0, 0},
    {"explicit_scale", 1, 37, 37, 2, 1, 8, true, 0, 0, 0.9},
    {"one_token", 1, 1, 1, 1, 1, 4, true, 0, 0},
    {"decode_step", 1, 1, 37, 4, 2, 8, true, 36, 0},
    {"q_block_after_k_block", 1, 5, 37, 2, 1, 4, true, 40, 3},
    {"k_block_partly_future", 1, 37, 16, 2, 2, 8, true, 10, 20},
    {"k_block_all_future", 2, 5, 7, 2, 1, 4, true, 0, 10},
};
INSTANTIATE_TEST_SUITE_P(Cases, AttentionForward, ::testing::ValuesIn(kForwardCases), case_name);

// ---- backward against finite differences --------------------------------------------------

class AttentionBackward : public ::testing::TestWithParam<AttentionCase> {};

// L = sum(out * w) for a fixed random w, so dL/dout = w; the backward's dq, dk, dv against central
// differences of L (op_testing.h: truncation and rounding ~1e-10, so 1e-6 catches any real error).
TEST_P(AttentionBackward, MatchesFiniteDifferences) {
  const AttentionCase& c = GetParam();
  Inputs in = make_inputs(c, DType::f64);
  const Tensor w = random_tensor(c.q_shape(), DType::f64, "w");
  Tensor out = Tensor::empty(c.q_shape(), DType::f64),
         lse = Tensor::empty(c.lse_shape(), DType::f64);
  auto loss = [&] {
    ops::attention_forward(in.q, in.k, in.v, c.args(), out, lse);
    return strata::testing::dot(out, w);
  };
  const Tensor num_dq = strata::testing::numerical_gradient(loss, in.q);
  const Tensor num_dk = strata::testing::numerical_gradient(loss, in.k);
  const Tensor num_dv = strata::testing::numerical_gradient(loss, in.v);

  loss();  // out and lse at the unperturbed inputs
  Tensor dq = Tensor::empty(c.q_shape(), DType::f64);
  Tensor dk = Tensor::empty(c.kv_shape(), DType::f64), dv = Tensor::empty(c.kv_shape(), DType::f64);
  ops::attention_backward(w, in.q, in.k, in.v, out, lse, c.args(), dq, dk, dv);
  EXPECT_LE(max_relative_error(dq, num_dq), 1e-6) << "dq, default tiles";
  EXPECT_LE(max_relative_error(dk, num_dk), 1e-6) << "dk, default tiles";
  EXPECT_LE(max_relative_error(dv, num_dv), 1e-6) << "dv, default tiles";
  for (cpu::AttentionTiles tiles : kTiles) {
    SCOPED_TRACE("tiles k=" + std::to_string(tiles.k));
    backward_tiled(w, in, out, lse, c.args(), tiles, dq, dk, dv);
    EXPECT_LE(max_relative_error(dq, num_dq), 1e-6) << "dq";
    EXPECT_LE(max_relative_error(dk, num_dk), 1e-6) << "dk";
    EXPECT_LE(max_relative_error(dv, num_dv), 1e-6) << "dv";
  }
}

const AttentionCase kBackwardCases[] = {
    {"mha_full", 1, 3, 4, 2, 2, 3, false, 0, 0},
    {"gqa_causal", 2, 5, 5, 4, 2, 3, true, 0, 0},
    {"mqa_causal_q_after_k", 1, 4, 6, 3, 1, 2, true, 5, 2, 0.8},
    {"gqa_rows_seeing_nothing", 1, 5, 4, 2, 1, 3, true, 0, 2},
    {"all_rows_masked", 1, 3, 4, 2, 2, 2, true, 0, 5},
};
INSTANTIATE_TEST_SUITE_P(Cases, AttentionBackward, ::testing::ValuesIn(kBackwardCases), case_name);

// The f32, bf16 and f16 backward (out of finite differences' reach) against the f64 pipeline on
// the same rounded inputs and dout. Everything is computed in f32; the format's roundings of out
// (which enters D = dout . out) and of each gradient leave ~1.5 ulp of the format (observed: f32
// 3e-7, f16 2e-4, bf16 3e-3), inside op_harness's tolerance(dtype) with a margin of 7x or more.
TEST(AttentionBackwardLowPrecision, MatchesF64) {
  using strata::testing::converted;
  const AttentionCase c{"gqa", 2, 37, 37, 4, 2, 8, true, 0, 0};
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const Inputs in = make_inputs(c, dtype);
    const Tensor dout = random_tensor(c.q_shape(), dtype, "w");
    Tensor grads[2][3];  // [dtype, f64][dq, dk, dv]
    for (int which = 0; which < 2; ++which) {
      const DType dt = which == 0 ? dtype : DType::f64;
      const Inputs run{converted(in.q, dt), converted(in.k, dt), converted(in.v, dt)};
      Tensor out = Tensor::empty(c.q_shape(), dt);
      Tensor lse = Tensor::empty(c.lse_shape(), ops::stats_dtype(dt));
      ops::attention_forward(run.q, run.k, run.v, c.args(), out, lse);
      grads[which][0] = Tensor::empty(c.q_shape(), dt);
      grads[which][1] = Tensor::empty(c.kv_shape(), dt);
      grads[which][2] = Tensor::empty(c.kv_shape(), dt);
      ops::attention_backward(converted(dout, dt), run.q, run.k, run.v, out, lse, c.args(),
                              grads[which][0], grads[which][1], grads[which][2]);
    }
    const char* names[] = {"dq", "dk", "dv"};
    for (int g = 0; g < 3; ++g)
      EXPECT_LE(max_relative_error(grads[0][g], grads[1][g]), strata::testing::tolerance(dtype))
          << names[g];
  }
}

// ---- blockwise (ring attention) against one whole call ------------------------------------

struct BlockCase {
  AttentionCase shape;
  std::vector<int64_t> bounds;  // key-row boundaries of the blocks: 0 = b0 < b1 < ... = seq_k
};

std::string block_case_name(const ::testing::TestParamInfo<BlockCase>& info) {
  return info.param.shape.name;
}

class AttentionBlockwise : public ::testing::TestWithParam<BlockCase> {};

// Each K/V block [b_n, b_n+1) is attended on its own with k_offset + b_n and the partial results
// merged by their lse (starting from out = 0, lse = -inf): this must be the whole attention. Then
// each block's backward, given the merged out and lse, yields that block's dk, dv and a share of
// dq; the shares sum to the whole dq. f64, so only summation order differs: 1e-12.
TEST_P(AttentionBlockwise, MergedBlocksEqualWholeAttention) {
  const AttentionCase& c = GetParam().shape;
  const std::vector<int64_t>& bounds = GetParam().bounds;
  const Inputs in = make_inputs(c, DType::f64);
  const Tensor dout = random_tensor(c.q_shape(), DType::f64, "dout");

  Tensor out = Tensor::empty(c.q_shape(), DType::f64),
         lse = Tensor::empty(c.lse_shape(), DType::f64);
  ops::attention_forward(in.q, in.k, in.v, c.args(), out, lse);
  Tensor dq = Tensor::empty(c.q_shape(), DType::f64);
  Tensor dk = Tensor::empty(c.kv_shape(), DType::f64), dv = Tensor::empty(c.kv_shape(), DType::f64);
  ops::attention_backward(dout, in.q, in.k, in.v, out, lse, c.args(), dq, dk, dv);

  Tensor merged_out = Tensor::zeros(c.q_shape(), DType::f64);
  Tensor merged_lse = Tensor::empty(c.lse_shape(), DType::f64);
  fill(merged_lse, -kInf);
  std::vector<Inputs> blocks;
  std::vector<AttentionArgs> block_args;
  for (size_t n = 0; n + 1 < bounds.size(); ++n) {
    blocks.push_back({in.q, in.k.slice(1, bounds[n], bounds[n + 1]).contiguous(),
                      in.v.slice(1, bounds[n], bounds[n + 1]).contiguous()});
    AttentionArgs args = c.args();
    args.k_offset += bounds[n];
    block_args.push_back(args);
    Tensor block_out = Tensor::empty(c.q_shape(), DType::f64);
    Tensor block_lse = Tensor::empty(c.lse_shape(), DType::f64);
    ops::attention_forward(in.q, blocks.back().k, blocks.back().v, args, block_out, block_lse);
    ops::attention_merge(merged_out, merged_lse, block_out, block_lse);
  }
  EXPECT_LE(max_relative_error(merged_out, out), 1e-12);
  EXPECT_LE(lse_error(merged_lse, lse), 1e-12);

  Tensor dq_sum = Tensor::zeros(c.q_shape(), DType::f64);
  for (size_t n = 0; n < blocks.size(); ++n) {
    SCOPED_TRACE("block " + std::to_string(n));
    const Shape block_shape = blocks[n].k.shape();
    Tensor block_dq = Tensor::empty(c.q_shape(), DType::f64);
    Tensor block_dk = Tensor::empty(block_shape, DType::f64);
    Tensor block_dv = Tensor::empty(block_shape, DType::f64);
    ops::attention_backward(dout, in.q, blocks[n].k, blocks[n].v, merged_out, merged_lse,
                            block_args[n], block_dq, block_dk, block_dv);
    for (int64_t i = 0; i < dq_sum.numel(); ++i)
      dq_sum.data<double>()[i] += block_dq.data<double>()[i];
    EXPECT_LE(max_relative_error(block_dk, dk.slice(1, bounds[n], bounds[n + 1]).contiguous()),
              1e-12);
    EXPECT_LE(max_relative_error(block_dv, dv.slice(1, bounds[n], bounds[n + 1]).contiguous()),
              1e-12);
  }
  EXPECT_LE(max_relative_error(dq_sum, dq), 1e-12);
}

const BlockCase kBlockCases[] = {
    {{"gqa_causal_3_blocks", 2, 37, 37, 4, 2, 8, true, 0, 0}, {0, 16, 30, 37}},
    {{"mha_full_2_blocks", 1, 70, 70, 2, 2, 8, false, 0, 0}, {0, 35, 70}},
    {{"mqa_causal_q_after_k", 1, 37, 70, 3, 1, 4, true, 37, 0}, {0, 20, 50, 70}},
    {{"later_blocks_all_future", 1, 16, 48, 2, 1, 8, true, 0, 0}, {0, 16, 32, 48}},
};
INSTANTIATE_TEST_SUITE_P(Cases, AttentionBlockwise, ::testing::ValuesIn(kBlockCases),
                         block_case_name);

TEST(AttentionMerge, EmptySidesAreSafe) {
  // Rows (one head, head_dim 2): a both -inf; b only the merged side -inf; c only out_b's -inf.
  Tensor out = Tensor::from_vector<double>({0, 0, 0, 0, 3, 4}, {1, 3, 1, 2});
  Tensor lse = Tensor::from_vector<double>({-kInf, -kInf, 0.5}, {1, 1, 3});
  const Tensor out_b = Tensor::from_vector<double>({0, 0, 1, 2, 0, 0}, {1, 3, 1, 2});
  const Tensor lse_b = Tensor::from_vector<double>({-kInf, 1.5, -kInf}, {1, 1, 3});
  ops::attention_merge(out, lse, out_b, lse_b);
  EXPECT_EQ(lse.data<double>()[0], -kInf);
  EXPECT_EQ(lse.data<double>()[1], 1.5);
  EXPECT_EQ(lse.data<double>()[2], 0.5);
  const std::vector<double> want_out = {0, 0, 1, 2, 3, 4};
  for (size_t i = 0; i < want_out.size(); ++i) EXPECT_EQ(out.data<double>()[i], want_out[i]) << i;
}

// ---- misuse --------------------------------------------------------------------------------

using strata::testing::MisuseCase;

Tensor f32(const Shape& shape) {
  return Tensor::zeros(shape, DType::f32);
}

void attend(const Tensor& q, const Tensor& k, const Tensor& v, Tensor out, Tensor lse) {
  ops::attention_forward(q, k, v, {}, out, lse);
}

void attend_back(const Shape& dk_shape, const Shape& lse_shape) {
  Tensor dq = f32({1, 5, 4, 8}), dk = f32(dk_shape), dv = f32({1, 6, 2, 8});
  const Tensor q = f32({1, 5, 4, 8}), kv = f32({1, 6, 2, 8});
  ops::attention_backward(q, q, kv, kv, q, f32(lse_shape), {}, dq, dk, dv);
}

const std::vector<MisuseCase>& misuse_cases() {
  // Never dereferenced: the checks refuse these CUDA tensors before any kernel runs.
  static float fake_device_memory[1];
  static auto on_cuda = [](const Shape& shape) {
    return Tensor::wrap(fake_device_memory, shape, DType::f32, Device::cuda(0));
  };
  static const std::vector<MisuseCase> cases = {
      {"kv_heads_not_dividing",
       [] {
         attend(f32({1, 5, 4, 8}), f32({1, 6, 3, 8}), f32({1, 6, 3, 8}), f32({1, 5, 4, 8}),
                f32({1, 4, 5}));
       },
       {"attention_forward", "n_kv_heads=3", "n_heads=4", "[1, 6, 3, 8]", "[1, 5, 4, 8]"}},
      {"lse_shape",
       [] {
         attend(f32({1, 5, 4, 8}), f32({1, 6, 2, 8}), f32({1, 6, 2, 8}), f32({1, 5, 4, 8}),
                f32({1, 5, 4}));
       },
       {"attention_forward", "'lse'", "[1, 5, 4]", "expected [1, 4, 5]"}},
      {"lse_dtype",
       [] {
         attend(f32({1, 5, 4, 8}), f32({1, 6, 2, 8}), f32({1, 6, 2, 8}), f32({1, 5, 4, 8}),
                Tensor::zeros({1, 4, 5}, DType::f64));
       },
       {"attention_forward", "'lse'", "f64", "expected f32"}},
      {"head_dim_mismatch",
       [] {
         attend(f32({1, 5, 4, 8}), f32({1, 6, 2, 4}), f32({1, 6, 2, 4}), f32({1, 5, 4, 8}),
                f32({1, 4, 5}));
       },
       {"attention_forward", "f32[1, 6, 2, 4]", "f32[1, 5, 4, 8]"}},
      {"v_unlike_k",
       [] {
         attend(f32({1, 5, 4, 8}), f32({1, 6, 2, 8}), f32({1, 7, 2, 8}), f32({1, 5, 4, 8}),
                f32({1, 4, 5}));
       },
       {"attention_forward", "'v'", "[1, 7, 2, 8]", "expected [1, 6, 2, 8]"}},
      {"k_dtype",
       [] {
         attend(f32({1, 5, 4, 8}), Tensor::zeros({1, 6, 2, 8}, DType::f64), f32({1, 6, 2, 8}),
                f32({1, 5, 4, 8}), f32({1, 4, 5}));
       },
       {"attention_forward", "'k'", "f64", "expected f32"}},
      {"q_not_4d",
       [] {
         attend(f32({5, 4, 8}), f32({1, 6, 2, 8}), f32({1, 6, 2, 8}), f32({5, 4, 8}),
                f32({1, 4, 5}));
       },
       {"attention_forward", "'q'", "f32[5, 4, 8]", "4 dimensions"}},
      {"q_strided",
       [] {
         Tensor wide = f32({1, 5, 4, 16});
         attend(wide.slice(3, 0, 8), f32({1, 6, 2, 8}), f32({1, 6, 2, 8}), f32({1, 5, 4, 8}),
                f32({1, 4, 5}));
       },
       {"attention_forward", "'q'", "contiguous"}},
      {"integer_q",
       [] {
         const Tensor q = Tensor::zeros({1, 5, 4, 8}, DType::i32),
                      kv = Tensor::zeros({1, 6, 2, 8}, DType::i32);
         attend(q, kv, kv, Tensor::zeros({1, 5, 4, 8}, DType::i32), f32({1, 4, 5}));
       },
       {"attention_forward", "'q'", "i32[1, 5, 4, 8]", "unsupported dtype"}},
      // A wrapped CUDA pointer has no CudaDevice (so no stream); a build without the backend
      // refuses CUDA tensors outright. Either way the error names the op and the tensor.
      {"cuda_without_device",
       [] {
         attend(on_cuda({1, 5, 4, 8}), on_cuda({1, 6, 2, 8}), on_cuda({1, 6, 2, 8}),
                on_cuda({1, 5, 4, 8}), on_cuda({1, 4, 5}));
       },
       {"attention_forward", "'q'", "cuda:0"}},
      {"mixed_devices",
       [] {
         attend(f32({1, 5, 4, 8}), on_cuda({1, 6, 2, 8}), f32({1, 6, 2, 8}), f32({1, 5, 4, 8}),
                f32({1, 4, 5}));
       },
       {"attention_forward", "'k'", "@cuda:0", "@cpu"}},
      {"backward_dk_shape",
       [] {
         attend_back({1, 6, 4, 8}, {1, 4, 5});
       },
       {"attention_backward", "'dk'", "[1, 6, 4, 8]", "expected [1, 6, 2, 8]"}},
      {"backward_lse_shape",
       [] {
         attend_back({1, 6, 2, 8}, {1, 5, 4});
       },
       {"attention_backward", "'lse'", "[1, 5, 4]", "expected [1, 4, 5]"}},
      {"merge_lse_b_shape",
       [] {
         Tensor out = f32({1, 5, 4, 8}), lse = f32({1, 4, 5});
         ops::attention_merge(out, lse, f32({1, 5, 4, 8}), f32({1, 4, 4}));
       },
       {"attention_merge", "'lse_b'", "[1, 4, 4]", "expected [1, 4, 5]"}},
      {"merge_out_b_shape",
       [] {
         Tensor out = f32({1, 5, 4, 8}), lse = f32({1, 4, 5});
         ops::attention_merge(out, lse, f32({1, 5, 2, 8}), f32({1, 4, 5}));
       },
       {"attention_merge", "'out_b'", "[1, 5, 2, 8]", "expected [1, 5, 4, 8]"}},
  };
  return cases;
}

TEST(AttentionMisuse, ThrowsNamingOpArgumentAndShapes) {
  strata::testing::expect_misuse_errors(misuse_cases());
}

}  // namespace
