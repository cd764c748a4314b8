// Ring attention against one whole-sequence attention. Each case runs on an sp group of the whole
// world (the launched np; sp = 1 at np 1) and on an sp group of one rank (no communication): every
// rank builds the whole sequence's q, k, v and dout from one seed, computes the one-process
// reference with ops::attention_forward/backward (causal, offsets 0), takes its zigzag chunks, runs
// the ring forward and backward on them, and compares out, lse, dq, dk, dv with its chunks of the
// reference. Each rank knows its answer locally.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "collective_checks.h"
#include "comm/process_groups.h"
#include "core/random.h"
#include "kernels/ops.h"
#include "parallel/ring_attention.h"

using namespace strata;
using strata::testing::error_of;
using strata::testing::expect_contains;
using strata::testing::world;

namespace {

struct RingCase {
  const char* name;
  int64_t batch, chunk, n_heads, n_kv_heads, head_dim;  // seq = 2 sp chunk
  DType dtype;
  // max |ring - reference| / max |reference|, per tensor. f64: the ring only reorders sums (the
  // merges of partials, dk/dv added rank by rank), which costs ~1e-15; 1e-12 leaves a wide margin
  // and still catches any wrong block, offset or missing contribution (those are O(1e-2) or more).
  // f32: the same reordering at f32's 6e-8 unit roundoff over a few dozen terms (observed ~1e-6 at
  // most); 1e-5.
  double tolerance;
  double scale = 0.0;  // 0: 1 / sqrt(head_dim)
};

std::string case_name(const ::testing::TestParamInfo<RingCase>& info) {
  return info.param.name;
}

const RingCase kCases[] = {
    {"b1_c3_mha_f64", 1, 3, 4, 4, 8, DType::f64, 1e-12},
    {"b2_c3_gqa_f64", 2, 3, 4, 2, 8, DType::f64, 1e-12},
    {"b2_c3_mqa_f64", 2, 3, 4, 1, 8, DType::f64, 1e-12},
    {"b1_c8_gqa_f64", 1, 8, 4, 2, 8, DType::f64, 1e-12},
    {"b2_c8_mha_f64", 2, 8, 4, 4, 8, DType::f64, 1e-12},
    {"b2_c8_mqa_f64_scale", 2, 8, 4, 1, 8, DType::f64, 1e-12, 0.6},
    {"b2_c8_gqa_f32", 2, 8, 4, 2, 8, DType::f32, 1e-5},
};

// max |got - want| / max |want| over all elements, in f64.
double relative_error(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  Tensor g = Tensor::empty(got.shape(), DType::f64), w = Tensor::empty(want.shape(), DType::f64);
  ops::cast(got, g);
  ops::cast(want, w);
  double diff = 0, top = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    diff = std::max(diff, std::abs(g.data<double>()[i] - w.data<double>()[i]));
    top = std::max(top, std::abs(w.data<double>()[i]));
  }
  return top > 0 ? diff / top : diff;
}

Tensor normal(const Shape& shape, DType dtype, uint64_t stream) {
  Tensor t = Tensor::empty(shape, dtype);
  fill_normal(t, /*seed=*/20240607, stream, 0.0, 1.0);
  return t;
}

// One case on `group` (its size is sp).
void check_ring(Communicator& group, const RingCase& c) {
  const int sp = group.size(), rank = group.rank();
  const int64_t seq = 2 * sp * c.chunk;
  const Shape q_shape{c.batch, seq, c.n_heads, c.head_dim};
  const Shape kv_shape{c.batch, seq, c.n_kv_heads, c.head_dim};
  const Shape lse_shape{c.batch, c.n_heads, seq};
  const DType stats = ops::stats_dtype(c.dtype);

  // The whole sequence, the same on every rank, and the one-process reference.
  const Tensor q = normal(q_shape, c.dtype, 0), k = normal(kv_shape, c.dtype, 1);
  const Tensor v = normal(kv_shape, c.dtype, 2), dout = normal(q_shape, c.dtype, 3);
  const ops::AttentionArgs args{true, 0, 0, c.scale};
  Tensor out = Tensor::empty(q_shape, c.dtype), lse = Tensor::empty(lse_shape, stats);
  ops::attention_forward(q, k, v, args, out, lse);
  Tensor dq = Tensor::empty(q_shape, c.dtype);
  Tensor dk = Tensor::empty(kv_shape, c.dtype), dv = Tensor::empty(kv_shape, c.dtype);
  ops::attention_backward(dout, q, k, v, out, lse, args, dq, dk, dv);

  // This rank's chunks, through the ring.
  const Tensor q_local = zigzag_local(q, rank, sp), k_local = zigzag_local(k, rank, sp);
  const Tensor v_local = zigzag_local(v, rank, sp), dout_local = zigzag_local(dout, rank, sp);
  Tensor ring_out = Tensor::empty(q_local.shape(), c.dtype);
  Tensor ring_lse = Tensor::empty({c.batch, c.n_heads, 2 * c.chunk}, stats);
  ring_attention_forward(group, q_local, k_local, v_local, c.scale, ring_out, ring_lse);
  Tensor ring_dq = Tensor::empty(q_local.shape(), c.dtype);
  Tensor ring_dk = Tensor::empty(k_local.shape(), c.dtype);
  Tensor ring_dv = Tensor::empty(k_local.shape(), c.dtype);
  ring_attention_backward(group, dout_local, q_local, k_local, v_local, ring_out, ring_lse, c.scale,
                          ring_dq, ring_dk, ring_dv);

  const std::string where = "sp " + std::to_string(sp) + " rank " + std::to_string(rank);
  EXPECT_LE(relative_error(ring_out, zigzag_local(out, rank, sp)), c.tolerance) << "out, " << where;
  EXPECT_LE(relative_error(ring_lse, zigzag_local(lse, rank, sp, 2)), c.tolerance)
      << "lse, " << where;
  EXPECT_LE(relative_error(ring_dq, zigzag_local(dq, rank, sp)), c.tolerance) << "dq, " << where;
  EXPECT_LE(relative_error(ring_dk, zigzag_local(dk, rank, sp)), c.tolerance) << "dk, " << where;
  EXPECT_LE(relative_error(ring_dv, zigzag_local(dv, rank, sp)), c.tolerance) << "dv, " << where;
}

