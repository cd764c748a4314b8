// topk against a stable sort of each row (largest first, ties by lower index), with rows full of
// ties, and NaN ranked above every number.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

struct TopkCase {
  int64_t rows, n, k;
  bool ties;  // values from {0, 1, 2, 3} only, so most rows are full of ties
  DType dtype;
};

std::string case_name(const TopkCase& c) {
  return name_of(c.rows, "x", c.n, "_k", c.k, c.ties ? "_ties_" : "_", dtype_name(c.dtype));
}
void PrintTo(const TopkCase& c, std::ostream* out) {
  *out << case_name(c);
}

const TopkCase kCases[] = {
    {1, 1, 1, false, DType::f32},  {3, 17, 2, false, DType::f64},  {33, 8, 2, true, DType::f32},
    {5, 67, 67, true, DType::f64}, {67, 64, 8, false, DType::f32}, {2, 3, 3, false, DType::f64},
    {17, 33, 5, true, DType::f64}, {9, 33, 4, true, DType::bf16},  {4, 17, 17, false, DType::f16},
};

class Topk : public ::testing::TestWithParam<TopkCase> {};

TEST_P(Topk, MatchesStableSort) {
  const TopkCase& c = GetParam();
  Tensor x = random_tensor({c.rows, c.n}, DType::f64, "x", c.ties ? 0.0 : -1.0, c.ties ? 4.0 : 1.0);
  if (c.ties)
    for (int64_t i = 0; i < x.numel(); ++i) x.data<double>()[i] = std::floor(x.data<double>()[i]);
  x = converted(x, c.dtype);
  Tensor got_values = Tensor::empty({c.rows, c.k}, c.dtype);
  Tensor got_indices = Tensor::empty({c.rows, c.k}, DType::i32);
  ops::topk(x, c.k, got_values, got_indices);

  const std::vector<double> xv = values(x);
  for (int64_t r = 0; r < c.rows; ++r) {
    std::vector<int64_t> order(static_cast<size_t>(c.n));
    std::iota(order.begin(), order.end(), 0);
    auto at = [&](int64_t j) { return xv[static_cast<size_t>(r * c.n + j)]; };
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return at(a) > at(b); });
    for (int64_t j = 0; j < c.k; ++j) {
      const int64_t want = order[static_cast<size_t>(j)];
      ASSERT_EQ(got_indices.data<int32_t>()[r * c.k + j], want) << "row " << r << " rank " << j;
      ASSERT_EQ(element(got_values, r * c.k + j), at(want)) << "row " << r << " rank " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, Topk, ::testing::ValuesIn(kCases), CaseName());

TEST(TopkOps, TiesGoToTheLowerIndexAndNaNRanksFirst) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 3, 3, 2, 3, NAN, 0, 0}, {2, 4});
  Tensor values_out = Tensor::empty({2, 3}, DType::f32);
  Tensor indices = Tensor::empty({2, 3}, DType::i32);
  ops::topk(x, 3, values_out, indices);
  const int32_t* idx = indices.data<int32_t>();
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 3), (std::vector<int32_t>{1, 2, 3}));
  // Row 1 is {3, NaN, 0, 0}: NaN first, then 3, then the lower of the tied zeros.
  EXPECT_EQ(std::vector<int32_t>(idx + 3, idx + 6), (std::vector<int32_t>{1, 0, 2}));
  EXPECT_TRUE(std::isnan(values_out.data<float>()[3]));
}

}  // namespace
}  // namespace strata::testing
