// LayerNorm and RMSNorm: forward against plain loops, backward against finite differences, over
// one table of cases (norm x shape x bias x dtype).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "kernels/ops.h"
#include "unit/op_harness.h"

namespace strata::testing {
namespace {

constexpr double kEps = 1e-5;

struct NormCase {
  bool rms;  // RMSNorm (no bias, no mean) or LayerNorm
  Shape shape;
  bool bias;
  DType dtype;
};

std::string case_name(const NormCase& c) {
  return name_of(c.rms ? "rmsnorm_" : "layernorm_", shape_tag(c.shape), c.bias ? "_bias_" : "_",
                 dtype_name(c.dtype));
}
void PrintTo(const NormCase& c, std::ostream* out) {
  *out << case_name(c);
}

const NormCase kCases[] = {
    {false, {1, 1}, true, DType::f64},      {false, {3, 17}, true, DType::f64},
    {false, {2, 3, 33}, false, DType::f64}, {false, {5, 67}, true, DType::f32},
    {false, {7, 3}, false, DType::f32},     {false, {1, 128}, true, DType::f64},
    {true, {1, 1}, false, DType::f64},      {true, {3, 17}, false, DType::f64},
    {true, {2, 3, 33}, false, DType::f32},  {true, {5, 67}, false, DType::f64},
    {true, {4, 1}, false, DType::f32},      {false, {3, 17}, true, DType::bf16},
    {false, {2, 33}, false, DType::f16},    {true, {3, 17}, false, DType::bf16},
    {true, {5, 67}, false, DType::f16},
};

struct Inputs {
  Tensor x, weight, bias;  // bias undefined for RMSNorm or when the case has none
};

Inputs make_inputs(const NormCase& c) {
  const int64_t d = c.shape.back();
  Inputs in;
  in.x = random_tensor(c.shape, c.dtype, "x", -2.0, 3.0);
  in.weight = random_tensor({d}, c.dtype, "weight", 0.5, 1.5);
  if (c.bias) in.bias = random_tensor({d}, c.dtype, "bias");
  return in;
}

Shape leading(const Shape& shape) {
  return Shape(shape.begin(), shape.end() - 1);
}

// y (and mean, rstd) by the textbook formulas, in f64.
struct Reference {
  std::vector<double> y, mean, rstd;
};
Reference reference(const NormCase& c, const Inputs& in) {
  const std::vector<double> x = values(in.x), w = values(in.weight);
  const std::vector<double> b = in.bias.defined() ? values(in.bias) : std::vector<double>(w.size());
  const size_t d = w.size(), rows = x.size() / d;
  Reference r{std::vector<double>(x.size()), std::vector<double>(rows), std::vector<double>(rows)};
  for (size_t i = 0; i < rows; ++i) {
    double mean = 0, var = 0;
    for (size_t j = 0; j < d; ++j) mean += x[i * d + j] / static_cast<double>(d);
    const double center = c.rms ? 0.0 : mean;
    for (size_t j = 0; j < d; ++j)
      var += (x[i * d + j] - center) * (x[i * d + j] - center) / static_cast<double>(d);
    r.mean[i] = mean;
    r.rstd[i] = 1.0 / std::sqrt(var + kEps);
    for (size_t j = 0; j < d; ++j)
      r.y[i * d + j] = (x[i * d + j] - center) * r.rstd[i] * w[j] + (c.rms ? 0.0 : b[j]);
  }
  return r;
}

// Runs the op under test; mean is left undefined for RMSNorm.
struct Outputs {
  Tensor y, mean, rstd;
};
Outputs forward(const NormCase& c, const Inputs& in) {
  const DType stats = ops::stats_dtype(in.x.dtype());
  Outputs out{Tensor::empty(in.x.shape(), in.x.dtype()), Tensor(),
              Tensor::empty(leading(in.x.shape()), stats)};
  if (c.rms) {
    ops::rmsnorm_forward(in.x, in.weight, kEps, out.y, out.rstd);
  } else {
    out.mean = Tensor::empty(leading(in.x.shape()), stats);
    ops::layernorm_forward(in.x, in.weight, in.bias, kEps, out.y, out.mean, out.rstd);
  }
  return out;
}

class Norms : public ::testing::TestWithParam<NormCase> {};

TEST_P(Norms, ForwardMatchesReference) {
  const NormCase& c = GetParam();
  const Inputs in = make_inputs(c);
  const Outputs out = forward(c, in);
  const Reference want = reference(c, in);
  const Shape rows = leading(c.shape);
  EXPECT_LE(max_relative_error(out.y, Tensor::from_vector(want.y, c.shape)), tolerance(c.dtype));
  EXPECT_LE(max_relative_error(out.rstd, Tensor::from_vector(want.rstd, rows)), tolerance(c.dtype));
  if (!c.rms) {
    EXPECT_LE(max_relative_error(out.mean, Tensor::from_vector(want.mean, rows)),
              tolerance(c.dtype));
  }
}

// The fused residual add (add_layernorm_forward, add_rmsnorm_forward) is ops::add followed by the
// plain norm, bit for bit: out of place, and in place on the residual stream (residual_out is
// residual_in) as a pre-norm block calls it.
TEST_P(Norms, FusedResidualAddIsAddThenNorm) {
  const NormCase& c = GetParam();
  const Inputs in = make_inputs(c);
  const Tensor residual = random_tensor(c.shape, c.dtype, "residual_in");
  Tensor sum = Tensor::empty(c.shape, c.dtype);
  ops::add(in.x, residual, sum);
  const Outputs want = forward(c, Inputs{sum, in.weight, in.bias});
  for (const bool in_place : {false, true}) {
    Tensor residual_in = Tensor::empty(c.shape, c.dtype);
    residual_in.copy_from(residual);
    Tensor residual_out = in_place ? residual_in : Tensor::empty(c.shape, c.dtype);
    const DType stats = ops::stats_dtype(c.dtype);
    Tensor y = Tensor::empty(c.shape, c.dtype), mean, rstd = Tensor::empty(leading(c.shape), stats);
    if (c.rms) {
      ops::add_rmsnorm_forward(in.x, residual_in, in.weight, kEps, residual_out, y, rstd);
    } else {
      mean = Tensor::empty(leading(c.shape), stats);
      ops::add_layernorm_forward(in.x, residual_in, in.weight, in.bias, kEps, residual_out, y, mean,
                                 rstd);
      EXPECT_EQ(max_relative_error(mean, want.mean), 0.0) << "in place: " << in_place;
    }
    EXPECT_EQ(max_relative_error(residual_out, sum), 0.0) << "in place: " << in_place;
    EXPECT_EQ(max_relative_error(y, want.y), 0.0) << "in place: " << in_place;
    EXPECT_EQ(max_relative_error(rstd, want.rstd), 0.0) << "in place: " << in_place;
  }
}

// The op under test's backward: dx overwritten, dweight and dbias (undefined without a bias)
// accumulated; the plain norm's, or with dresidual the fused residual add's.
void backward(const NormCase& c, const Tensor& dy, const Tensor* dresidual, const Tensor& x,
              const Tensor& weight, const Outputs& saved, Tensor& dx, Tensor& dweight,
              Tensor& dbias) {
  if (c.rms && dresidual) {
    ops::add_rmsnorm_backward(dy, *dresidual, x, weight, saved.rstd, dx, dweight);
  } else if (c.rms) {
    ops::rmsnorm_backward(dy, x, weight, saved.rstd, dx, dweight);
  } else if (dresidual) {
    ops::add_layernorm_backward(dy, *dresidual, x, weight, saved.mean, saved.rstd, dx, dweight,
                                dbias);
  } else {
    ops::layernorm_backward(dy, x, weight, saved.mean, saved.rstd, dx, dweight, dbias);
  }
}

// {dx, dweight, dbias (with a bias)} of backward(), the parameter gradients as what it added to
// buffers that already held values.
std::vector<Tensor> gradients(const NormCase& c, const Tensor& dy, const Tensor* dresidual,
                              const Tensor& x, const Tensor& weight, const Outputs& saved) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype()), dbias;
  Tensor dweight = accumulated(weight.shape(), weight.dtype(), [&](Tensor& dw) {
    if (!c.bias) {
      Tensor no_bias;
      backward(c, dy, dresidual, x, weight, saved, dx, dw, no_bias);
      return;
    }
    dbias = accumulated(weight.shape(), weight.dtype(), [&](Tensor& db) {
      backward(c, dy, dresidual, x, weight, saved, dx, dw, db);
    });
  });
  std::vector<Tensor> grads{dx, dweight};
  if (c.bias) grads.push_back(dbias);
  return grads;
}

