// add, scale, axpy and the reductions (sum, sum_squares, l2_norm) against plain loops, for every
// floating dtype, over one table of cases (op x size x dtype).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

enum class Op { add, add_in_place, scale, axpy, sum, sum_squares, l2_norm };
constexpr const char* kOpNames[] = {"add", "add_in_place", "scale",  "axpy",
                                    "sum", "sum_squares",  "l2_norm"};
constexpr double kAlpha = -0.75;

struct ElementwiseCase {
  Op op;
  Shape shape;
  DType dtype;
};

std::string case_name(const ElementwiseCase& c) {
  return name_of(kOpNames[static_cast<int>(c.op)], "_", shape_tag(c.shape), "_",
                 dtype_name(c.dtype));
}
void PrintTo(const ElementwiseCase& c, std::ostream* out) {
  *out << case_name(c);
}

// Every op on sizes around the reduction chunk (4096) and odd ones, in every floating dtype.
std::vector<ElementwiseCase> cases() {
  const Shape shapes[] = {{1}, {3, 17}, {2, 4097}};
  std::vector<ElementwiseCase> out;
  for (int op = 0; op <= static_cast<int>(Op::l2_norm); ++op)
    for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16})
      for (const Shape& shape : shapes) out.push_back({static_cast<Op>(op), shape, dtype});
  return out;
}

class Elementwise : public ::testing::TestWithParam<ElementwiseCase> {};

TEST_P(Elementwise, MatchesReference) {
  const ElementwiseCase& c = GetParam();
  const Tensor a = random_tensor(c.shape, c.dtype, "a", -2.0, 2.0);
  const Tensor b = random_tensor(c.shape, c.dtype, "b", -2.0, 2.0);
  const std::vector<double> av = values(a), bv = values(b);

  if (c.op == Op::sum || c.op == Op::sum_squares || c.op == Op::l2_norm) {
    double want = 0, magnitude = 0;  // reference sum and the sum of |terms| that bounds its error
    for (double x : av) {
      const double term = c.op == Op::sum ? x : x * x;
      want += term;
      magnitude += std::abs(term);
    }
    if (c.op == Op::l2_norm) want = std::sqrt(want);
    const double got = c.op == Op::sum           ? ops::sum(a)
                       : c.op == Op::sum_squares ? ops::sum_squares(a)
                                                 : ops::l2_norm(a);
    // Accumulated in f64 whatever the storage: only the summation order differs.
    EXPECT_NEAR(got, want, 1e-13 * std::max(magnitude, 1.0));
    return;
  }

  std::vector<double> want(av.size());
  Tensor out = Tensor::empty(c.shape, c.dtype);
  switch (c.op) {
    case Op::add:
      for (size_t i = 0; i < av.size(); ++i) want[i] = av[i] + bv[i];
      ops::add(a, b, out);
      break;
    case Op::add_in_place:  // out aliases a
      for (size_t i = 0; i < av.size(); ++i) want[i] = av[i] + bv[i];
      out = converted(a, c.dtype);
      ops::add(out, b, out);
      break;
    case Op::scale:
      for (size_t i = 0; i < av.size(); ++i) want[i] = kAlpha * av[i];
      out = converted(a, c.dtype);
      ops::scale(out, kAlpha);
      break;
    default:  // axpy: b += alpha * a
      for (size_t i = 0; i < av.size(); ++i) want[i] = bv[i] + kAlpha * av[i];
      out = converted(b, c.dtype);
      ops::axpy(kAlpha, a, out);
      break;
  }
  EXPECT_LE(max_relative_error(out, Tensor::from_vector(want, c.shape)), tolerance(c.dtype));
}

INSTANTIATE_TEST_SUITE_P(Ops, Elementwise, ::testing::ValuesIn(cases()), CaseName());

// The reductions add fixed chunks in order, so the thread count cannot change a sum's bits.
TEST(ElementwiseOps, ReductionsDoNotDependOnThreadCount) {
  const Tensor x = random_tensor({100003}, DType::f32, "x");
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double sum = ops::sum(x), squares = ops::sum_squares(x);
  for (int threads : {2, 3, 7}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(ops::sum(x), sum) << threads << " threads";
    EXPECT_EQ(ops::sum_squares(x), squares) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace strata::testing
