// cast between f32, f64, bf16 and f16 in every direction: against a nearest-value search, on
// explicit ties (round to nearest even, and no double rounding from f64), and round trips.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

constexpr DType kFloating[] = {DType::f32, DType::f64, DType::bf16, DType::f16};

// The value of `v` in a 16-bit format by search: the representable neighbours of a first guess,
// the nearest one, ties to the even bit pattern. Finite values inside the format's range only.
template <typename H>
double nearest16(double v) {
  const H guess = H::from_float(static_cast<float>(v));
  double best = guess.to_float();
  for (int step : {-1, 1}) {
    H c;
    c.bits = static_cast<uint16_t>(guess.bits + step);
    const double cv = c.to_float();
    if (!std::isfinite(cv) || ((c.bits ^ guess.bits) & 0x8000u)) continue;  // no sign flips
    const double d = std::abs(cv - v), d_best = std::abs(best - v);
    if (d < d_best || (d == d_best && (c.bits & 1u) == 0)) best = cv;
  }
  return best;
}

double nearest(double v, DType dtype) {
  switch (dtype) {
    case DType::f64:
      return v;
    case DType::f32:
      return static_cast<float>(v);
    case DType::bf16:
      return nearest16<bf16>(v);
    default:
      return nearest16<f16>(v);
  }
}

struct CastCase {
  DType src, dst;
};

std::vector<CastCase> all_pairs() {
  std::vector<CastCase> cases;
  for (DType s : kFloating)
    for (DType d : kFloating) cases.push_back({s, d});
  return cases;
}

std::string case_name(const CastCase& c) {
  return name_of(dtype_name(c.src), "_to_", dtype_name(c.dst));
}
void PrintTo(const CastCase& c, std::ostream* out) {
  *out << case_name(c);
}

class Cast : public ::testing::TestWithParam<CastCase> {};

// Values over magnitudes 2^-26 .. 2^10 (f16 subnormals and underflow included), many bits each.
TEST_P(Cast, MatchesNearestRepresentable) {
  const CastCase& c = GetParam();
  constexpr int64_t n = 1031;
  const std::vector<double> mantissa = values(random_tensor({n}, DType::f64, "mantissa"));
  const std::vector<double> exponent = values(random_tensor({n}, DType::f64, "exponent", -26, 10));
  std::vector<double> raw(static_cast<size_t>(n));
  for (size_t i = 0; i < raw.size(); ++i)
    raw[i] = std::ldexp(mantissa[i], static_cast<int>(exponent[i]));
  const Tensor src = tensor_of(raw, {n}, c.src);
  Tensor dst = Tensor::empty({n}, c.dst);
  ops::cast(src, dst);
  const std::vector<double> in = values(src), got = values(dst);
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(got[i], nearest(in[i], c.dst)) << "element " << i << " = " << in[i];
}

INSTANTIATE_TEST_SUITE_P(Ops, Cast, ::testing::ValuesIn(all_pairs()), CaseName());

// Exact halfway points go to the even neighbour; an f64 just above a bf16/f16 halfway point must
// round up even though its nearest f32 is the halfway point itself.
struct Tie {
  DType src, dst;
  double in, want;
};
const Tie kTies[] = {
    {DType::f32, DType::bf16, 1 + 0x1p-8, 1.0},
    {DType::f32, DType::bf16, 1 + 3 * 0x1p-8, 1 + 0x1p-6},
    {DType::f32, DType::bf16, -(1 + 0x1p-8), -1.0},
    {DType::f64, DType::bf16, 1 + 0x1p-8, 1.0},
    {DType::f64, DType::bf16, 1 + 0x1p-8 + 0x1p-30, 1 + 0x1p-7},
    {DType::f64, DType::bf16, -(1 + 0x1p-8 + 0x1p-30), -(1 + 0x1p-7)},
    {DType::f32, DType::f16, 1 + 0x1p-11, 1.0},
    {DType::f32, DType::f16, 1 + 3 * 0x1p-11, 1 + 0x1p-9},
    {DType::f32, DType::f16, 0x1p-25, 0.0},
    {DType::f32, DType::f16, 3 * 0x1p-25, 0x1p-23},
    {DType::f32, DType::f16, 65520.0, INFINITY},
    {DType::f64, DType::f16, 1 + 0x1p-11 + 0x1p-40, 1 + 0x1p-10},
    {DType::f64, DType::f16, 65519.99, 65504.0},
    {DType::f64, DType::f32, 1 + 0x1p-24, 1.0},
    {DType::f64, DType::f32, 1 + 3 * 0x1p-24, 1 + 0x1p-22},
    {DType::f16, DType::bf16, 1 + 0x1p-8, 1.0},
    {DType::f16, DType::bf16, 1 + 3 * 0x1p-8, 1 + 0x1p-6},
    {DType::bf16, DType::f16, 1 + 0x1p-7, 1 + 0x1p-7},
};

TEST(CastOps, TiesRoundToEven) {
  for (const Tie& t : kTies) {
    const Tensor src = tensor_of({t.in}, {1}, t.src);
    ASSERT_EQ(values(src)[0], t.in) << "input not representable in " << dtype_name(t.src);
    Tensor dst = Tensor::empty({1}, t.dst);
    ops::cast(src, dst);
    EXPECT_EQ(values(dst)[0], t.want)
        << dtype_name(t.src) << " " << t.in << " -> " << dtype_name(t.dst);
  }
}

// Every finite 16-bit pattern survives a trip through f32 and through f64; f32 through f64.
TEST(CastOps, RoundTripsAreExact) {
  for (DType narrow : {DType::bf16, DType::f16}) {
    Tensor all = Tensor::empty({65536}, narrow);
    for (uint32_t b = 0; b < 65536u; ++b)
      static_cast<uint16_t*>(all.raw())[b] = static_cast<uint16_t>(b);
    for (DType wide : {DType::f32, DType::f64}) {
      Tensor mid = Tensor::empty({65536}, wide), back = Tensor::empty({65536}, narrow);
      ops::cast(all, mid);
      ops::cast(mid, back);
      for (uint32_t b = 0; b < 65536u; ++b) {
        if (std::isnan(element(all, b))) {
          EXPECT_TRUE(std::isnan(element(back, b))) << b;
          continue;
        }
        ASSERT_EQ(static_cast<uint16_t*>(back.raw())[b], b)
            << dtype_name(narrow) << " via " << dtype_name(wide);
      }
    }
  }
  const Tensor x = random_tensor({1000}, DType::f32, "x", -1e6, 1e6);
  Tensor wide = Tensor::empty({1000}, DType::f64), back = Tensor::empty({1000}, DType::f32);
  ops::cast(x, wide);
  ops::cast(wide, back);
  EXPECT_EQ(max_relative_error(back, x), 0.0);
}

}  // namespace
}  // namespace strata::testing