// d(sum(y * dy)) / d(x, weight, bias) against finite differences; dweight and dbias must add into
// what their buffers already hold.
TEST_P(Norms, BackwardMatchesFiniteDifferences) {
  const NormCase& c = GetParam();
  const Inputs in = make_inputs(c);
  GradCheck op;
  op.inputs = {{"x", converted(in.x, DType::f64)}, {"weight", converted(in.weight, DType::f64)}};
  if (c.bias) op.inputs.push_back({"bias", converted(in.bias, DType::f64)});
  auto unpack = [&](const std::vector<Tensor>& t) {
    return Inputs{t[0], t[1], c.bias ? t[2] : Tensor()};
  };
  op.forward = [&](const std::vector<Tensor>& t) { return forward(c, unpack(t)).y; };
  op.backward = [&](const std::vector<Tensor>& t, const Tensor& dy) {
    const Inputs args = unpack(t);
    return gradients(c, dy, nullptr, args.x, args.weight, forward(c, args));
  };
  expect_gradients(op, c.dtype);
}

// The fused residual add's backward (add_layernorm_backward, add_rmsnorm_backward) is the plain
// backward followed by ops::add, bit for bit: out of place, and in place on the residual stream's
// gradient (dx is dresidual) as a pre-norm block calls it.
TEST_P(Norms, FusedResidualAddBackwardIsBackwardThenAdd) {
  const NormCase& c = GetParam();
  const Inputs in = make_inputs(c);
  const Tensor dy = random_tensor(c.shape, c.dtype, "dy");
  const Tensor dresidual = random_tensor(c.shape, c.dtype, "dresidual");
  const Outputs saved = forward(c, in);
  const Tensor dweight_0 = random_tensor({c.shape.back()}, c.dtype, "dweight");
  const Tensor dbias_0 = random_tensor({c.shape.back()}, c.dtype, "dbias");
  auto copy = [](const Tensor& t) {
    Tensor out = Tensor::empty(t.shape(), t.dtype());
    out.copy_from(t);
    return out;
  };
  Tensor want_dx = Tensor::empty(c.shape, c.dtype), want_dweight = copy(dweight_0),
         want_dbias = c.bias ? copy(dbias_0) : Tensor();
  backward(c, dy, nullptr, in.x, in.weight, saved, want_dx, want_dweight, want_dbias);
  ops::add(want_dx, dresidual, want_dx);
  for (const bool in_place : {false, true}) {
    Tensor dresidual_in = copy(dresidual);
    Tensor dx = in_place ? dresidual_in : Tensor::empty(c.shape, c.dtype);
    Tensor dweight = copy(dweight_0), dbias = c.bias ? copy(dbias_0) : Tensor();
    backward(c, dy, &dresidual_in, in.x, in.weight, saved, dx, dweight, dbias);
    EXPECT_EQ(max_relative_error(dx, want_dx), 0.0) << "in place: " << in_place;
    EXPECT_EQ(max_relative_error(dweight, want_dweight), 0.0) << "in place: " << in_place;
    if (c.bias) {
      EXPECT_EQ(max_relative_error(dbias, want_dbias), 0.0) << "in place: " << in_place;
    }
  }
}

