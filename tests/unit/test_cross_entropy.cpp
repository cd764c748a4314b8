// Cross-entropy: the forward against a naive log-softmax, the backward against central finite
// differences, vocab-sharded statistics combined against the unsharded op, ignored targets, and
// misuse. Each test is fed by a table; adding a case is one line.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "unit/op_harness.h"

using namespace strata;
using strata::testing::element;
using strata::testing::max_relative_error;
using strata::testing::random_tensor;

namespace {

struct CrossEntropyCase {
  const char* name;
  int64_t rows, vocab;
  double logit_range;    // logits uniform in [-logit_range, logit_range]
  int64_t ignore_every;  // every ignore_every-th row (r % n == n - 1) gets target -100; 0: none
  std::vector<std::vector<int64_t>> shardings;  // vocab shard sizes, each list summing to vocab
};

std::string case_name(const ::testing::TestParamInfo<CrossEntropyCase>& info) {
  return info.param.name;
}

bool ignored(const CrossEntropyCase& c, int64_t row) {
  return c.ignore_every > 0 && row % c.ignore_every == c.ignore_every - 1;
}

Tensor make_logits(const CrossEntropyCase& c, DType dtype) {
  return random_tensor({c.rows, c.vocab}, dtype, "logits", -c.logit_range, c.logit_range);
}

// Targets uniform over the vocabulary, -100 (PyTorch's ignore_index) on the ignored rows.
Tensor make_targets(const CrossEntropyCase& c, DType index_dtype) {
  const Tensor u = random_tensor({c.rows}, DType::f64, "targets", 0.0, 1.0);
  Tensor targets = Tensor::empty({c.rows}, index_dtype);
  for (int64_t r = 0; r < c.rows; ++r) {
    const int64_t t =
        ignored(c, r) ? -100 : std::min(c.vocab - 1, int64_t(u.data<double>()[r] * c.vocab));
    if (index_dtype == DType::i32)
      targets.data<int32_t>()[r] = static_cast<int32_t>(t);
    else
      targets.data<int64_t>()[r] = t;
  }
  return targets;
}

int64_t target_at(const Tensor& targets, int64_t r) {
  return targets.dtype() == DType::i32 ? targets.data<int32_t>()[r] : targets.data<int64_t>()[r];
}

// The definition in f64: lse = log sum_j exp(x_j) (shifted by the max), loss = lse - x_target.
void naive_cross_entropy(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor& lse) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  loss = Tensor::empty({rows}, DType::f64);
  lse = Tensor::empty({rows}, DType::f64);
  for (int64_t r = 0; r < rows; ++r) {
    double top = -INFINITY, total = 0;
    for (int64_t j = 0; j < vocab; ++j) top = std::max(top, element(logits, r * vocab + j));
    for (int64_t j = 0; j < vocab; ++j) total += std::exp(element(logits, r * vocab + j) - top);
    const int64_t t = target_at(targets, r);
    lse.data<double>()[r] = top + std::log(total);
    loss.data<double>()[r] = t < 0 ? 0.0 : lse.data<double>()[r] - element(logits, r * vocab + t);
  }
}

// loss, lse and the other statistics, in stats type `stats` (f64 or f32, whatever the logits'
// dtype: 16-bit logits are widened and computed in f32). f64: only summation order differs (a few
// ulps). f32: rounding of the max-shifted sum and its log; one ulp of an lse of ~100 (the
// large_logits case) is 7.6e-6, which moves every probability exp(x - lse) by that relative
// amount, so 2e-5 (observed <= 1.1e-6). A wrong target, shift or shard offset errs by O(0.01..1).
double stats_tolerance(DType stats) {
  return stats == DType::f64 ? 1e-12 : 2e-5;
}

// dlogits in the logits' dtype: the statistics' error, or one rounding of a 16-bit format
// (op_harness's tolerance(dtype)), whichever is larger.
double dlogits_tolerance(DType dtype) {
  return std::max(stats_tolerance(ops::stats_dtype(dtype)), strata::testing::tolerance(dtype));
}

class CrossEntropy : public ::testing::TestWithParam<CrossEntropyCase> {};

