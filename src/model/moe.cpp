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
                   DType dtype, const TensorParallel& tp, const ExpertParallel& ep)
    : n_experts_(config.moe.n_experts),
      top_k_(config.moe.top_k),
      capacity_factor_(config.moe.capacity_factor),
      aux_coef_(config.moe.aux_loss_coef),
      z_coef_(config.moe.z_loss_coef),
      tp_(tp),
      ep_(ep) {
  STRATA_CHECK(n_experts_ >= 1 && top_k_ >= 1 && top_k_ <= n_experts_, name, ": top_k = ", top_k_,
               " of ", n_experts_, " experts");
  STRATA_CHECK(n_experts_ % ep.size == 0, "parallel.ep = ", ep.size,
               " does not divide model.moe.n_experts = ", n_experts_,
               ": experts are split evenly over the expert-parallel ranks");
  local_experts_ = n_experts_ / ep.size;
  first_expert_ = ep.rank * local_experts_;
  router_ = Linear(registry,
                   LinearSpec{name + ".router", config.d_model, n_experts_, false, 0.02, Split::none,
                              tp.rank, tp.size},
                   dtype);
  experts_.reserve(static_cast<size_t>(local_experts_));
  for (int64_t e = first_expert_; e < first_expert_ + local_experts_; ++e) {
    const size_t before = registry.all().size();
    experts_.emplace_back(registry, name + ".experts." + std::to_string(e), config, dtype, tp);
    for (size_t i = before; i < registry.all().size(); ++i) registry.all()[i]->expert = true;
  }
}

void MoeLayer::count_sent(const std::vector<int64_t>& send_counts, DType dtype) const {
  if (!ep_.bytes_sent) return;
  for (size_t j = 0; j < send_counts.size(); ++j)
    if (static_cast<int>(j) != ep_.rank)
      *ep_.bytes_sent += send_counts[j] * static_cast<int64_t>(dtype_size(dtype));
}

std::vector<std::vector<int64_t>> MoeLayer::exchange_counts(const std::vector<int64_t>& sent_rows) const {
  if (!ep_.active()) return {sent_rows};
  // Rows per expert to every owner (owner j holds experts [j per, (j + 1) per)).
  const int ep = ep_.size;
  const int64_t per = local_experts_;
  Tensor sent = Tensor::from_vector(sent_rows, {n_experts_}), got = Tensor::empty({n_experts_}, DType::i64);
  const std::vector<int64_t> per_peer(static_cast<size_t>(ep), per);
  ep_.group->all_to_all(sent, per_peer, got, per_peer);
  std::vector<std::vector<int64_t>> arrived(static_cast<size_t>(ep));
  for (int j = 0; j < ep; ++j)
    arrived[static_cast<size_t>(j)].assign(got.data<int64_t>() + j * per, got.data<int64_t>() + (j + 1) * per);
  return arrived;
}

std::vector<Tensor> MoeLayer::dispatch(const std::vector<Tensor>& by_expert,
                                       const std::vector<int64_t>& sent_rows,
                                       const std::vector<std::vector<int64_t>>& arrived, DType dtype,
                                       int64_t d) const {
  if (!ep_.active()) return by_expert;
  const int ep = ep_.size;
  const int64_t per = local_experts_;
  std::vector<int64_t> send_counts(static_cast<size_t>(ep), 0), recv_counts(static_cast<size_t>(ep), 0);
  int64_t total_rows = 0, arrived_rows = 0;
  for (int j = 0; j < ep; ++j)
    for (int64_t le = 0; le < per; ++le) {
      const int64_t out = sent_rows[static_cast<size_t>(j * per + le)];
      const int64_t in = arrived[static_cast<size_t>(j)][static_cast<size_t>(le)];
      send_counts[static_cast<size_t>(j)] += out * d;
      recv_counts[static_cast<size_t>(j)] += in * d;
      total_rows += out;
      arrived_rows += in;
    }
  // Experts ascending = owners ascending, so the send buffer is the experts' rows back to back.
  Tensor out_buf = Tensor::empty({total_rows, d}, dtype);
  int64_t at = 0;
  for (const Tensor& t : by_expert) {
    if (!t.defined() || t.size(0) == 0) continue;
    Tensor dst = out_buf.slice(0, at, at + t.size(0));
    dst.copy_from(t);
    at += t.size(0);
  }
  Tensor in_buf = Tensor::empty({arrived_rows, d}, dtype);
  count_sent(send_counts, dtype);
  ep_.group->all_to_all(out_buf, send_counts, in_buf, recv_counts);
  // Arrived: source-major, then local expert. Each local expert's rows, concatenated by source.
  std::vector<Tensor> local(static_cast<size_t>(per));
  for (int64_t le = 0; le < per; ++le) {
    int64_t n = 0;
    for (int j = 0; j < ep; ++j) n += arrived[static_cast<size_t>(j)][static_cast<size_t>(le)];
    if (n == 0) continue;
    local[static_cast<size_t>(le)] = Tensor::empty({n, d}, dtype);
  }
  std::vector<int64_t> filled(static_cast<size_t>(per), 0);
  at = 0;
  for (int j = 0; j < ep; ++j)
    for (int64_t le = 0; le < per; ++le) {
      const int64_t n = arrived[static_cast<size_t>(j)][static_cast<size_t>(le)];
      if (n == 0) continue;
      int64_t& f = filled[static_cast<size_t>(le)];
      Tensor dst = local[static_cast<size_t>(le)].slice(0, f, f + n);
      dst.copy_from(in_buf.slice(0, at, at + n));
      f += n;
      at += n;
    }
  return local;
}