// The fused pair against finite differences: with s = x + residual_in and y = norm(s), the
// gradients of sum(y * dy) + sum(s * dresidual) with respect to x and residual_in are both the
// fused backward's dx (= dresidual + norm'(dy)); weight and bias as for the plain norm. The
// harness sees one output, y and s stacked as [2, rows..., d], and one dout, dy and dresidual.
TEST_P(Norms, FusedBackwardMatchesFiniteDifferences) {
  const NormCase& c = GetParam();
  const Inputs in = make_inputs(c);
  const Tensor residual = random_tensor(c.shape, c.dtype, "residual_in");
  Shape stacked_shape{2};
  stacked_shape.insert(stacked_shape.end(), c.shape.begin(), c.shape.end());
  // s = x + residual_in, y = norm(s), and the saved statistics, in the inputs' dtype.
  struct Fused {
    Tensor s;
    Outputs out;
  };
  auto fused_forward = [&](const std::vector<Tensor>& t) {
    const DType dt = t[0].dtype(), stats = ops::stats_dtype(dt);
    Fused f{Tensor::empty(c.shape, dt),
            Outputs{Tensor::empty(c.shape, dt), Tensor(), Tensor::empty(leading(c.shape), stats)}};
    if (c.rms) {
      ops::add_rmsnorm_forward(t[0], t[1], t[2], kEps, f.s, f.out.y, f.out.rstd);
    } else {
      f.out.mean = Tensor::empty(leading(c.shape), stats);
      ops::add_layernorm_forward(t[0], t[1], t[2], c.bias ? t[3] : Tensor(), kEps, f.s, f.out.y,
                                 f.out.mean, f.out.rstd);
    }
    return f;
  };
  GradCheck op;
  op.inputs = {{"x", converted(in.x, DType::f64)},
               {"residual_in", converted(residual, DType::f64)},
               {"weight", converted(in.weight, DType::f64)}};
  if (c.bias) op.inputs.push_back({"bias", converted(in.bias, DType::f64)});
  op.forward = [&](const std::vector<Tensor>& t) {
    const Fused f = fused_forward(t);
    std::vector<double> v = values(f.out.y);
    const std::vector<double> s = values(f.s);
    v.insert(v.end(), s.begin(), s.end());
    return tensor_of(v, stacked_shape, t[0].dtype());
  };
  op.backward = [&](const std::vector<Tensor>& t, const Tensor& dout) {
    const std::vector<double> v = values(dout);
    const auto half = static_cast<std::ptrdiff_t>(v.size() / 2);
    const Tensor dy = tensor_of({v.begin(), v.begin() + half}, c.shape, dout.dtype());
    const Tensor dresidual = tensor_of({v.begin() + half, v.end()}, c.shape, dout.dtype());
    const Fused f = fused_forward(t);
    std::vector<Tensor> grads = gradients(c, dy, &dresidual, f.s, t[2], f.out);
    grads.insert(grads.begin() + 1, grads[0]);  // x and residual_in get the same gradient
    return grads;
  };
  expect_gradients(op, c.dtype);
}