TEST_P(CrossEntropy, ForwardMatchesNaiveLogSoftmax) {
  const CrossEntropyCase& c = GetParam();
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16})
    for (DType index : {DType::i32, DType::i64}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " targets " + std::string(dtype_name(index)));
      const Tensor logits = make_logits(c, dtype), targets = make_targets(c, index);
      Tensor want_loss, want_lse;
      naive_cross_entropy(logits, targets, want_loss, want_lse);
      const DType stats = ops::stats_dtype(dtype);
      Tensor loss = Tensor::empty({c.rows}, stats), lse = Tensor::empty({c.rows}, stats);
      ops::cross_entropy_forward(logits, targets, loss, lse);
      EXPECT_LE(max_relative_error(loss, want_loss), stats_tolerance(stats));
      EXPECT_LE(max_relative_error(lse, want_lse), stats_tolerance(stats));
      for (int64_t r = 0; r < c.rows; ++r)
        if (ignored(c, r)) {
          EXPECT_EQ(element(loss, r), 0.0) << "ignored row " << r;
        }
    }
}

// L = sum_r w_r loss_r, so dloss = w; dlogits against central differences of L (op_testing.h:
// error ~1e-10 even for logits of +-100, where loss ~ 200 costs eps * 200 / h ~ 4e-9).
TEST_P(CrossEntropy, BackwardMatchesFiniteDifferences) {
  const CrossEntropyCase& c = GetParam();
  Tensor logits = make_logits(c, DType::f64);
  const Tensor targets = make_targets(c, DType::i64);
  const Tensor w = random_tensor({c.rows}, DType::f64, "w");
  Tensor loss = Tensor::empty({c.rows}, DType::f64), lse = Tensor::empty({c.rows}, DType::f64);
  auto objective = [&] {
    ops::cross_entropy_forward(logits, targets, loss, lse);
    return strata::testing::dot(loss, w);
  };
  const Tensor want = strata::testing::numerical_gradient(objective, logits);
  objective();  // lse at the unperturbed logits
  Tensor dlogits = Tensor::empty(logits.shape(), DType::f64);
  ops::cross_entropy_backward(logits, targets, 0, lse, w, dlogits);
  EXPECT_LE(max_relative_error(dlogits, want), 1e-6);
  for (int64_t r = 0; r < c.rows; ++r) {
    if (!ignored(c, r)) continue;
    for (int64_t j = 0; j < c.vocab; ++j)
      EXPECT_EQ(dlogits.data<double>()[r * c.vocab + j], 0.0) << "ignored row " << r;
  }
}

// The f32, bf16 and f16 backward (out of finite differences' reach) against the f64 one on the
// same rounded logits: the gradient is computed in f32 and rounded once (dlogits_tolerance).
TEST_P(CrossEntropy, BackwardLowPrecisionMatchesF64) {
  using strata::testing::converted;
  const CrossEntropyCase& c = GetParam();
  const Tensor targets = make_targets(c, DType::i64);
  Tensor want;
  for (DType dtype : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const DType stats = ops::stats_dtype(dtype);
    // Every run sees the same bf16-rounded logits: exact in f32 and f64, and in f16 to within its
    // subnormal spacing (6e-8) near zero, far below the tolerance.
    const Tensor logits = converted(make_logits(c, DType::bf16), dtype);
    const Tensor dloss = converted(random_tensor({c.rows}, DType::f32, "dloss"), stats);
    Tensor loss = Tensor::empty({c.rows}, stats), lse = Tensor::empty({c.rows}, stats);
    ops::cross_entropy_forward(logits, targets, loss, lse);
    Tensor dlogits = Tensor::empty(logits.shape(), dtype);
    ops::cross_entropy_backward(logits, targets, 0, lse, dloss, dlogits);
    if (dtype == DType::f64)
      want = dlogits;
    else
      EXPECT_LE(max_relative_error(dlogits, want), dlogits_tolerance(dtype));
  }
}

// The model writes dlogits over the logits (ops.h allows it): the result is bitwise the
// out-of-place one, in every dtype.
TEST_P(CrossEntropy, BackwardInPlaceEqualsOutOfPlace) {
  const CrossEntropyCase& c = GetParam();
  const Tensor targets = make_targets(c, DType::i64);
  for (DType dtype : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const DType stats = ops::stats_dtype(dtype);
    Tensor logits = strata::testing::converted(make_logits(c, DType::f64), dtype);
    const Tensor dloss = strata::testing::converted(random_tensor({c.rows}, DType::f32, "dloss"), stats);
    Tensor loss = Tensor::empty({c.rows}, stats), lse = Tensor::empty({c.rows}, stats);
    ops::cross_entropy_forward(logits, targets, loss, lse);
    Tensor apart = Tensor::empty(logits.shape(), dtype);
    ops::cross_entropy_backward(logits, targets, 0, lse, dloss, apart);
    ops::cross_entropy_backward(logits, targets, 0, lse, dloss, logits);  // in place
    EXPECT_EQ(max_relative_error(logits, apart), 0.0);
  }
}

