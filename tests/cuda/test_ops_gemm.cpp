// CUDA gemm and gemm_ex (cuBLASLt) against the CPU (op_parity.h): sizes that are not multiples of
// any tile (1, 3, 17, 65, 130), every transpose pair, strided batches, beta != 0, operands not
// 16-byte aligned, f32/bf16/f16; the epilogues fused (n a multiple of 8) and run apart (not); and
// the per-device plan cache.
#include "cuda/op_parity.h"
#include "kernels/cuda/gemm.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

struct Problem {
  int64_t batch, m, n, k;  // batch 0: a 2-D product
};

Shape a_shape(const Problem& p, bool trans_a) {
  Shape s = trans_a ? Shape{p.k, p.m} : Shape{p.m, p.k};
  if (p.batch) s.insert(s.begin(), p.batch);
  return s;
}
Shape b_shape(const Problem& p, bool trans_b) {
  Shape s = trans_b ? Shape{p.n, p.k} : Shape{p.k, p.n};
  if (p.batch) s.insert(s.begin(), p.batch);
  return s;
}
Shape c_shape(const Problem& p) {
  return p.batch ? Shape{p.batch, p.m, p.n} : Shape{p.m, p.n};
}

std::string tag(const Problem& p, bool ta, bool tb, DType d) {
  return name_of(p.batch ? std::to_string(p.batch) + "x" : std::string(), p.m, "x", p.n, "x", p.k,
                 ta ? "_ta" : "", tb ? "_tb" : "", "_", dtype_name(d));
}

// Inputs a, b, c (c's initial values, read when beta != 0), then any extras.
std::vector<InputSpec> operands(const Problem& p, bool ta, bool tb, DType d) {
  return {{"a", a_shape(p, ta), d}, {"b", b_shape(p, tb), d}, {"c", c_shape(p), d}};
}

OpCase product(const std::string& name, const Problem& p, bool ta, bool tb, DType d, double alpha,
               double beta) {
  return {name + tag(p, ta, tb, d),
          operands(p, ta, tb, d),
          [=](std::vector<Tensor>& in, Allocator&) {
            ops::gemm(in[0], in[1], in[2],
                      {.trans_a = ta, .trans_b = tb, .alpha = alpha, .beta = beta});
            return std::vector<Tensor>{in[2]};
          },
          {dtype_tolerance(d)}};
}

