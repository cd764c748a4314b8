// CUDA weight-only int8 against the CPU (op_parity.h): dequantisation bit for bit, and gemm_int8
// on both of its CUDA paths (the fused GEMV for up to 8 rows of x, dequantise-then-gemm above) with
// widths that fill the 16-byte loads (64, 48), leave a tail in the last word (3, 131) or give no
// 16-byte-aligned rows (131, 1000: row_bytes % 16 != 0 takes the 4-byte loads), a view of rows
// (a windowed linear's), f32/bf16/f16. Tolerance: the dtype's (f32 1e-5, 16-bit 1e-2 relative to
// the largest output), since the sums run in another order than the CPU's; the dequantised
// weight itself is exact.
#include "cuda/op_parity.h"
#include "kernels/cuda/quant.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

struct QuantShape {
  int64_t m, n, cols;  // x [m, cols], W [n, cols], y [m, n]
};

std::string tag(const QuantShape& s, DType d) {
  return name_of(s.m, "x", s.n, "x", s.cols, "_", dtype_name(d));
}

std::vector<OpCase> cases() {
  const std::vector<QuantShape> weights = {{0, 1, 1},    {0, 17, 3},   {0, 5, 64},
                                           {0, 37, 131}, {0, 7, 1000}, {0, 130, 48}};
  std::vector<OpCase> out;
  for (DType d : cuda_dtypes())
    for (const QuantShape& w : weights) {
      out.push_back({"dequantize_" + tag(w, d),
                     {{"w", {w.n, w.cols}, d, -2, 2}},
                     [](std::vector<Tensor>& in, Allocator& a) {
                       const ops::Int8Weight q = ops::quantize_int8(in[0]);
                       Tensor dense = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       ops::dequantize_int8(q, dense);
                       return std::vector<Tensor>{dense, q.codes, q.scale};
                     },
                     {0.0}});
      for (const int64_t m : {int64_t{1}, int64_t{3}, cuda::kInt8GemvMaxRows,
                              cuda::kInt8GemvMaxRows + 1, int64_t{33}}) {
        const QuantShape s{m, w.n, w.cols};
        out.push_back({"gemm_int8_" + tag(s, d),
                       {{"w", {s.n, s.cols}, d, -2, 2}, {"x", {s.m, s.cols}, d}},
                       [m](std::vector<Tensor>& in, Allocator& a) {
                         const ops::Int8Weight q = ops::quantize_int8(in[0]);
                         Tensor y = Tensor::empty({m, q.rows()}, in[1].dtype(), a);
                         ops::gemm_int8(in[1], q, y);
                         return std::vector<Tensor>{y};
                       },
                       {dtype_tolerance(d)}});
      }
    }
  // Rows [2, n) of the weight: the codes start two rows in.
  for (DType d : cuda_dtypes())
    for (const int64_t m : {int64_t{2}, int64_t{12}})
      out.push_back({"gemm_int8_rows_" + tag({m, 33, 64}, d),
                     {{"w", {33, 64}, d, -2, 2}, {"x", {m, 64}, d}},
                     [m](std::vector<Tensor>& in, Allocator& a) {
                       const ops::Int8Weight q = ops::quantize_int8(in[0]).rows_slice(2, 33);
                       Tensor y = Tensor::empty({m, 31}, in[1].dtype(), a);
                       ops::gemm_int8(in[1], q, y);
                       return std::vector<Tensor>{y};
                     },
                     {dtype_tolerance(d)}});
  return out;
}

class QuantParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(QuantParity, MatchesCpu) {
  expect_parity(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cuda, QuantParity, ::testing::ValuesIn(cases()), CaseName());

// f64 activations have no CUDA kernel: refused by name, before anything runs.
TEST(QuantCuda, RefusesF64) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  const ops::Int8Weight q = ops::quantize_int8(Tensor::zeros({4, 8}, DType::f32, device));
  const Tensor x = Tensor::zeros({2, 8}, DType::f64, device);
  Tensor y = Tensor::empty({2, 4}, DType::f64, device);
  expect_error([&] { ops::gemm_int8(x, q, y); }, {"gemm_int8", "'x'", "f64"});
}

}  // namespace
}  // namespace strata::testing