// Vocab-parallel: each shard's statistics land in row s of stacked [shards, rows] buffers (as an
// all-gather would leave them), combine gives the unsharded loss and lse, and each shard's
// backward with the global lse is its column slice of the unsharded dlogits.
TEST_P(CrossEntropy, ShardedEqualsUnsharded) {
  const CrossEntropyCase& c = GetParam();
  for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    const DType stats = ops::stats_dtype(dtype);
    const Tensor logits = make_logits(c, dtype), targets = make_targets(c, DType::i32);
    const Tensor dloss = random_tensor({c.rows}, stats, "dloss");
    Tensor loss = Tensor::empty({c.rows}, stats), lse = Tensor::empty({c.rows}, stats);
    ops::cross_entropy_forward(logits, targets, loss, lse);
    Tensor dlogits = Tensor::empty(logits.shape(), dtype);
    ops::cross_entropy_backward(logits, targets, 0, lse, dloss, dlogits);

    for (const std::vector<int64_t>& sizes : c.shardings) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + ", " + std::to_string(sizes.size()) +
                   " shards");
      const int64_t shards = static_cast<int64_t>(sizes.size());
      Tensor max = Tensor::empty({shards, c.rows}, stats),
             sum_exp = Tensor::empty({shards, c.rows}, stats);
      Tensor target_logit = Tensor::empty({shards, c.rows}, stats);
      std::vector<Tensor> shard_logits;
      std::vector<int64_t> starts;
      for (int64_t s = 0, start = 0; s < shards; start += sizes[size_t(s)], ++s) {
        starts.push_back(start);
        shard_logits.push_back(logits.slice(1, start, start + sizes[size_t(s)]).contiguous());
        Tensor max_s = max.slice(0, s, s + 1).view({c.rows});
        Tensor sum_exp_s = sum_exp.slice(0, s, s + 1).view({c.rows});
        Tensor target_logit_s = target_logit.slice(0, s, s + 1).view({c.rows});
        ops::cross_entropy_stats(shard_logits.back(), targets, start, max_s, sum_exp_s,
                                 target_logit_s);
      }
      Tensor sharded_loss = Tensor::empty({c.rows}, stats),
             sharded_lse = Tensor::empty({c.rows}, stats);
      ops::cross_entropy_combine(max, sum_exp, target_logit, targets, sharded_loss, sharded_lse);
      EXPECT_LE(max_relative_error(sharded_loss, loss), stats_tolerance(stats));
      EXPECT_LE(max_relative_error(sharded_lse, lse), stats_tolerance(stats));

      for (int64_t s = 0; s < shards; ++s) {
        const int64_t start = starts[size_t(s)], end = start + sizes[size_t(s)];
        Tensor shard_dlogits = Tensor::empty(shard_logits[size_t(s)].shape(), dtype);
        ops::cross_entropy_backward(shard_logits[size_t(s)], targets, start, sharded_lse, dloss,
                                    shard_dlogits);
        EXPECT_LE(max_relative_error(shard_dlogits, dlogits.slice(1, start, end).contiguous()),
                  dlogits_tolerance(dtype))
            << "shard " << s;
      }
    }
  }
}

// name, rows, vocab, logit_range, ignore_every, {shard sizes...}
const CrossEntropyCase kCases[] = {
    {"small", 6, 11, 1.0, 0, {{6, 5}, {3, 3, 3, 2}}},
    {"ignored_targets", 8, 13, 2.0, 3, {{7, 6}, {1, 5, 4, 3}}},
    {"all_ignored", 3, 7, 1.0, 1, {{4, 3}, {2, 2, 2, 1}}},
    {"large_logits", 4, 50, 100.0, 0, {{25, 25}, {10, 20, 5, 15}}},
    {"one_row_wide_vocab", 1, 500, 5.0, 0, {{250, 250}, {300, 100, 99, 1}}},
};
INSTANTIATE_TEST_SUITE_P(Cases, CrossEntropy, ::testing::ValuesIn(kCases), case_name);

// ---- misuse --------------------------------------------------------------------------------

using strata::testing::MisuseCase;

Tensor f32(const Shape& shape) {
  return Tensor::zeros(shape, DType::f32);
}
Tensor i64(const Shape& shape) {
  return Tensor::zeros(shape, DType::i64);
}

