// gemm against a triple loop: every shape of the table in all four transpose combinations, with
// alpha/beta, 2-D and strided batch, f32 and f64.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

struct GemmCase {
  int64_t batch;  // 0: plain 2-D operands; otherwise a leading batch dim on all three
  int64_t m, k, n;
  double alpha, beta;
  DType dtype;
  bool trans_a = false, trans_b = false;  // filled in by expand()
};

std::string case_name(const GemmCase& c) {
  return name_of("b", c.batch, "_m", c.m, "_k", c.k, "_n", c.n, c.trans_a ? "_T" : "_N",
                 c.trans_b ? "T" : "N", c.beta != 0 ? "_beta_" : "_", dtype_name(c.dtype));
}
void PrintTo(const GemmCase& c, std::ostream* out) {
  *out << case_name(c);
}

// Shapes not a multiple of any blocking, degenerate ones, and a batch; each case is run with all
// four transpose combinations.
const GemmCase kShapes[] = {
    {0, 1, 1, 1, 1.0, 0.0, DType::f64},    {0, 3, 17, 33, 1.0, 0.0, DType::f64},
    {0, 67, 33, 17, 0.5, 2.0, DType::f64}, {0, 33, 67, 3, -1.0, 0.25, DType::f32},
    {0, 17, 1, 67, 2.0, 0.0, DType::f32},  {0, 64, 128, 96, 1.0, 1.0, DType::f32},
    {3, 17, 33, 5, 1.5, 0.5, DType::f64},  {2, 67, 3, 33, 1.0, 0.0, DType::f32},
    {1, 5, 0, 7, 1.0, 0.5, DType::f64},    {2, 4, 6, 8, 0.0, -1.0, DType::f32},
    {0, 17, 33, 5, 1.0, 0.5, DType::bf16}, {2, 3, 17, 33, 1.0, 0.0, DType::f16},
};

std::vector<GemmCase> expand() {
  std::vector<GemmCase> cases;
  for (const GemmCase& shape : kShapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        GemmCase c = shape;
        c.trans_a = ta;
        c.trans_b = tb;
        cases.push_back(c);
      }
  return cases;
}

Shape with_batch(const GemmCase& c, int64_t rows, int64_t cols) {
  return c.batch ? Shape{c.batch, rows, cols} : Shape{rows, cols};
}

class Gemm : public ::testing::TestWithParam<GemmCase> {};

TEST_P(Gemm, MatchesTripleLoop) {
  const GemmCase& c = GetParam();
  const Tensor a =
      random_tensor(c.trans_a ? with_batch(c, c.k, c.m) : with_batch(c, c.m, c.k), c.dtype, "a");
  const Tensor b =
      random_tensor(c.trans_b ? with_batch(c, c.n, c.k) : with_batch(c, c.k, c.n), c.dtype, "b");
  Tensor out = random_tensor(with_batch(c, c.m, c.n), c.dtype, "c");
  const std::vector<double> av = values(a), bv = values(b), c0 = values(out);

  // op(a)[i, p] and op(b)[p, j] of batch entry e, read straight from the stored layout.
  auto at_a = [&](int64_t e, int64_t i, int64_t p) {
    return av[static_cast<size_t>(e * c.m * c.k + (c.trans_a ? p * c.m + i : i * c.k + p))];
  };
  auto at_b = [&](int64_t e, int64_t p, int64_t j) {
    return bv[static_cast<size_t>(e * c.k * c.n + (c.trans_b ? j * c.k + p : p * c.n + j))];
  };
  std::vector<double> want(c0.size());
  for (int64_t e = 0; e < std::max<int64_t>(c.batch, 1); ++e)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < c.k; ++p) s += at_a(e, i, p) * at_b(e, p, j);
        const size_t at = static_cast<size_t>((e * c.m + i) * c.n + j);
        want[at] = c.alpha * s + c.beta * c0[at];
      }

  ops::gemm(a, b, out, {c.trans_a, c.trans_b, c.alpha, c.beta});
  EXPECT_LE(max_relative_error(out, Tensor::from_vector(want, out.shape())), tolerance(c.dtype));
}

INSTANTIATE_TEST_SUITE_P(Ops, Gemm, ::testing::ValuesIn(expand()), CaseName());

// beta = 0 means "overwrite": whatever c held, NaN included, does not leak into the product.
TEST(GemmOps, BetaZeroOverwritesNaN) {
  const Tensor a = random_tensor({3, 5}, DType::f32, "a"),
               b = random_tensor({5, 4}, DType::f32, "b");
  Tensor c = Tensor::empty({3, 4}, DType::f32);
  for (int64_t i = 0; i < c.numel(); ++i) c.data<float>()[i] = std::nanf("");
  ops::gemm(a, b, c);
  for (int64_t i = 0; i < c.numel(); ++i) EXPECT_TRUE(std::isfinite(c.data<float>()[i])) << i;
}

}  // namespace
}  // namespace strata::testing
