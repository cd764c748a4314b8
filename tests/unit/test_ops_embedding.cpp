// Vocab-sharded embedding: lookups against a plain loop (ids outside the shard give zero rows),
// backward as accumulation with repeated ids, and against finite differences.
#include <gtest/gtest.h>
#include <omp.h>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

struct EmbeddingCase {
  int64_t n;  // tokens
  int64_t vocab_shard;
  int64_t d;
  int64_t vocab_start;
  DType id_dtype;
  DType dtype;
};

std::string case_name(const EmbeddingCase& c) {
  return name_of("n", c.n, "_vocab", c.vocab_shard, "_from", c.vocab_start, "_d", c.d, "_",
                 dtype_name(c.id_dtype), "_", dtype_name(c.dtype));
}
void PrintTo(const EmbeddingCase& c, std::ostream* out) {
  *out << case_name(c);
}

const EmbeddingCase kCases[] = {
    {1, 1, 1, 0, DType::i32, DType::f64},     {17, 5, 3, 0, DType::i64, DType::f64},
    {33, 7, 17, 10, DType::i32, DType::f32},  {67, 13, 70, 26, DType::i64, DType::f32},
    {40, 67, 33, 67, DType::i32, DType::f64}, {5, 3, 129, 3, DType::i64, DType::f32},
    {17, 5, 8, 2, DType::i64, DType::bf16},   {33, 7, 17, 0, DType::i32, DType::f16},
};

// Ids spread a little beyond this shard on both sides (other shards' tokens), with repeats.
Tensor make_ids(const EmbeddingCase& c) {
  return random_tensor({c.n}, c.id_dtype, "ids", static_cast<double>(c.vocab_start - 3),
                       static_cast<double>(c.vocab_start + c.vocab_shard + 3));
}

// The shard row of token i, or -1 when another shard owns it.
int64_t shard_row(const EmbeddingCase& c, const std::vector<double>& ids, int64_t i) {
  const int64_t row = static_cast<int64_t>(ids[static_cast<size_t>(i)]) - c.vocab_start;
  return row >= 0 && row < c.vocab_shard ? row : -1;
}

Tensor forward(const EmbeddingCase& c, const Tensor& ids, const Tensor& table) {
  Tensor out = Tensor::empty({c.n, c.d}, table.dtype());
  ops::embedding_forward(ids, table, c.vocab_start, out);
  return out;
}

class Embedding : public ::testing::TestWithParam<EmbeddingCase> {};

TEST_P(Embedding, ForwardMatchesReference) {
  const EmbeddingCase& c = GetParam();
  const Tensor ids = make_ids(c);
  const Tensor table = random_tensor({c.vocab_shard, c.d}, c.dtype, "table");
  const std::vector<double> id = values(ids), t = values(table);
  std::vector<double> want(static_cast<size_t>(c.n * c.d), 0.0);
  for (int64_t i = 0; i < c.n; ++i)
    if (const int64_t row = shard_row(c, id, i); row >= 0)
      for (int64_t j = 0; j < c.d; ++j)
        want[static_cast<size_t>(i * c.d + j)] = t[static_cast<size_t>(row * c.d + j)];
  EXPECT_EQ(max_relative_error(forward(c, ids, table), Tensor::from_vector(want, {c.n, c.d})), 0.0);
}

TEST_P(Embedding, BackwardAccumulatesRows) {
  const EmbeddingCase& c = GetParam();
  const Tensor ids = make_ids(c);
  const Tensor dout = random_tensor({c.n, c.d}, c.dtype, "dout");
  const std::vector<double> id = values(ids), g = values(dout);
  std::vector<double> want(static_cast<size_t>(c.vocab_shard * c.d), 0.0);
  for (int64_t i = 0; i < c.n; ++i)
    if (const int64_t row = shard_row(c, id, i); row >= 0)
      for (int64_t j = 0; j < c.d; ++j)
        want[static_cast<size_t>(row * c.d + j)] += g[static_cast<size_t>(i * c.d + j)];
  const Tensor added = accumulated({c.vocab_shard, c.d}, c.dtype, [&](Tensor& dtable) {
    ops::embedding_backward(dout, ids, c.vocab_start, dtable);
  });
  EXPECT_LE(max_relative_error(added, Tensor::from_vector(want, {c.vocab_shard, c.d})),
            tolerance(c.dtype));
}

TEST_P(Embedding, BackwardMatchesFiniteDifferences) {
  const EmbeddingCase& c = GetParam();
  const Tensor ids = make_ids(c);
  GradCheck op;
  op.inputs = {{"table", random_tensor({c.vocab_shard, c.d}, DType::f64, "table")}};
  op.forward = [&](const std::vector<Tensor>& t) { return forward(c, ids, t[0]); };
  op.backward = [&](const std::vector<Tensor>& t, const Tensor& dout) {
    return std::vector<Tensor>{accumulated(t[0].shape(), t[0].dtype(), [&](Tensor& dtable) {
      ops::embedding_backward(dout, ids, c.vocab_start, dtable);
    })};
  };
  expect_gradients(op, c.dtype);
}

// Repeated ids add in token order whatever the thread count (threads split the columns).
TEST(EmbeddingOps, BackwardDoesNotDependOnThreadCount) {
  const EmbeddingCase c{2000, 11, 300, 0, DType::i32, DType::f32};
  const Tensor ids = make_ids(c), dout = random_tensor({c.n, c.d}, c.dtype, "dout");
  auto gradient = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor dtable = Tensor::zeros({c.vocab_shard, c.d}, c.dtype);
    ops::embedding_backward(dout, ids, c.vocab_start, dtable);
    return dtable;
  };
  const int saved = omp_get_max_threads();
  const Tensor one = gradient(1), three = gradient(3);
  omp_set_num_threads(saved);
  EXPECT_EQ(max_relative_error(three, one), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Ops, Embedding, ::testing::ValuesIn(kCases), CaseName());

}  // namespace
}  // namespace strata::testing
