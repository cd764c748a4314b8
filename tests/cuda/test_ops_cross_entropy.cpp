// CUDA cross-entropy against the CPU (op_parity.h): the whole-vocabulary forward, one shard's
// statistics with vocab_start > 0, the sharded pipeline (stats of two shards, combine, backward of
// each with the global lse, one in place), the backward out of place and in place, rows that start
// off a 16-byte boundary, and rows of -inf and +inf logits. Vocabularies 1, 7, 129 and 1037
// (vectors and scalar tails), 1, 3 and 17 rows, ignored (negative) targets, i32 and i64 targets.
//
// Tolerances: the statistics and losses are f32 on both backends, computed from the same stored
// logits, so they are held to 1e-5 for every logits dtype (only the order of the f32 sums and the
// exp differ); the gradients are stored in the logits' dtype and get its tolerance.
#include <cmath>
#include <limits>

#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

constexpr double kStatsTolerance = 1e-5;

struct Shape2 {
  int64_t rows, vocab;
};

std::string tag(const Shape2& s, DType d, DType index) {
  return std::to_string(s.rows) + "x" + std::to_string(s.vocab) + "_" + std::string(dtype_name(d)) + "_" +
         std::string(dtype_name(index));
}

Tensor stats_vector(int64_t rows, Allocator& a) { return Tensor::empty({rows}, DType::f32, a); }

std::vector<OpCase> cases() {
  const std::vector<Shape2> shapes = {{1, 1}, {3, 7}, {17, 129}, {3, 1037}, {1, 1037}};
  std::vector<OpCase> out;
  int which = 0;
  for (const Shape2& s : shapes) {
    for (DType d : cuda_dtypes()) {
      // Both index types over the table, alternating.
      const DType index = (which++ % 2 == 0) ? DType::i64 : DType::i32;
      const double grad_tol = dtype_tolerance(d);
      const int64_t rows = s.rows, vocab = s.vocab;
      const std::string t = tag(s, d, index);

      // Targets in [-2, vocab): some rows ignored.
      out.push_back({"forward_" + t,
                     {{"logits", {rows, vocab}, d, -4, 4}, {"targets", {rows}, index, -2, double(vocab)}},
                     [rows](std::vector<Tensor>& in, Allocator& a) {
                       Tensor loss = stats_vector(rows, a), lse = stats_vector(rows, a);
                       ops::cross_entropy_forward(in[0], in[1], loss, lse);
                       return std::vector<Tensor>{loss, lse};
                     },
                     {kStatsTolerance}});

      // A shard starting at 5: targets below it, in it, past it, and ignored.
      out.push_back({"stats_shard_" + t,
                     {{"logits", {rows, vocab}, d, -4, 4}, {"targets", {rows}, index, -1, double(5 + vocab + 3)}},
                     [rows](std::vector<Tensor>& in, Allocator& a) {
                       Tensor max = stats_vector(rows, a), sum_exp = stats_vector(rows, a),
                              target_logit = stats_vector(rows, a);
                       ops::cross_entropy_stats(in[0], in[1], 5, max, sum_exp, target_logit);
                       return std::vector<Tensor>{max, sum_exp, target_logit};
                     },
                     {kStatsTolerance}});

      // Two shards [0, vocab) and [vocab, vocab + 3): stats, combine, backward (the first in place).
      out.push_back({"sharded_" + t,
                     {{"logits_a", {rows, vocab}, d, -4, 4},
                      {"logits_b", {rows, 3}, d, -4, 4},
                      {"targets", {rows}, index, -1, double(vocab + 3)},
                      {"dloss", {rows}, DType::f32, -1, 1}},
                     [rows, vocab](std::vector<Tensor>& in, Allocator& a) {
                       Tensor max = Tensor::empty({2, rows}, DType::f32, a);
                       Tensor sum_exp = Tensor::empty({2, rows}, DType::f32, a);
                       Tensor target_logit = Tensor::empty({2, rows}, DType::f32, a);
                       for (int64_t shard = 0; shard < 2; ++shard) {
                         Tensor m = max.slice(0, shard, shard + 1).view({rows});
                         Tensor se = sum_exp.slice(0, shard, shard + 1).view({rows});
                         Tensor tl = target_logit.slice(0, shard, shard + 1).view({rows});
                         ops::cross_entropy_stats(in[shard], in[2], shard == 0 ? 0 : vocab, m, se, tl);
                       }
                       Tensor loss = stats_vector(rows, a), lse = stats_vector(rows, a);
                       ops::cross_entropy_combine(max, sum_exp, target_logit, in[2], loss, lse);
                       ops::cross_entropy_backward(in[0], in[2], 0, lse, in[3], in[0]);
                       Tensor dlogits_b = Tensor::empty(in[1].shape(), in[1].dtype(), a);
                       ops::cross_entropy_backward(in[1], in[2], vocab, lse, in[3], dlogits_b);
                       return std::vector<Tensor>{loss, lse, in[0], dlogits_b};
                     },
                     {kStatsTolerance, kStatsTolerance, grad_tol, grad_tol}});

      // Backward out of place, then in place over the logits themselves.
      out.push_back({"backward_" + t,
                     {{"logits", {rows, vocab}, d, -4, 4},
                      {"targets", {rows}, index, -2, double(vocab)},
                      {"dloss", {rows}, DType::f32, -1, 1}},
                     [rows](std::vector<Tensor>& in, Allocator& a) {
                       Tensor loss = stats_vector(rows, a), lse = stats_vector(rows, a);
                       ops::cross_entropy_forward(in[0], in[1], loss, lse);
                       Tensor dlogits = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       ops::cross_entropy_backward(in[0], in[1], 0, lse, in[2], dlogits);
                       ops::cross_entropy_backward(in[0], in[1], 0, lse, in[2], in[0]);
                       return std::vector<Tensor>{dlogits, in[0]};
                     },
                     {grad_tol}});

      // The logits start one row into their buffer (off a 16-byte boundary for odd vocabularies),
      // and dlogits does not: the scalar path of the backward, the head of the vector path of the
      // statistics.
      out.push_back({"offset_rows_" + t,
                     {{"logits", {rows + 1, vocab}, d, -4, 4},
                      {"targets", {rows}, index, -2, double(vocab)},
                      {"dloss", {rows}, DType::f32, -1, 1}},
                     [rows](std::vector<Tensor>& in, Allocator& a) {
                       const Tensor logits = in[0].slice(0, 1, rows + 1);
                       Tensor loss = stats_vector(rows, a), lse = stats_vector(rows, a);
                       ops::cross_entropy_forward(logits, in[1], loss, lse);
                       Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), a);
                       ops::cross_entropy_backward(logits, in[1], 0, lse, in[2], dlogits);
                       return std::vector<Tensor>{loss, lse, dlogits};
                     },
                     {kStatsTolerance, kStatsTolerance, grad_tol}});
    }
  }

  // Rows of special values, as the CPU's two passes give them: all -inf (sum_exp and lse NaN), all
  // +inf (NaN), and ordinary rows between them.
  for (DType d : cuda_dtypes())
    out.push_back({"special_values_4x37_" + std::string(dtype_name(d)),
                   {{"logits", {4, 37}, d, -4, 4}, {"targets", {4}, DType::i32, 0, 37}},
                   [](std::vector<Tensor>& in, Allocator& a) {
                     Tensor all_minus = in[0].slice(0, 0, 1), all_plus = in[0].slice(0, 2, 3);
                     ops::fill(all_minus, -std::numeric_limits<double>::infinity());
                     ops::fill(all_plus, std::numeric_limits<double>::infinity());
                     Tensor max = stats_vector(4, a), sum_exp = stats_vector(4, a), target_logit = stats_vector(4, a);
                     ops::cross_entropy_stats(in[0], in[1], 0, max, sum_exp, target_logit);
                     Tensor loss = stats_vector(4, a), lse = stats_vector(4, a);
                     ops::cross_entropy_forward(in[0], in[1], loss, lse);
                     return std::vector<Tensor>{max, sum_exp, target_logit, loss, lse};
                   },
                   {kStatsTolerance}});
  return out;
}

class CrossEntropyParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(CrossEntropyParity, MatchesCpu) { expect_parity(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cuda, CrossEntropyParity, ::testing::ValuesIn(cases()), CaseName());

// A target past the vocabulary cannot throw from a kernel: on CUDA that row's loss is NaN and the
// other rows are untouched; the CPU throws (ops.h).
TEST(CrossEntropyCuda, TargetOutsideVocabularyGivesNanLoss) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  const Tensor logits = random_tensor({3, 7}, DType::f32, "logits", -2, 2);
  const Tensor targets = Tensor::from_vector(std::vector<int64_t>{2, 7, -1}, {3});
  Tensor loss = Tensor::empty({3}, DType::f32), lse = Tensor::empty({3}, DType::f32);
  EXPECT_THROW(ops::cross_entropy_forward(logits, targets, loss, lse), Error);

  CudaDevice device(0);
  const Tensor dev_logits = to_device(logits, device), dev_targets = to_device(targets, device);
  Tensor dev_loss = Tensor::empty({3}, DType::f32, device), dev_lse = Tensor::empty({3}, DType::f32, device);
  ops::cross_entropy_forward(dev_logits, dev_targets, dev_loss, dev_lse);
  const Tensor got = dev_loss.to_cpu();
  EXPECT_TRUE(std::isfinite(got.data<float>()[0]));
  EXPECT_TRUE(std::isnan(got.data<float>()[1]));
  EXPECT_EQ(got.data<float>()[2], 0.0f);
}

// f64 logits have no CUDA kernels: refused by name, before anything runs.
TEST(CrossEntropyCuda, RefusesF64Logits) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  const Tensor logits = Tensor::zeros({2, 5}, DType::f64, device);
  const Tensor targets = Tensor::zeros({2}, DType::i32, device);
  Tensor loss = Tensor::empty({2}, DType::f64, device), lse = Tensor::empty({2}, DType::f64, device);
  expect_error([&] { ops::cross_entropy_forward(logits, targets, loss, lse); },
               {"cross_entropy_forward", "'logits'", "f64", "CUDA"});
}

}  // namespace
}  // namespace strata::testing
