#include "model/moe.h"

#include <cmath>
#include <limits>
#include <string>

#include "kernels/ops.h"

namespace strata {
namespace {

Tensor as_f64(const Tensor& t) {
  if (t.dtype() == DType::f64) return t.contiguous();
  Tensor out = Tensor::empty(t.shape(), DType::f64);
  ops::cast(t, out);
  return out;
}

Tensor as_dtype(const Tensor& t64, DType dtype) {
  if (dtype == DType::f64) return t64;
  Tensor out = Tensor::empty(t64.shape(), dtype);
  ops::cast(t64, out);
  return out;
}

// Row `i` of a contiguous [rows, d] tensor as a [1, d] view.
Tensor row(const Tensor& t, int64_t i) { return t.slice(0, i, i + 1); }

}  // namespace

bool is_moe_layer(const ModelConfig& config, int64_t layer) {
  return config.moe.n_experts > 0 && layer % config.moe.every == config.moe.every - 1;
}

MoeLayer::MoeLayer(ParameterRegistry& registry, const std::string& name, const ModelConfig& config,
                   DType dtype, const TensorParallel& tp)
    : n_experts_(config.moe.n_experts),
      top_k_(config.moe.top_k),
      capacity_factor_(config.moe.capacity_factor),
      aux_coef_(config.moe.aux_loss_coef),
      z_coef_(config.moe.z_loss_coef),
      tp_(tp) {
  STRATA_CHECK(n_experts_ >= 1 && top_k_ >= 1 && top_k_ <= n_experts_, name, ": top_k = ", top_k_,
               " of ", n_experts_, " experts");
  router_ = Linear(registry,
                   LinearSpec{name + ".router", config.d_model, n_experts_, false, 0.02, Split::none,
                              tp.rank, tp.size},
                   dtype);
  experts_.reserve(static_cast<size_t>(n_experts_));
  for (int64_t e = 0; e < n_experts_; ++e)
    experts_.emplace_back(registry, name + ".experts." + std::to_string(e), config, dtype, tp);
}

void MoeLayer::forward(const Tensor& x, Tensor& y, MoeSaved& s) const {
  const int64_t rows = x.size(0), d = x.size(1), E = n_experts_, k = top_k_;
  const DType dt = x.dtype();

  // Router: scores [rows, E], then softmax and logsumexp in f64.
  Tensor scores = Tensor::empty({rows, E}, dt);
  router_.forward(x, scores);
  const Tensor s64 = as_f64(scores);
  s.probs = Tensor::empty({rows, E}, DType::f64);
  s.lse = Tensor::empty({rows}, DType::f64);
  const double* sc = s64.data<double>();
  double* p = s.probs.data<double>();
  for (int64_t r = 0; r < rows; ++r) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t e = 0; e < E; ++e) m = std::max(m, sc[r * E + e]);
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(sc[r * E + e] - m);
    const double lse = m + std::log(sum);
    s.lse.data<double>()[r] = lse;
    for (int64_t e = 0; e < E; ++e) p[r * E + e] = std::exp(sc[r * E + e] - lse);
  }

  // Top-k choices and their renormalised gates.
  Tensor top_p = Tensor::empty({rows, k}, DType::f64), top_e = Tensor::empty({rows, k}, DType::i32);
  ops::topk(s.probs, k, top_p, top_e);
  s.expert.assign(static_cast<size_t>(rows * k), 0);
  s.gate.assign(static_cast<size_t>(rows * k), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double total = 0;
    for (int64_t j = 0; j < k; ++j) total += top_p.data<double>()[r * k + j];
    for (int64_t j = 0; j < k; ++j) {
      s.expert[static_cast<size_t>(r * k + j)] = top_e.data<int32_t>()[r * k + j];
      s.gate[static_cast<size_t>(r * k + j)] = top_p.data<double>()[r * k + j] / total;
    }
  }

  // Capacity: first choices of every token before second choices, then token order.
  const int64_t capacity =
      capacity_factor_ > 0
          ? static_cast<int64_t>(std::ceil(capacity_factor_ * static_cast<double>(rows * k) /
                                           static_cast<double>(E)))
          : rows * k;
  MoeRouting& routing = s.routing;
  routing = MoeRouting{};
  routing.chosen.assign(static_cast<size_t>(E), 0);
  routing.load.assign(static_cast<size_t>(E), 0);
  s.taken.assign(static_cast<size_t>(E), {});
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t r = 0; r < rows; ++r) {
      const auto choice = static_cast<size_t>(r * k + j);
      const auto e = static_cast<size_t>(s.expert[choice]);
      ++routing.chosen[e];
      if (static_cast<int64_t>(s.taken[e].size()) < capacity)
        s.taken[e].push_back(static_cast<int64_t>(choice));
      else
        ++routing.dropped;
    }
  }

  // Auxiliary losses of this forward.
  for (int64_t e = 0; e < E; ++e) {
    double mean_p = 0;
    for (int64_t r = 0; r < rows; ++r) mean_p += p[r * E + e];
    mean_p /= static_cast<double>(rows);
    const double f = static_cast<double>(routing.chosen[static_cast<size_t>(e)]) / static_cast<double>(rows * k);
    routing.aux_loss += static_cast<double>(E) * f * mean_p;
    routing.load[static_cast<size_t>(e)] = static_cast<int64_t>(s.taken[static_cast<size_t>(e)].size());
  }
  for (int64_t r = 0; r < rows; ++r) routing.z_loss += s.lse.data<double>()[r] * s.lse.data<double>()[r];
  routing.z_loss /= static_cast<double>(rows);

  // Experts on their tokens; y = sum over kept choices of gate x expert output (f64, then rounded).
  Tensor y64 = Tensor::zeros({rows, d}, DType::f64);
  s.inputs.assign(static_cast<size_t>(E), Tensor());
  s.outputs.assign(static_cast<size_t>(E), Tensor());
  s.saved.assign(static_cast<size_t>(E), MlpSaved{});
  for (int64_t e = 0; e < E; ++e) {
    const auto& taken = s.taken[static_cast<size_t>(e)];
    const auto n = static_cast<int64_t>(taken.size());
    if (n == 0) continue;
    Tensor in = Tensor::empty({n, d}, dt);
    for (int64_t i = 0; i < n; ++i) {
      Tensor dst = row(in, i);
      dst.copy_from(row(x, taken[static_cast<size_t>(i)] / k));
    }
    Tensor out = Tensor::empty({n, d}, dt);
    experts_[static_cast<size_t>(e)].forward(in, out, s.saved[static_cast<size_t>(e)]);
    const Tensor out64 = as_f64(out);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t choice = taken[static_cast<size_t>(i)];
      const double g = s.gate[static_cast<size_t>(choice)];
      double* yr = y64.data<double>() + (choice / k) * d;
      const double* o = out64.data<double>() + i * d;
      for (int64_t c = 0; c < d; ++c) yr[c] += g * o[c];
    }
    s.inputs[static_cast<size_t>(e)] = in;
    s.outputs[static_cast<size_t>(e)] = out;
  }
  y.copy_from(as_dtype(y64, dt));
}

