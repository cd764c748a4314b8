// CUDA mixture-of-experts routing against the CPU (op_parity.h): the whole chain of one MoE
// layer's routing, forward and backward, as src/model/moe.cpp runs it (the experts replaced by
// the identity, so the packed rows are their own outputs). Tokens of 1 to 64, 1 to 16 experts,
// top-1 to top-3, widths 1 to 1000 (vector and scalar paths), dropless and capacity factors that
// drop, packed by load and in the fixed layout (capacity rows an expert, zero padding), with the
// routing sums accumulated twice. Choices, rows and counts are exact; the f64 outputs (probabilities, lse, gates, the
// gates' gradients, the losses) within 1e-12 (device exp/log against glibc's, a few ulp); rows
// rounded to the dtype within the dtype's tolerance (the f64 sums may round across a boundary).
#include <cmath>

#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

struct MoeShape {
  int64_t rows, experts, k, d;
  double capacity_factor;
  bool fixed = false;  // the fixed layout (needs a capacity factor)
};

std::string tag(const MoeShape& s, DType d) {
  return std::to_string(s.rows) + "x" + std::to_string(s.experts) + "_k" + std::to_string(s.k) +
         "_d" + std::to_string(s.d) + "_cf" +
         std::to_string(static_cast<int>(s.capacity_factor * 100)) + (s.fixed ? "_fixed_" : "_") +
         std::string(dtype_name(d));
}

// in: scores [rows, E], x [rows, d], dy [rows, d].
std::vector<Tensor> run_moe(const MoeShape& s, std::vector<Tensor>& in, Allocator& a) {
  const Tensor &scores = in[0], &x = in[1], &dy = in[2];
  const int64_t rows = s.rows, E = s.experts, k = s.k, d = s.d;
  Tensor probs = Tensor::empty({rows, E}, DType::f64, a),
         lse = Tensor::empty({rows}, DType::f64, a);
  Tensor expert = Tensor::empty({rows, k}, DType::i32, a),
         gate = Tensor::empty({rows, k}, DType::f64, a);
  ops::moe_route(scores, k, probs, lse, expert, gate);
  const int64_t capacity =
      s.capacity_factor > 0
          ? static_cast<int64_t>(std::ceil(s.capacity_factor * static_cast<double>(rows * k) /
                                           static_cast<double>(E)))
          : rows * k;
  Tensor row = Tensor::empty({rows, k}, DType::i32, a),
         counts = Tensor::empty({2, E}, DType::i64, a);
  ops::moe_capacity(expert, E, capacity, s.fixed ? capacity : 0, row, counts);
  Tensor losses = Tensor::empty({2}, DType::f64, a);
  ops::moe_routing_losses(probs, lse, counts, k, losses);
  Tensor sums = Tensor::zeros({2 * E + 2}, DType::f64, a);
  ops::moe_routing_accumulate(counts, losses, sums);
  ops::moe_routing_accumulate(counts, losses, sums);
  int64_t n = E * capacity;
  if (!s.fixed) {
    const Tensor host_counts = counts.to_cpu();
    n = 0;
    for (int64_t e = 0; e < E; ++e) n += host_counts.data<int64_t>()[E + e];
  }
  Tensor packed = Tensor::empty({n, d}, x.dtype(), a);
  if (s.fixed) ops::fill(packed, 0.0);
  ops::moe_dispatch(x, row, packed);
  Tensor y = Tensor::empty({rows, d}, x.dtype(), a);
  ops::moe_combine(packed, row, gate, y);
  Tensor dout = Tensor::empty({n, d}, x.dtype(), a),
         dgate = Tensor::empty({rows, k}, DType::f64, a);
  if (s.fixed) ops::fill(dout, 0.0);
  ops::moe_combine_backward(dy, packed, row, gate, dout, dgate);
  Tensor dx = Tensor::empty({rows, d}, x.dtype(), a),
         dx_alone = Tensor::empty({rows, d}, x.dtype(), a);
  ops::moe_dispatch_backward(dout, row, &x, dx);
  ops::moe_dispatch_backward(dout, row, nullptr, dx_alone);
  Tensor dscores = Tensor::empty({rows, E}, x.dtype(), a);
  ops::moe_router_backward(probs, lse, expert, gate, dgate, counts,
                           {.loss_scale = 2.0, .aux_coef = 0.01, .z_coef = 0.001}, dscores);
  return {probs,  lse, expert, gate,  row, counts,   losses,
          packed, y,   dout,   dgate, dx,   dx_alone, dscores, sums};
}

std::vector<OpCase> cases() {
  const std::vector<MoeShape> shapes = {
      {1, 1, 1, 1, 0.0},    {3, 4, 2, 17, 0.0},   {37, 8, 2, 64, 0.5},  {29, 5, 3, 131, 1.0},
      {64, 16, 1, 8, 1.25}, {7, 3, 3, 1000, 0.0}, {300, 4, 2, 24, 0.75}, {37, 8, 2, 64, 0.5, true},
      {29, 5, 3, 131, 1.0, true}, {64, 16, 1, 8, 1.25, true}, {1, 1, 1, 1, 2.0, true}};
  std::vector<OpCase> out;
  for (const MoeShape& s : shapes)
    for (DType dt : cuda_dtypes()) {
      const double rows_tol = dtype_tolerance(dt), f64_tol = 1e-12;
      out.push_back({"moe_" + tag(s, dt),
                     {{"scores", {s.rows, s.experts}, dt, -3, 3},
                      {"x", {s.rows, s.d}, dt},
                      {"dy", {s.rows, s.d}, dt}},
                     [s](std::vector<Tensor>& in, Allocator& a) { return run_moe(s, in, a); },
                     {f64_tol, f64_tol, 0.0, f64_tol, 0.0, 0.0, f64_tol, 0.0, rows_tol, rows_tol,
                      f64_tol, rows_tol, rows_tol, rows_tol, f64_tol}});
    }
  return out;
}

class MoeParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(MoeParity, MatchesCpu) {
  expect_parity(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cuda, MoeParity, ::testing::ValuesIn(cases()), CaseName());

// f64 rows have no CUDA kernel: refused by name, before anything runs.
TEST(MoeCuda, RefusesF64Scores) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  CudaDevice device(0);
  const Tensor scores = Tensor::zeros({2, 4}, DType::f64, device);
  Tensor probs = Tensor::empty({2, 4}, DType::f64, device),
         lse = Tensor::empty({2}, DType::f64, device);
  Tensor expert = Tensor::empty({2, 1}, DType::i32, device),
         gate = Tensor::empty({2, 1}, DType::f64, device);
  expect_error([&] { ops::moe_route(scores, 1, probs, lse, expert, gate); },
               {"moe_route", "'scores'", "f64"});
}

}  // namespace
}  // namespace strata::testing