std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  const std::vector<Problem> plain = {{0, 1, 1, 1},    {0, 1, 17, 3},    {0, 3, 1, 17},
                                      {0, 17, 65, 3},  {0, 65, 17, 130}, {0, 130, 3, 65},
                                      {0, 3, 130, 17}, {0, 17, 17, 1}};
  const std::vector<Problem> batched = {{2, 3, 17, 65}, {3, 17, 1, 3}};
  for (DType d : cuda_dtypes())
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        for (const Problem& p : plain) out.push_back(product("gemm_", p, ta, tb, d, 1.0, 0.0));
        for (const Problem& p : batched)
          out.push_back(product("gemm_batch_", p, ta, tb, d, 1.0, 0.0));
        out.push_back(product("gemm_beta_", {0, 17, 65, 3}, ta, tb, d, 0.5, -1.25));
        out.push_back(product("gemm_batch_beta_", {2, 3, 17, 65}, ta, tb, d, -2.0, 1.0));
        out.push_back(product("gemm_empty_k_", {0, 3, 17, 0}, ta, tb, d, 1.0, 0.5));
      }

  // Operands that start one element into their allocation: not 16-byte aligned (the plan's
  // alignment promise must follow the pointers).
  for (DType d : cuda_dtypes())
    out.push_back({name_of("gemm_unaligned_17x33x5_", dtype_name(d)),
                   {{"a", {18, 5}, d}, {"b", {6, 33}, d}, {"c", {17 * 33 + 1}, d}},
                   [](std::vector<Tensor>& in, Allocator&) {
                     Tensor a = in[0].slice(0, 1, 18), b = in[1].slice(0, 1, 6);
                     Tensor c = in[2].slice(0, 1, 17 * 33 + 1).view({17, 33});
                     ops::gemm(a, b, c, {.beta = 1.0});
                     return std::vector<Tensor>{in[2]};
                   },
                   {dtype_tolerance(d)}});

  // Epilogues. n = 64 lets cuBLASLt fuse the GELU aux (its leading dimension must be a multiple of
  // 8); n = 17 takes the separate kernels.
  for (DType d : cuda_dtypes()) {
    const double tol = dtype_tolerance(d);
    for (int64_t n : {64, 17})
      for (int64_t batch : {0, 2}) {
        const Problem p{batch, 17, n, 65};
        const std::string t = tag(p, false, true, d);
        std::vector<InputSpec> in = operands(p, false, true, d);
        in.push_back({"bias", {n}, d});
        out.push_back({"gemm_bias_" + t,
                       in,
                       [](std::vector<Tensor>& x, Allocator&) {
                         ops::gemm_ex(x[0], x[1], x[2], {.trans_b = true, .beta = 0.5},
                                      {.bias = &x[3]});
                         return std::vector<Tensor>{x[2]};
                       },
                       {tol}});
        out.push_back({"gemm_bias_gelu_aux_" + t,
                       in,
                       [](std::vector<Tensor>& x, Allocator& alloc) {
                         Tensor aux = Tensor::empty(x[2].shape(), x[2].dtype(), alloc);
                         ops::gemm_ex(x[0], x[1], x[2], {.trans_b = true},
                                      {.bias = &x[3], .gelu = true, .gelu_aux = &aux});
                         return std::vector<Tensor>{x[2], aux};
                       },
                       {tol}});
        out.push_back({"gemm_gelu_" + t,
                       in,
                       [](std::vector<Tensor>& x, Allocator&) {
                         ops::gemm_ex(x[0], x[1], x[2], {.trans_b = true}, {.gelu = true});
                         return std::vector<Tensor>{x[2]};
                       },
                       {tol}});
        std::vector<InputSpec> back = operands(p, false, true, d);
        back.push_back({"pre", c_shape(p), d, -3, 3});
        out.push_back({"gemm_dgelu_" + t,
                       back,
                       [](std::vector<Tensor>& x, Allocator&) {
                         ops::gemm_ex(x[0], x[1], x[2], {.trans_b = true}, {.dgelu_aux = &x[3]});
                         return std::vector<Tensor>{x[2]};
                       },
                       {tol}});
        if (batch == 0) {
          out.push_back({"gemm_dgelu_bias_grad_" + t,
                         back,
                         [n](std::vector<Tensor>& x, Allocator& alloc) {
                           Tensor db = Tensor::empty({n}, x[2].dtype(), alloc);
                           ops::gemm_ex(x[0], x[1], x[2], {.trans_b = true},
                                        {.dgelu_aux = &x[3], .bias_grad = &db});
                           return std::vector<Tensor>{x[2], db};
                         },
                         {tol}});
        }
      }
    // The weight gradient of a linear layer with its bias gradient: dW = dy^T @ x, db = column sums
    // of dy (a = dy, trans_a); and the same reduction with a untransposed.
    for (bool ta : {true, false}) {
      const Problem p{0, 33, 20, 17};
      std::vector<InputSpec> in = operands(p, ta, false, d);
      out.push_back({"gemm_bias_grad_" + tag(p, ta, false, d),
                     in,
                     [ta](std::vector<Tensor>& x, Allocator& alloc) {
                       Tensor db = Tensor::empty({33}, x[2].dtype(), alloc);
                       ops::gemm_ex(x[0], x[1], x[2], {.trans_a = ta, .beta = 1.0},
                                    {.bias_grad = &db});
                       return std::vector<Tensor>{x[2], db};
                     },
                     {tol}});
    }
  }
  return out;
}

class GemmParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(GemmParity, MatchesCpu) {
  expect_parity(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cuda, GemmParity, ::testing::ValuesIn(cases()), CaseName());

Tensor device_input(const Shape& shape, DType dtype, CudaDevice& device, uint64_t seed) {
  return to_device(random_tensor(shape, dtype, "x", -1, 1, seed), device);
}

TEST(GemmPlanCache, SecondCallReusesThePlan) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  Tensor a = device_input({17, 65}, DType::bf16, device, 1),
         b = device_input({65, 3}, DType::bf16, device, 2);
  Tensor c = Tensor::empty({17, 3}, DType::bf16, device);
  ops::gemm(a, b, c);
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 1);
  EXPECT_EQ(cuda::gemm_plan_stats(device).cache_hits, 0);
  ops::gemm(a, b, c, {.alpha = 2.0, .beta = 1.0});  // the scalars are not part of the plan
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 1);
  EXPECT_EQ(cuda::gemm_plan_stats(device).cache_hits, 1);
  ops::gemm(a, b, c, {.trans_b = false});
  EXPECT_EQ(cuda::gemm_plan_stats(device).cache_hits, 2);

  // Another shape, transpose, dtype or epilogue is another plan.
  Tensor bt = device_input({3, 65}, DType::bf16, device, 3);
  ops::gemm(a, bt, c, {.trans_b = true});
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 2);
  Tensor bias = device_input({3}, DType::bf16, device, 4);
  ops::gemm_ex(a, b, c, {}, {.bias = &bias});
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 3);
  ops::gemm_ex(a, b, c, {}, {.bias = &bias});
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 3);

  // The same shape with a less aligned operand: the heuristic's alignment promise differs.
  Tensor wide = device_input({66, 3}, DType::bf16, device, 5);
  Tensor shifted = wide.slice(0, 1, 66);
  ops::gemm(a, shifted, c);
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 4);
  Tensor want = Tensor::empty({17, 3}, DType::bf16);
  Tensor a_host = a.to_cpu(), b_host = shifted.to_cpu().contiguous();
  ops::gemm(a_host, b_host, want);
  EXPECT_LE(max_relative_error(c.to_cpu(), want), 1e-2);
}

TEST(GemmPlanCache, EpiloguesFuseWhereTheAuxFits) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  Tensor a = device_input({5, 7}, DType::f32, device, 1),
         b = device_input({7, 17}, DType::f32, device, 2);
  Tensor c = Tensor::empty({5, 17}, DType::f32, device),
         aux = Tensor::empty({5, 17}, DType::f32, device);
  ops::gemm_ex(a, b, c, {}, {.gelu = true, .gelu_aux = &aux});  // n = 17: the aux cannot be fused
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 1);
  ops::gemm(a, b, c);  // the plain product's plan, already made
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 1);

  // n = 64: the fused plan only, no plain one behind it.
  Tensor b64 = device_input({7, 64}, DType::f32, device, 3);
  Tensor c64 = Tensor::empty({5, 64}, DType::f32, device),
         aux64 = Tensor::empty({5, 64}, DType::f32, device);
  ops::gemm_ex(a, b64, c64, {}, {.gelu = true, .gelu_aux = &aux64});
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 2);
  ops::gemm(a, b64, c64);
  EXPECT_EQ(cuda::gemm_plan_stats(device).plans_created, 3);
}

TEST(GemmEpilogueChecks, RejectsBadCombinations) {
  Tensor a = Tensor::zeros({3, 4}, DType::f32), b = Tensor::zeros({4, 5}, DType::f32);
  Tensor c = Tensor::zeros({3, 5}, DType::f32), aux = Tensor::zeros({3, 5}, DType::f32);
  Tensor bias = Tensor::zeros({5}, DType::f32), wrong = Tensor::zeros({3}, DType::f32);
  EXPECT_THROW(ops::gemm_ex(a, b, c, {}, {.bias = &wrong}), Error);
  EXPECT_THROW(ops::gemm_ex(a, b, c, {}, {.gelu_aux = &aux}), Error);
  EXPECT_THROW(ops::gemm_ex(a, b, c, {}, {.bias = &bias, .dgelu_aux = &aux}), Error);
  EXPECT_THROW(ops::gemm_ex(a, b, c, {}, {.dgelu_aux = &aux, .bias_grad = &wrong}), Error);
  EXPECT_NO_THROW(ops::gemm_ex(a, b, c, {}, {.dgelu_aux = &aux, .bias_grad = &bias}));
  EXPECT_NO_THROW(ops::gemm_ex(a, b, c, {}, {.bias_grad = &wrong}));
}

}  // namespace
}  // namespace strata::testing
