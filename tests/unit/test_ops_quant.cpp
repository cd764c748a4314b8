// Weight-only int8 on the CPU against a naive reference: the codes and scales of each row (half a
// step from the weight, the row's max |w| mapped to 127, zero padding after the last column, a row
// of zeros with scale 1), dequantisation as T(float(q) * scale) bit for bit, gemm_int8 equal to
// the dequantised weight's gemm, views of rows, and misuse named in the error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

struct QuantCase {
  int64_t rows, cols;
  DType dtype;
};

std::string case_name(const QuantCase& c) {
  return name_of(c.rows, "x", c.cols, "_", dtype_name(c.dtype));
}
void PrintTo(const QuantCase& c, std::ostream* out) {
  *out << case_name(c);
}

const QuantCase kCases[] = {{1, 1, DType::f32},   {3, 17, DType::f64}, {7, 131, DType::f32},
                            {5, 64, DType::bf16}, {29, 3, DType::f16}, {2, 1000, DType::f32}};

// The weight as f64 values, with row 1 (when there is one) all zeros.
Tensor weight(const QuantCase& c) {
  Tensor w = random_tensor({c.rows, c.cols}, DType::f64, "w", -2.0, 2.0);
  if (c.rows > 1)
    for (int64_t j = 0; j < c.cols; ++j) w.data<double>()[c.cols + j] = 0.0;
  return converted(w, c.dtype);
}

int8_t code(const ops::Int8Weight& q, int64_t r, int64_t j) {
  return static_cast<const int8_t*>(q.codes.raw())[r * q.row_bytes() + j];
}

class Int8 : public ::testing::TestWithParam<QuantCase> {};

TEST_P(Int8, CodesAreHalfAStepFromTheWeight) {
  const QuantCase& c = GetParam();
  const Tensor w = weight(c);
  const ops::Int8Weight q = ops::quantize_int8(w);
  ASSERT_EQ(q.cols, c.cols);
  ASSERT_EQ(q.codes.shape(), (Shape{c.rows, (c.cols + 3) / 4}));
  const std::vector<double> v = values(w);
  for (int64_t r = 0; r < c.rows; ++r) {
    double top = 0;
    for (int64_t j = 0; j < c.cols; ++j)
      top = std::max(top, std::abs(v[static_cast<size_t>(r * c.cols + j)]));
    const float s = q.scale.data<float>()[r];
    EXPECT_EQ(s, top > 0 ? static_cast<float>(top) / 127.0f : 1.0f) << "row " << r;
    int max_code = 0;
    for (int64_t j = 0; j < c.cols; ++j) {
      const int8_t k = code(q, r, j);
      max_code = std::max(max_code, std::abs(static_cast<int>(k)));
      EXPECT_LE(std::abs(k * static_cast<double>(s) - v[static_cast<size_t>(r * c.cols + j)]),
                s * 0.5001)
          << r << ", " << j;
    }
    EXPECT_EQ(max_code, top > 0 ? 127 : 0) << "row " << r;
    for (int64_t j = c.cols; j < q.row_bytes(); ++j)
      EXPECT_EQ(code(q, r, j), 0) << "padding " << r << ", " << j;
  }
}

TEST_P(Int8, DequantisedIsTheProductRoundedOnce) {
  const QuantCase& c = GetParam();
  const ops::Int8Weight q = ops::quantize_int8(weight(c));
  Tensor w = Tensor::empty({c.rows, c.cols}, c.dtype);
  ops::dequantize_int8(q, w);
  std::vector<double> want(static_cast<size_t>(c.rows * c.cols));
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t j = 0; j < c.cols; ++j)
      want[static_cast<size_t>(r * c.cols + j)] =
          static_cast<float>(code(q, r, j)) * q.scale.data<float>()[r];
  EXPECT_EQ(max_relative_error(w, tensor_of(want, {c.rows, c.cols}, c.dtype)), 0.0);
}

TEST_P(Int8, GemmIsTheDequantisedWeightsGemm) {
  const QuantCase& c = GetParam();
  const ops::Int8Weight q = ops::quantize_int8(weight(c));
  for (const int64_t m : {int64_t{1}, int64_t{9}}) {
    const Tensor x = converted(random_tensor({m, c.cols}, DType::f64, "x"), c.dtype);
    Tensor w = Tensor::empty({c.rows, c.cols}, c.dtype), want = Tensor::empty({m, c.rows}, c.dtype);
    ops::dequantize_int8(q, w);
    ops::gemm(x, w, want, {.trans_b = true});
    Tensor got = Tensor::empty({m, c.rows}, c.dtype);
    ops::gemm_int8(x, q, got);
    EXPECT_EQ(max_relative_error(got, want), 0.0) << m << " rows";
    if (c.rows < 2) continue;
    // A view of the last rows (a windowed linear's) multiplies by those rows of the weight.
    const ops::Int8Weight tail = q.rows_slice(1, c.rows);
    Tensor part = Tensor::empty({m, c.rows - 1}, c.dtype),
           want_part = Tensor::empty({m, c.rows - 1}, c.dtype);
    ops::gemm_int8(x, tail, part);
    ops::gemm(x, w.slice(0, 1, c.rows), want_part, {.trans_b = true});
    EXPECT_EQ(max_relative_error(part, want_part), 0.0)
        << m << " rows, rows [1, " << c.rows << ") of the weight";
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, Int8, ::testing::ValuesIn(kCases), CaseName());

TEST(Int8Misuse, ErrorsNameTheArguments) {
  const ops::Int8Weight q = ops::quantize_int8(random_tensor({4, 6}, DType::f32, "w"));
  const Tensor x = random_tensor({2, 6}, DType::f32, "x");
  expect_misuse_errors({
      {"x columns",
       [&] {
         Tensor y = Tensor::empty({2, 4}, DType::f32);
         ops::gemm_int8(random_tensor({2, 5}, DType::f32, "x"), q, y);
       },
       {"gemm_int8", "5 columns", "6"}},
      {"y shape",
       [&] {
         Tensor y = Tensor::empty({2, 3}, DType::f32);
         ops::gemm_int8(x, q, y);
       },
       {"gemm_int8", "'y'"}},
      {"y dtype",
       [&] {
         Tensor y = Tensor::empty({2, 4}, DType::f64);
         ops::gemm_int8(x, q, y);
       },
       {"gemm_int8", "'y'", "f64"}},
      {"codes dtype",
       [&] {
         ops::Int8Weight bad = q;
         bad.codes = Tensor::zeros({4, 2}, DType::f32);
         Tensor y = Tensor::empty({2, 4}, DType::f32);
         ops::gemm_int8(x, bad, y);
       },
       {"gemm_int8", "'codes'", "i32"}},
      {"codes width",
       [&] {
         ops::Int8Weight bad = q;
         bad.cols = 9;
         Tensor w = Tensor::empty({4, 9}, DType::f32);
         ops::dequantize_int8(bad, w);
       },
       {"dequantize_int8", "9 int8 columns"}},
      {"w shape",
       [&] {
         Tensor w = Tensor::empty({4, 5}, DType::f32);
         ops::dequantize_int8(q, w);
       },
       {"dequantize_int8", "'w'"}},
  });
}

}  // namespace
}  // namespace strata::testing