void MoeLayer::backward(const Tensor& dy, const Tensor& x, const MoeSaved& s, double loss_scale,
                        Tensor& dx) const {
  const int64_t rows = x.size(0), d = x.size(1), E = n_experts_, k = top_k_;
  const DType dt = x.dtype();
  const Tensor dy64 = as_f64(dy);
  Tensor dx64 = Tensor::zeros({rows, d}, DType::f64);
  std::vector<double> dgate(static_cast<size_t>(rows * k), 0.0);

  // Through the experts: d(expert input) = expert'(gate x dy); d gate = dy . expert output.
  for (int64_t e = 0; e < E; ++e) {
    const auto& taken = s.taken[static_cast<size_t>(e)];
    const auto n = static_cast<int64_t>(taken.size());
    if (n == 0) continue;
    const Tensor out64 = as_f64(s.outputs[static_cast<size_t>(e)]);
    Tensor dout64 = Tensor::empty({n, d}, DType::f64);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t choice = taken[static_cast<size_t>(i)], r = choice / k;
      const double g = s.gate[static_cast<size_t>(choice)];
      const double* dyr = dy64.data<double>() + r * d;
      const double* o = out64.data<double>() + i * d;
      double* dout = dout64.data<double>() + i * d;
      double dot = 0;
      for (int64_t c = 0; c < d; ++c) {
        dout[c] = g * dyr[c];
        dot += dyr[c] * o[c];
      }
      dgate[static_cast<size_t>(choice)] = dot;
    }
    Tensor din = Tensor::empty({n, d}, dt);
    experts_[static_cast<size_t>(e)].backward(as_dtype(dout64, dt), s.inputs[static_cast<size_t>(e)],
                                              s.saved[static_cast<size_t>(e)], din);
    const Tensor din64 = as_f64(din);
    for (int64_t i = 0; i < n; ++i) {
      double* dxr = dx64.data<double>() + (taken[static_cast<size_t>(i)] / k) * d;
      const double* src = din64.data<double>() + i * d;
      for (int64_t c = 0; c < d; ++c) dxr[c] += src[c];
    }
  }
  // Under tp each rank's expert outputs are partial sums: so are its gate gradients.
  if (tp_.active()) {
    Tensor g = Tensor::wrap(dgate.data(), {rows * k}, DType::f64, Device::cpu());
    tp_.group->all_reduce(g, ReduceOp::sum);
  }

  // Gates -> probabilities: w_j = p_j / S over the token's chosen p, so
  // dp_i = (dgate_i - sum_j dgate_j w_j) / S for each chosen i. Load balancing adds
  // coef E f_e / rows to every dp[r, e].
  const double* p = s.probs.data<double>();
  Tensor dp = Tensor::zeros({rows, E}, DType::f64);
  double* dpp = dp.data<double>();
  for (int64_t r = 0; r < rows; ++r) {
    double chosen_p = 0, weighted = 0;
    for (int64_t j = 0; j < k; ++j) {
      const auto choice = static_cast<size_t>(r * k + j);
      chosen_p += p[r * E + s.expert[choice]];
      weighted += dgate[choice] * s.gate[choice];
    }
    for (int64_t j = 0; j < k; ++j) {
      const auto choice = static_cast<size_t>(r * k + j);
      dpp[r * E + s.expert[choice]] += (dgate[choice] - weighted) / chosen_p;
    }
  }
  if (aux_coef_ > 0) {
    for (int64_t e = 0; e < E; ++e) {
      const double f = static_cast<double>(s.routing.chosen[static_cast<size_t>(e)]) /
                       static_cast<double>(rows * k);
      const double g = loss_scale * aux_coef_ * static_cast<double>(E) * f / static_cast<double>(rows);
      for (int64_t r = 0; r < rows; ++r) dpp[r * E + e] += g;
    }
  }
  // Softmax: dscore = p (dp - sum_e p_e dp_e); z-loss adds coef 2 lse p / rows.
  Tensor dscores64 = Tensor::empty({rows, E}, DType::f64);
  for (int64_t r = 0; r < rows; ++r) {
    double inner = 0;
    for (int64_t e = 0; e < E; ++e) inner += p[r * E + e] * dpp[r * E + e];
    const double z = loss_scale * z_coef_ * 2.0 * s.lse.data<double>()[r] / static_cast<double>(rows);
    for (int64_t e = 0; e < E; ++e)
      dscores64.data<double>()[r * E + e] = p[r * E + e] * (dpp[r * E + e] - inner) + z * p[r * E + e];
  }
  // Router: its weight gradient on every tp rank (replicated, identical), its input gradient once.
  Tensor dxr = tp_.rank == 0 ? Tensor::empty({rows, d}, dt) : Tensor();
  router_.backward(x, as_dtype(dscores64, dt), dxr);
  if (dxr.defined()) {
    const Tensor dxr64 = as_f64(dxr);
    for (int64_t i = 0; i < rows * d; ++i) dx64.data<double>()[i] += dxr64.data<double>()[i];
  }
  dx.copy_from(as_dtype(dx64, dt));
}

}  // namespace strata
