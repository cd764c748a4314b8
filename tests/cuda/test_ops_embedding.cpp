// CUDA embedding against the CPU (op_parity.h): the forward over vocabulary shards (ids below,
// inside and past the shard, vocab_start 0 and 10), widths that take the vector path and widths
// that do not; the backward accumulating into a nonzero dtable with ids repeated many times (2500
// ids over 3 rows: the device sort spans several tiles), ids outside the shard, 1 and 3 columns.
//
// Tolerances: the forward copies, so it is exact; the backward adds in the CPU's order (position
// order per row) with the CPU's rounding after each addition, so it is exact too, in every dtype.
#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

struct EmbeddingShape {
  int64_t n, vocab_shard, d, vocab_start;
  // Ids are drawn from [vocab_start - 3, vocab_start + id_span): a small span repeats ids often.
  int64_t id_span;
};

std::string tag(const EmbeddingShape& s, DType d, DType index) {
  return std::to_string(s.n) + "_" + std::to_string(s.vocab_shard) + "x" + std::to_string(s.d) + "_start" +
         std::to_string(s.vocab_start) + "_" + std::string(dtype_name(d)) + "_" + std::string(dtype_name(index));
}

std::vector<OpCase> cases() {
  const std::vector<EmbeddingShape> shapes = {
      {1, 1, 1, 0, 1},       {3, 7, 5, 0, 10},      {17, 129, 8, 10, 132},  {33, 50, 64, 10, 53},
      {5, 1000, 37, 0, 1003}, {64, 5, 3, 10, 3},    {2500, 3, 3, 0, 3},     {1000, 20, 16, 10, 24},
  };
  std::vector<OpCase> out;
  int which = 0;
  for (const EmbeddingShape& s : shapes) {
    for (DType d : cuda_dtypes()) {
      const DType index = (which++ % 2 == 0) ? DType::i64 : DType::i32;
      const double low = static_cast<double>(s.vocab_start - 3), high = static_cast<double>(s.vocab_start + s.id_span);
      const int64_t start = s.vocab_start;
      const std::string t = tag(s, d, index);
      out.push_back({"forward_" + t,
                     {{"ids", {s.n}, index, low, high}, {"table", {s.vocab_shard, s.d}, d, -2, 2}},
                     [start](std::vector<Tensor>& in, Allocator& a) {
                       Tensor y = Tensor::empty({in[0].size(0), in[1].size(1)}, in[1].dtype(), a);
                       ops::embedding_forward(in[0], in[1], start, y);
                       return std::vector<Tensor>{y};
                     },
                     {0.0}});
      out.push_back({"backward_" + t,
                     {{"dout", {s.n, s.d}, d, -1, 1},
                      {"ids", {s.n}, index, low, high},
                      {"dtable", {s.vocab_shard, s.d}, d, -1, 1}},
                     [start](std::vector<Tensor>& in, Allocator&) {
                       ops::embedding_backward(in[0], in[1], start, in[2]);
                       // Twice: a second microbatch accumulates on top of the first.
                       ops::embedding_backward(in[0], in[1], start, in[2]);
                       return std::vector<Tensor>{in[2]};
                     },
                     {0.0}});
    }
  }
  return out;
}

class EmbeddingParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(EmbeddingParity, MatchesCpu) { expect_parity(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cuda, EmbeddingParity, ::testing::ValuesIn(cases()), CaseName());

// f64 tables have no CUDA kernels: refused by name, before anything runs.
TEST(EmbeddingCuda, RefusesF64Table) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  const Tensor ids = Tensor::zeros({3}, DType::i64, device);
  const Tensor table = Tensor::zeros({4, 2}, DType::f64, device);
  Tensor out = Tensor::empty({3, 2}, DType::f64, device);
  expect_error([&] { ops::embedding_forward(ids, table, 0, out); }, {"embedding_forward", "'table'", "f64"});
}

}  // namespace
}  // namespace strata::testing