// dweight and dbias sum over rows in a fixed order (threads split the columns), so their bits do
// not depend on the thread count: a resumed run on another machine adds the same gradients.
TEST(NormOps, ParameterGradientsDoNotDependOnThreadCount) {
  const Shape shape{301, 130};
  const Tensor x = random_tensor(shape, DType::f32, "x"),
               dy = random_tensor(shape, DType::f32, "dy");
  const Tensor weight = random_tensor({130}, DType::f32, "weight");
  Tensor y = Tensor::empty(shape, DType::f32), mean = Tensor::empty({301}, DType::f32);
  Tensor rstd = Tensor::empty({301}, DType::f32), dx = Tensor::empty(shape, DType::f32);
  ops::layernorm_forward(x, weight, Tensor(), kEps, y, mean, rstd);
  auto gradients = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor dweight = Tensor::zeros({130}, DType::f32), dbias = Tensor::zeros({130}, DType::f32);
    ops::layernorm_backward(dy, x, weight, mean, rstd, dx, dweight, dbias);
    return std::pair{dweight, dbias};
  };
  const int saved = omp_get_max_threads();
  const auto [dweight_1, dbias_1] = gradients(1);
  const auto [dweight_3, dbias_3] = gradients(3);
  omp_set_num_threads(saved);
  EXPECT_EQ(max_relative_error(dweight_3, dweight_1), 0.0);
  EXPECT_EQ(max_relative_error(dbias_3, dbias_1), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Ops, Norms, ::testing::ValuesIn(kCases), CaseName());

}  // namespace
}  // namespace strata::testing