class RingAttentionParity : public ::testing::TestWithParam<RingCase> {};

}  // namespace

TEST_P(RingAttentionParity, MatchesWholeSequenceAttention) {
  const int p = world().size(), rank = world().rank();
  {
    SCOPED_TRACE("sp = world");
    ProcessGrid grid(p, rank, GridSizes{.sp = p});
    ProcessGroups groups(grid, Backend::mpi);
    ASSERT_EQ(groups.sp().size(), p);
    check_ring(groups.sp(), GetParam());
  }
  if (p > 1) {
    SCOPED_TRACE("sp = 1 (every rank alone)");
    ProcessGrid grid(p, rank, GridSizes{.dp = p});
    ProcessGroups groups(grid, Backend::mpi);
    ASSERT_EQ(groups.sp().size(), 1);
    check_ring(groups.sp(), GetParam());
  }
}
INSTANTIATE_TEST_SUITE_P(Cases, RingAttentionParity, ::testing::ValuesIn(kCases), case_name);

// Local row i of rank r's chunk h is global position zigzag_offsets(r)[h] + i, along dim 1 of
// activations and dim 2 of lse; the ranks' chunks together cover every position once.
TEST(RingAttentionZigzag, ChunksHoldTheirPositions) {
  for (int sp : {1, 2, 3, 4}) {
    const int64_t c = 2, seq = 2 * sp * c;
    Tensor act = Tensor::empty({2, seq, 3}, DType::f64);    // [batch, seq, d]: value = position
    Tensor stats = Tensor::empty({2, 3, seq}, DType::f64);  // [batch, heads, seq]
    for (int64_t i = 0; i < act.numel(); ++i)
      act.data<double>()[i] = static_cast<double>(i / 3 % seq);
    for (int64_t i = 0; i < stats.numel(); ++i)
      stats.data<double>()[i] = static_cast<double>(i % seq);
    std::vector<int> seen(static_cast<size_t>(seq), 0);
    for (int r = 0; r < sp; ++r) {
      const std::array<int64_t, 2> pos = zigzag_offsets(r, sp, c);
      EXPECT_EQ(pos[0], r * c);
      EXPECT_EQ(pos[1], (2 * sp - 1 - r) * c);
      const Tensor a = zigzag_local(act, r, sp), s = zigzag_local(stats, r, sp, 2);
      ASSERT_EQ(a.shape(), (Shape{2, 2 * c, 3}));
      ASSERT_EQ(s.shape(), (Shape{2, 3, 2 * c}));
      for (int64_t i = 0; i < a.numel(); ++i) {
        const int64_t row = i / 3 % (2 * c);
        EXPECT_EQ(a.data<double>()[i], static_cast<double>(pos[row / c] + row % c));
      }
      for (int64_t i = 0; i < s.numel(); ++i) {
        const int64_t row = i % (2 * c);
        EXPECT_EQ(s.data<double>()[i], static_cast<double>(pos[row / c] + row % c));
      }
      for (int64_t row = 0; row < 2 * c; ++row) ++seen[static_cast<size_t>(pos[row / c] + row % c)];
    }
    EXPECT_EQ(seen, std::vector<int>(static_cast<size_t>(seq), 1)) << "sp " << sp;
  }
}

TEST(RingAttentionZigzag, RefusesSeqLenNotMultipleOfTwiceSp) {
  EXPECT_EQ(zigzag_chunk_len(96, 4), 12);
  expect_contains(error_of([] { zigzag_chunk_len(100, 4); }),
                  "train.seq_len = 100 is not a multiple of 2 x parallel.sp = 8 (ring attention "
                  "splits each sequence into 2 x sp chunks)");
  expect_contains(error_of([] { zigzag_chunk_len(7, 1); }),
                  "train.seq_len = 7 is not a multiple of 2 x parallel.sp = 2");
  const Tensor odd = Tensor::zeros({1, 10, 2, 4}, DType::f64);
  expect_contains(error_of([&] { zigzag_local(odd, 0, 4); }),
                  "train.seq_len = 10 is not a multiple of 2 x parallel.sp = 8");
}

TEST(RingAttentionZigzag, RefusesAnOddLocalLength) {
  Communicator& group = world();
  const Tensor q = Tensor::zeros({1, 3, 2, 4}, DType::f64),
               k = Tensor::zeros({1, 3, 1, 4}, DType::f64);
  Tensor out = Tensor::zeros({1, 3, 2, 4}, DType::f64), lse = Tensor::zeros({1, 2, 3}, DType::f64);
  expect_contains(error_of([&] { ring_attention_forward(group, q, k, k, 0.0, out, lse); }),
                  "must hold this rank's two zigzag chunks: an even, positive number of rows");
}
