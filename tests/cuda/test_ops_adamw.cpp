// The CUDA optimizer step against the CPU (op_parity.h): adamw (f32 master, f32/bf16/f16 grads),
// adamw_multi (mixed grad and copy dtypes, weight decay per entry, device grad scale, the skip
// flag), grad_norm_and_check (mixed dtypes, non-finite values, accumulation), clip_factor (every
// branch of the trainer's decision) and the three chained as a step. AdamW and clip_factor repeat
// the CPU's operations one for one, so they must give the same bits (tolerance 0); sums of
// squares add in another order (f64 roundings only).
#include <limits>

#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

ops::AdamWArgs step_args() {
  ops::AdamWArgs args;
  args.lr = 3e-3;
  args.beta1 = 0.9;
  args.beta2 = 0.95;
  args.eps = 1e-8;
  args.weight_decay = 0.1;
  args.step = 3;
  return args;
}

template <typename T>
Tensor scalar_on(T value, Allocator& alloc) {
  return to_device(Tensor::from_vector(std::vector<T>{value}, {1}), alloc);
}

// Sizes around the chunk of the multi-tensor tables (8192) and the vector widths.
const std::vector<int64_t> kSizes = {1, 37, 8193};

std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  for (int64_t n : kSizes)
    for (DType g : cuda_dtypes())
      out.push_back({name_of("adamw_", n, "_grad_", dtype_name(g)),
                     {{"param", {n}, DType::f32},
                      {"grad", {n}, g, -2, 2},
                      {"m", {n}, DType::f32, -0.1, 0.1},
                      {"v", {n}, DType::f32, 0, 0.1}},
                     [](std::vector<Tensor>& in, Allocator&) {
                       ops::AdamWArgs args = step_args();
                       args.grad_scale = 0.37;
                       ops::adamw(in[0], in[1], in[2], in[3], args);
                       return std::vector<Tensor>{in[0], in[2], in[3]};
                     },
                     {0.0}});

  // Three parameters: sizes 1, 8193 and 37; grads f32, bf16, f16; copies none, bf16, f16; the
  // last without weight decay.
  std::vector<InputSpec> multi;
  const DType grads[3] = {DType::f32, DType::bf16, DType::f16};
  for (int i = 0; i < 3; ++i) {
    const Shape s = {kSizes[static_cast<size_t>(i)]};
    multi.push_back({name_of("param", i), s, DType::f32});
    multi.push_back({name_of("grad", i), s, grads[i], -2, 2});
    multi.push_back({name_of("m", i), s, DType::f32, -0.1, 0.1});
    multi.push_back({name_of("v", i), s, DType::f32, 0, 0.1});
  }
  for (int skip : {0, 1})
    out.push_back({name_of("adamw_multi_skip", skip),
                   multi,
                   [skip](std::vector<Tensor>& in, Allocator& alloc) {
                     std::vector<ops::AdamWGroup> groups;
                     std::vector<Tensor> outputs;
                     const DType copies[3] = {DType::f32, DType::bf16, DType::f16};
                     for (size_t i = 0; i < 3; ++i) {
                       ops::AdamWGroup e{in[4 * i],     in[4 * i + 1], in[4 * i + 2],
                                         in[4 * i + 3], Tensor(),      i != 2};
                       if (i > 0) {
                         e.copy = Tensor::zeros(e.param.shape(), copies[i], alloc);
                         outputs.push_back(e.copy);
                       }
                       outputs.insert(outputs.end(), {e.param, e.m, e.v});
                       groups.push_back(e);
                     }
                     ops::adamw_multi(groups, step_args(), scalar_on(0.37f, alloc),
                                      scalar_on<int32_t>(skip, alloc));
                     return outputs;
                   },
                   {0.0}});

  for (bool accumulate : {false, true})
    for (bool poison : {false, true})
      out.push_back(
          {name_of("grad_norm_and_check", accumulate ? "_accumulate" : "", poison ? "_nan" : ""),
           {{"a", {8193}, DType::f32},
            {"b", {37}, DType::bf16},
            {"c", {3, 17}, DType::f16},
            {"d", {1}, DType::f32}},
           [accumulate, poison](std::vector<Tensor>& in, Allocator& alloc) {
             if (poison) {  // a NaN in one tensor
               Tensor host = in[2].to_cpu();
               host.data<f16>()[20] = f16::from_float(std::numeric_limits<float>::quiet_NaN());
               in[2].copy_from(host);
             }
             Tensor sum = scalar_on(2.5, alloc), flag = scalar_on<int32_t>(0, alloc);
             ops::grad_norm_and_check({&in[0], &in[1], &in[2], &in[3]}, sum, flag, accumulate);
             return std::vector<Tensor>{sum, flag};
           },
           {1e-12, 0.0}});

  struct Clip {
    const char* name;
    std::vector<double> sums;
    int32_t nonfinite;
    double loss;  // 0: no loss tensor
    double max_norm, loss_scale;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Clip clips[] = {{"no_clip", {4.0, 5.0, 0.25, 7.0}, 0, 0, 0.0, 1.0},
                        {"clipped", {4.0, 5.0, 0.25, 7.0}, 0, 2.5, 1.0, 1.0},
                        {"below_max", {0.04, 0.05}, 0, 0, 1.0, 1.0},
                        {"loss_scaled", {1e9, 3e9}, 0, 0, 1.0, 65536.0},
                        {"nonfinite_flag", {1.0}, 1, 0, 1.0, 1024.0},
                        {"inf_sum", {1.0, INFINITY}, 0, 0, 1.0, 1.0},
                        {"nan_loss", {1.0}, 0, nan, 1.0, 1.0}};
  for (const Clip& c : clips)
    out.push_back(
        {name_of("clip_factor_", c.name),
         {},
         [c](std::vector<Tensor>&, Allocator& alloc) {
           Tensor sums =
               to_device(Tensor::from_vector(c.sums, {static_cast<int64_t>(c.sums.size())}), alloc);
           Tensor flag = scalar_on(c.nonfinite, alloc);
           Tensor loss = c.loss != 0 || std::isnan(c.loss) ? scalar_on(c.loss, alloc) : Tensor();
           Tensor scale = scalar_on(-1.0f, alloc), skip = scalar_on<int32_t>(-1, alloc),
                  norm = scalar_on(-1.0, alloc);
           ops::clip_factor(sums, flag, loss, {.max_norm = c.max_norm, .loss_scale = c.loss_scale},
                            scale, skip, norm);
           return std::vector<Tensor>{scale, skip, norm};
         },
         {0.0}});

  // A whole step on the device: the norm, the decision, the update, no host value in between. The
  // norm's f64 sum adds in another order, which can move grad_scale by an f32 rounding.
  out.push_back({"optimizer_step_chain",
                 multi,
                 [](std::vector<Tensor>& in, Allocator& alloc) {
                   std::vector<ops::AdamWGroup> groups;
                   for (size_t i = 0; i < 3; ++i)
                     groups.push_back(
                         {in[4 * i], in[4 * i + 1], in[4 * i + 2], in[4 * i + 3], Tensor(), true});
                   Tensor sum = scalar_on(0.0, alloc), flag = scalar_on<int32_t>(0, alloc);
                   ops::grad_norm_and_check({&in[1], &in[5], &in[9]}, sum, flag);
                   Tensor scale = scalar_on(0.0f, alloc), skip = scalar_on<int32_t>(0, alloc),
                          norm = scalar_on(0.0, alloc);
                   ops::clip_factor(sum, flag, Tensor(), {.max_norm = 1.0, .loss_scale = 4.0},
                                    scale, skip, norm);
                   ops::adamw_multi(groups, step_args(), scale, skip);
                   return std::vector<Tensor>{in[0], in[4], in[8], scale, norm};
                 },
                 {1e-6}});
  return out;
}

class AdamWParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(AdamWParity, MatchesCpu) {
  expect_parity(GetParam());
}
INSTANTIATE_TEST_SUITE_P(Cuda, AdamWParity, ::testing::ValuesIn(cases()), CaseName());

}  // namespace
}  // namespace strata::testing
