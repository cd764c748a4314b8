// CUDA top-k against the CPU (op_parity.h): k of 1, 2, 8 (the router's range), k = n, rows of 1,
// 3, 17 and widths of 1 to 1000; rows full of ties (values rounded to a coarse grid, so the lower
// index must win) and a row of NaN (NaN above every number). Values and indices are exact: the
// selection is a comparison, and values are the elements' own bits.
#include <limits>

#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

struct TopkShape {
  int64_t rows, n, k;
};

std::string tag(const TopkShape& s, DType d) {
  return std::to_string(s.rows) + "x" + std::to_string(s.n) + "_k" + std::to_string(s.k) + "_" +
         std::string(dtype_name(d));
}

std::vector<Tensor> run_topk(const Tensor& x, int64_t k, Allocator& a) {
  Tensor values = Tensor::empty({x.size(0), k}, x.dtype(), a);
  Tensor indices = Tensor::empty({x.size(0), k}, DType::i32, a);
  ops::topk(x, k, values, indices);
  return {values, indices};
}

std::vector<OpCase> cases() {
  const std::vector<TopkShape> shapes = {{1, 1, 1},    {3, 7, 2},   {17, 64, 8}, {3, 129, 8},
                                         {5, 1000, 4}, {2, 37, 37}, {1, 1000, 1}};
  std::vector<OpCase> out;
  for (const TopkShape& s : shapes)
    for (DType d : cuda_dtypes()) {
      const int64_t k = s.k;
      out.push_back({"topk_" + tag(s, d), {{"x", {s.rows, s.n}, d, -3, 3}},
                     [k](std::vector<Tensor>& in, Allocator& a) { return run_topk(in[0], k, a); },
                     {0.0}});
      // x in [0, 4) scaled by 2^-22 into f16's subnormals (steps of 2^-24) and back: multiples of
      // 1/4, so most entries tie and the lower index must win.
      out.push_back({"ties_" + tag(s, d), {{"x", {s.rows, s.n}, d, 0, 4}},
                     [k](std::vector<Tensor>& in, Allocator& a) {
                       Tensor coarse = Tensor::empty(in[0].shape(), DType::f16, a);
                       ops::scale(in[0], 0x1p-22);
                       ops::cast(in[0], coarse);
                       ops::cast(coarse, in[0]);
                       ops::scale(in[0], 0x1p22);
                       return run_topk(in[0], k, a);
                     },
                     {0.0}});
    }
  for (DType d : cuda_dtypes())
    out.push_back({"nan_row_3x17_k5_" + std::string(dtype_name(d)), {{"x", {3, 17}, d, -3, 3}},
                   [](std::vector<Tensor>& in, Allocator& a) {
                     Tensor row = in[0].slice(0, 1, 2);
                     ops::fill(row, std::numeric_limits<double>::quiet_NaN());
                     return run_topk(in[0], 5, a);
                   },
                   {0.0}});
  return out;
}

class TopkParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(TopkParity, MatchesCpu) { expect_parity(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cuda, TopkParity, ::testing::ValuesIn(cases()), CaseName());

// f64 scores have no CUDA kernel: refused by name, before anything runs.
TEST(TopkCuda, RefusesF64) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  const Tensor x = Tensor::zeros({2, 4}, DType::f64, device);
  Tensor values = Tensor::empty({2, 2}, DType::f64, device), indices = Tensor::empty({2, 2}, DType::i32, device);
  expect_error([&] { ops::topk(x, 2, values, indices); }, {"topk", "'x'", "f64"});
}

}  // namespace
}  // namespace strata::testing
