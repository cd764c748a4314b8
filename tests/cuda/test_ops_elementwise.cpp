// CUDA elementwise ops and reductions against the CPU (op_parity.h): cast between every pair of
// f32/bf16/f16, fill, add (in place too), scale, axpy (same dtype and 16-bit into f32), sum and
// sum of squares, over awkward shapes.
#include "cuda/op_parity.h"
#include "kernels/ops.h"

namespace strata::testing {
namespace {

std::string tag(const Shape& s, DType d) { return shape_tag(s) + "_" + std::string(dtype_name(d)); }

// A reduction's result as a one-element f64 tensor on the CPU (the op returns a host value).
Tensor scalar(double v) { return Tensor::from_vector(std::vector<double>{v}, {1}); }

std::vector<OpCase> cases() {
  std::vector<OpCase> out;
  for (const Shape& s : awkward_shapes()) {
    for (DType from : cuda_dtypes())
      for (DType to : cuda_dtypes())
        out.push_back({"cast_" + tag(s, from) + "_to_" + std::string(dtype_name(to)),
                       {{"x", s, from, -3, 3}},
                       [to](std::vector<Tensor>& in, Allocator& a) {
                         Tensor y = Tensor::empty(in[0].shape(), to, a);
                         ops::cast(in[0], y);
                         return std::vector<Tensor>{y};
                       },
                       {0.0}});  // one rounding of the same value: exact
    for (DType d : cuda_dtypes()) {
      const double tol = dtype_tolerance(d);
      out.push_back({"fill_" + tag(s, d), {{"x", s, d}},
                     [](std::vector<Tensor>& in, Allocator&) {
                       ops::fill(in[0], -0.3);
                       return std::vector<Tensor>{in[0]};
                     },
                     {0.0}});
      out.push_back({"add_" + tag(s, d), {{"a", s, d}, {"b", s, d}},
                     [](std::vector<Tensor>& in, Allocator& a) {
                       Tensor y = Tensor::empty(in[0].shape(), in[0].dtype(), a);
                       ops::add(in[0], in[1], y);
                       ops::add(in[0], y, in[0]);  // in place: out aliases a
                       return std::vector<Tensor>{y, in[0]};
                     },
                     {tol}});
      out.push_back({"scale_" + tag(s, d), {{"x", s, d}},
                     [](std::vector<Tensor>& in, Allocator&) {
                       ops::scale(in[0], -1.75);
                       return std::vector<Tensor>{in[0]};
                     },
                     {tol}});
      out.push_back({"axpy_" + tag(s, d), {{"x", s, d}, {"y", s, d}},
                     [](std::vector<Tensor>& in, Allocator&) {
                       ops::axpy(0.625, in[0], in[1]);
                       return std::vector<Tensor>{in[1]};
                     },
                     {tol}});
      if (d != DType::f32)
        out.push_back({"axpy_widen_" + tag(s, d), {{"x", s, d}, {"y", s, DType::f32}},
                       [](std::vector<Tensor>& in, Allocator&) {
                         ops::axpy(-1.5, in[0], in[1]);
                         return std::vector<Tensor>{in[1]};
                       },
                       {1e-5}});
      // Sums are accumulated in f64 on both backends from the same stored values: only the order
      // of the additions differs, a few f64 roundings (1e-12 of the largest partial).
      out.push_back({"sum_" + tag(s, d), {{"x", s, d}},
                     [](std::vector<Tensor>& in, Allocator&) {
                       return std::vector<Tensor>{scalar(ops::sum(in[0])), scalar(ops::sum_squares(in[0])),
                                                  scalar(ops::l2_norm(in[0]))};
                     },
                     {1e-9}});
    }
  }
  return out;
}

class ElementwiseParity : public ::testing::TestWithParam<OpCase> {};
TEST_P(ElementwiseParity, MatchesCpu) { expect_parity(GetParam()); }
INSTANTIATE_TEST_SUITE_P(Cuda, ElementwiseParity, ::testing::ValuesIn(cases()), CaseName());

}  // namespace
}  // namespace strata::testing