std::vector<Tensor> MoeLayer::combine(const std::vector<Tensor>& by_local_expert,
                                      const std::vector<std::vector<int64_t>>& arrived,
                                      const std::vector<int64_t>& sent_rows, DType dtype,
                                      int64_t d) const {
  if (!ep_.active()) return by_local_expert;
  const int ep = ep_.size;
  const int64_t per = local_experts_;
  // Back to the sources, in the layout they arrived in (source-major, local expert within).
  std::vector<int64_t> send_counts(static_cast<size_t>(ep), 0), recv_counts(static_cast<size_t>(ep), 0);
  int64_t out_rows = 0, back_rows = 0;
  for (int j = 0; j < ep; ++j) {
    for (int64_t le = 0; le < per; ++le) {
      send_counts[static_cast<size_t>(j)] += arrived[static_cast<size_t>(j)][static_cast<size_t>(le)] * d;
      out_rows += arrived[static_cast<size_t>(j)][static_cast<size_t>(le)];
      recv_counts[static_cast<size_t>(j)] += sent_rows[static_cast<size_t>(j * per + le)] * d;
      back_rows += sent_rows[static_cast<size_t>(j * per + le)];
    }
  }
  Tensor out_buf = Tensor::empty({out_rows, d}, dtype);
  std::vector<int64_t> taken(static_cast<size_t>(per), 0);
  int64_t at = 0;
  for (int j = 0; j < ep; ++j)
    for (int64_t le = 0; le < per; ++le) {
      const int64_t n = arrived[static_cast<size_t>(j)][static_cast<size_t>(le)];
      if (n == 0) continue;
      int64_t& t = taken[static_cast<size_t>(le)];
      Tensor dst = out_buf.slice(0, at, at + n);
      dst.copy_from(by_local_expert[static_cast<size_t>(le)].slice(0, t, t + n));
      t += n;
      at += n;
    }
  Tensor in_buf = Tensor::empty({back_rows, d}, dtype);
  count_sent(send_counts, dtype);
  ep_.group->all_to_all(out_buf, send_counts, in_buf, recv_counts);
  std::vector<Tensor> by_expert(static_cast<size_t>(n_experts_));
  at = 0;
  for (int64_t e = 0; e < n_experts_; ++e) {
    const int64_t n = sent_rows[static_cast<size_t>(e)];
    if (n == 0) continue;
    by_expert[static_cast<size_t>(e)] = in_buf.slice(0, at, at + n);
    at += n;
  }
  return by_expert;
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
    // Top-1 keeps p itself (Switch): renormalised, its gate would be 1 and the router would get
    // no gradient from the loss.
    if (k == 1) total = 1.0;
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

  // Each expert's tokens, to the experts' owners; the owners' outputs back; y = sum over kept
  // choices of gate x expert output (in f64, then rounded).
  std::vector<Tensor> send(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    const auto& taken = s.taken[static_cast<size_t>(e)];
    const auto n = static_cast<int64_t>(taken.size());
    if (n == 0) continue;
    Tensor in = Tensor::empty({n, d}, dt);
    for (int64_t i = 0; i < n; ++i) {
      Tensor dst = row(in, i);
      dst.copy_from(row(x, taken[static_cast<size_t>(i)] / k));
    }
    send[static_cast<size_t>(e)] = in;
  }
  // The counts (routing.load) go first, once: backward moves the same rows the other way.
  s.arrived = exchange_counts(routing.load);
  s.local_inputs = dispatch(send, routing.load, s.arrived, dt, d);
  s.local_saved.assign(static_cast<size_t>(local_experts_), MlpSaved{});
  std::vector<Tensor> local_out(static_cast<size_t>(local_experts_));
  for (int64_t le = 0; le < local_experts_; ++le) {
    const Tensor& in = s.local_inputs[static_cast<size_t>(le)];
    if (!in.defined() || in.size(0) == 0) continue;
    local_out[static_cast<size_t>(le)] = Tensor::empty(in.shape(), dt);
    experts_[static_cast<size_t>(le)].forward(in, local_out[static_cast<size_t>(le)],
                                              s.local_saved[static_cast<size_t>(le)]);
  }
  s.outputs = combine(local_out, s.arrived, routing.load, dt, d);
  Tensor y64 = Tensor::zeros({rows, d}, DType::f64);
  for (int64_t e = 0; e < E; ++e) {
    const auto& taken = s.taken[static_cast<size_t>(e)];
    if (taken.empty()) continue;
    const Tensor out64 = as_f64(s.outputs[static_cast<size_t>(e)]);
    for (size_t i = 0; i < taken.size(); ++i) {
      const int64_t choice = taken[i];
      const double g = s.gate[static_cast<size_t>(choice)];
      double* yr = y64.data<double>() + (choice / k) * d;
      const double* o = out64.data<double>() + static_cast<int64_t>(i) * d;
      for (int64_t c = 0; c < d; ++c) yr[c] += g * o[c];
    }
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

  // Through the experts: d(expert input) = expert'(gate x dy), computed by the experts' owners;
  // d gate = dy . expert output.
  std::vector<Tensor> dout(static_cast<size_t>(E));
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
      double* dst = dout64.data<double>() + i * d;
      double dot = 0;
      for (int64_t c = 0; c < d; ++c) {
        dst[c] = g * dyr[c];
        dot += dyr[c] * o[c];
      }
      dgate[static_cast<size_t>(choice)] = dot;
    }
    dout[static_cast<size_t>(e)] = as_dtype(dout64, dt);
  }
  const std::vector<Tensor> local_dout = dispatch(dout, s.routing.load, s.arrived, dt, d);
  std::vector<Tensor> local_din(static_cast<size_t>(local_experts_));
  for (int64_t le = 0; le < local_experts_; ++le) {
    const Tensor& in = s.local_inputs[static_cast<size_t>(le)];
    if (!in.defined() || in.size(0) == 0) continue;
    local_din[static_cast<size_t>(le)] = Tensor::empty(in.shape(), dt);
    experts_[static_cast<size_t>(le)].backward(local_dout[static_cast<size_t>(le)], in,
                                               s.local_saved[static_cast<size_t>(le)],
                                               local_din[static_cast<size_t>(le)]);
  }
  const std::vector<Tensor> din = combine(local_din, s.arrived, s.routing.load, dt, d);
  for (int64_t e = 0; e < E; ++e) {
    const auto& taken = s.taken[static_cast<size_t>(e)];
    if (taken.empty()) continue;
    const Tensor din64 = as_f64(din[static_cast<size_t>(e)]);
    for (size_t i = 0; i < taken.size(); ++i) {
      double* dxr = dx64.data<double>() + (taken[i] / k) * d;
      const double* src = din64.data<double>() + static_cast<int64_t>(i) * d;
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
  for (int64_t r = 0; r < rows && k == 1; ++r)  // w = p: dp = dgate
    dpp[r * E + s.expert[static_cast<size_t>(r)]] += dgate[static_cast<size_t>(r)];
  for (int64_t r = 0; r < rows && k > 1; ++r) {
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
