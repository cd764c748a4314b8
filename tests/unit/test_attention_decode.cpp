// attention_decode on the CPU: the new query rows at q_offset.. against the whole cache equal
// attention_forward with causal on and k_offset 0 (bit for bit in one chunk, to rounding when the
// cache is split and the chunks merged by lse), equal a naive softmax in f64, and misuse is refused
// naming the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "unit/op_harness.h"

using namespace strata;
using strata::testing::element;
using strata::testing::max_relative_error;
using strata::testing::random_tensor;

namespace {

struct DecodeCase {
  const char* name;
  int64_t batch, n_q, len, n_heads, n_kv_heads, head_dim, q_offset;
};

std::string case_name(const ::testing::TestParamInfo<DecodeCase>& info) {
  return info.param.name;
}

const DecodeCase kCases[] = {
    {"one_token", 1, 1, 1, 2, 1, 8, 0},
    {"last_of_67_gqa", 2, 1, 67, 4, 2, 16, 66},
    {"four_of_130_mqa", 1, 4, 130, 2, 1, 8, 126},
    // Rows earlier than the cache's end (a draft being verified) see a prefix only.
    {"early_rows", 1, 3, 40, 2, 2, 8, 5},
};

class AttentionDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(AttentionDecode, EqualsCausalForwardAndNaiveSoftmax) {
  const DecodeCase& c = GetParam();
  const Tensor q = random_tensor({c.batch, c.n_q, c.n_heads, c.head_dim}, DType::f32, "q", -2, 2);
  const Tensor k = random_tensor({c.batch, c.len, c.n_kv_heads, c.head_dim}, DType::f32, "k");
  const Tensor v = random_tensor({c.batch, c.len, c.n_kv_heads, c.head_dim}, DType::f32, "v");

  Tensor want = Tensor::empty(q.shape(), DType::f32);
  Tensor lse = Tensor::empty({c.batch, c.n_heads, c.n_q}, DType::f32);
  ops::attention_forward(q, k, v, {true, c.q_offset, 0, 0.0}, want, lse);
  // One chunk (0 or 1) is the forward's very sweep; more are merged by lse, the same up to
  // rounding: a few f32 roundings a merge, so 1e-5 after the 130 merges of 200 chunks (one key
  // each; empty ones past the cache's end never form).
  for (int64_t split : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{200}}) {
    Tensor got = Tensor::empty(q.shape(), DType::f32);
    ops::attention_decode(q, k, v, c.q_offset, got, split);
    EXPECT_LE(max_relative_error(got, want), split <= 1 ? 0.0 : 1e-5) << "split " << split;
  }

  // The definition, in f64: row i sees cache rows 0 .. q_offset + i.
  const int64_t group = c.n_heads / c.n_kv_heads;
  const double scale = 1.0 / std::sqrt(double(c.head_dim));
  Tensor naive = Tensor::zeros(q.shape(), DType::f64);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < c.n_q; ++i)
      for (int64_t h = 0; h < c.n_heads; ++h) {
        const int64_t q_at = ((b * c.n_q + i) * c.n_heads + h) * c.head_dim;
        const int64_t seen = std::min(c.len, c.q_offset + i + 1);
        std::vector<double> s(static_cast<size_t>(seen));
        double top = -INFINITY, total = 0;
        for (int64_t j = 0; j < seen; ++j) {
          const int64_t k_at = ((b * c.len + j) * c.n_kv_heads + h / group) * c.head_dim;
          double dot = 0;
          for (int64_t d = 0; d < c.head_dim; ++d)
            dot += element(q, q_at + d) * element(k, k_at + d);
          s[size_t(j)] = scale * dot;
          top = std::max(top, s[size_t(j)]);
        }
        for (double& x : s) total += (x = std::exp(x - top));
        for (int64_t j = 0; j < seen; ++j) {
          const int64_t v_at = ((b * c.len + j) * c.n_kv_heads + h / group) * c.head_dim;
          for (int64_t d = 0; d < c.head_dim; ++d)
            naive.data<double>()[q_at + d] += s[size_t(j)] / total * element(v, v_at + d);
        }
      }
  EXPECT_LE(max_relative_error(want, naive), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Cases, AttentionDecode, ::testing::ValuesIn(kCases), case_name);

Tensor f32(const Shape& shape) {
  return Tensor::zeros(shape, DType::f32);
}

TEST(AttentionDecodeMisuse, ThrowsNamingTheArgument) {
  const Tensor q = f32({1, 2, 4, 8}), kv = f32({1, 6, 2, 8});
  const std::vector<strata::testing::MisuseCase> cases = {
      {"negative_split",
       [&] {
         Tensor out = f32({1, 2, 4, 8});
         ops::attention_decode(q, kv, kv, 4, out, -1);
       },
       {"attention_decode", "split=-1"}},
      {"negative_offset",
       [&] {
         Tensor out = f32({1, 2, 4, 8});
         ops::attention_decode(q, kv, kv, -2, out);
       },
       {"attention_decode", "q_offset=-2"}},
      {"out_shape",
       [&] {
         Tensor out = f32({1, 2, 2, 8});
         ops::attention_decode(q, kv, kv, 4, out);
       },
       {"attention_decode", "'out'", "[1, 2, 2, 8]", "expected [1, 2, 4, 8]"}},
      {"kv_heads_not_dividing",
       [&] {
         Tensor out = f32({1, 2, 4, 8});
         ops::attention_decode(q, f32({1, 6, 3, 8}), f32({1, 6, 3, 8}), 4, out);
       },
       {"attention_decode", "n_kv_heads=3", "n_heads=4"}},
  };
  strata::testing::expect_misuse_errors(cases);
}

}  // namespace