void stats(const Tensor& logits, const Tensor& targets, Tensor max, const Shape& sum_exp_shape) {
  Tensor sum_exp = f32(sum_exp_shape), target_logit = f32({4});
  ops::cross_entropy_stats(logits, targets, 0, max, sum_exp, target_logit);
}

void combine(const Shape& sum_exp_shape, const Shape& loss_shape) {
  Tensor loss = f32(loss_shape), lse = f32({4});
  ops::cross_entropy_combine(f32({2, 4}), f32(sum_exp_shape), f32({2, 4}), i64({4}), loss, lse);
}

void forward(const Tensor& logits, const Tensor& targets, Tensor lse) {
  Tensor loss = f32({logits.size(0)});
  ops::cross_entropy_forward(logits, targets, loss, lse);
}

void backward(const Shape& dloss_shape, const Shape& dlogits_shape) {
  Tensor dlogits = f32(dlogits_shape);
  ops::cross_entropy_backward(f32({4, 11}), i64({4}), 0, f32({4}), f32(dloss_shape), dlogits);
}

const std::vector<MisuseCase>& misuse_cases() {
  static float fake_device_memory[1];  // never dereferenced: CUDA is refused before any kernel
  static const std::vector<MisuseCase> cases = {
      {"stats_max_shape",
       [] {
         stats(f32({4, 11}), i64({4}), f32({5}), {4});
       },
       {"cross_entropy_stats", "'max'", "[5]", "expected [4]"}},
      {"stats_targets_shape",
       [] {
         stats(f32({4, 11}), i64({3}), f32({4}), {4});
       },
       {"cross_entropy_stats", "'targets'", "[3]", "expected [4]"}},
      {"stats_targets_dtype",
       [] {
         stats(f32({4, 11}), f32({4}), f32({4}), {4});
       },
       {"cross_entropy_stats", "'targets'", "f32", "i32, i64"}},
      {"stats_logits_3d",
       [] {
         stats(f32({4, 11, 1}), i64({4}), f32({4}), {4});
       },
       {"cross_entropy_stats", "'logits'", "f32[4, 11, 1]", "2 dimensions"}},
      {"combine_sum_exp_shape",
       [] {
         combine({4, 2}, {4});
       },
       {"cross_entropy_combine", "'sum_exp'", "[4, 2]", "expected [2, 4]"}},
      {"combine_loss_shape",
       [] {
         combine({2, 4}, {2});
       },
       {"cross_entropy_combine", "'loss'", "[2]", "expected [4]"}},
      {"forward_target_outside_vocab",
       [] {
         forward(f32({4, 11}), Tensor::from_vector<int64_t>({0, 3, 11, -1}, {4}), f32({4}));
       },
       {"cross_entropy_forward", "targets[2]=11", "[0, 11)", "f32[4, 11]"}},
      {"forward_lse_dtype",
       [] {
         forward(f32({4, 11}), i64({4}), Tensor::zeros({4}, DType::f64));
       },
       {"cross_entropy_forward", "'lse'", "f64", "expected f32"}},
      {"forward_no_vocab",
       [] {
         forward(f32({4, 0}), i64({4}), f32({4}));
       },
       {"cross_entropy_forward", "f32[4, 0]"}},
      {"forward_on_cuda",
       [] {
         auto cuda = [](const Shape& s, DType d) {
           return Tensor::wrap(fake_device_memory, s, d, Device::cuda(0));
         };
         Tensor loss = cuda({4}, DType::f32), lse = cuda({4}, DType::f32);
         ops::cross_entropy_forward(cuda({4, 11}, DType::f32), cuda({4}, DType::i64), loss, lse);
       },
       // A wrapped pointer has no CudaDevice (no stream), or the build has no CUDA backend.
       {"cross_entropy_forward", "'logits'", "cuda:0"}},
      {"backward_dloss_shape",
       [] {
         backward({1}, {4, 11});
       },
       {"cross_entropy_backward", "'dloss'", "[1]", "expected [4]"}},
      {"backward_dlogits_shape",
       [] {
         backward({4}, {4, 10});
       },
       {"cross_entropy_backward", "'dlogits'", "[4, 10]", "expected [4, 11]"}},
  };
  return cases;
}

TEST(CrossEntropyMisuse, ThrowsNamingOpArgumentAndShapes) {
  strata::testing::expect_misuse_errors(misuse_cases());
}

}  // namespace
