#include "model/moe.h"

#include <cmath>
#include <string>

#include "kernels/ops.h"

namespace strata {
namespace {

// A tensor [sum of rows, d] packed by local expert (expert le's rows[le] rows in order), and
// f(le, its rows) for each local expert that has any.
template <typename F>
Tensor packed_by_local_expert(const std::vector<int64_t>& rows, int64_t d, DType dtype, Allocator& alloc, F&& f) {
  int64_t total = 0;
  for (int64_t n : rows) total += n;
  Tensor packed = Tensor::empty({total, d}, dtype, alloc);
  int64_t at = 0;
  for (size_t le = 0; le < rows.size(); ++le) {
    if (rows[le] == 0) continue;
    Tensor part = packed.slice(0, at, at + rows[le]);
    f(le, part);
    at += rows[le];
  }
  return packed;
}

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

int64_t MoeLayer::local_rows(const std::vector<std::vector<int64_t>>& arrived, int64_t le) const {
  int64_t n = 0;
  for (const auto& from : arrived) n += from[static_cast<size_t>(le)];
  return n;
}

std::vector<int64_t> MoeLayer::rows_per_local_expert(const std::vector<std::vector<int64_t>>& arrived) const {
  std::vector<int64_t> rows(static_cast<size_t>(local_experts_));
  for (int64_t le = 0; le < local_experts_; ++le) rows[static_cast<size_t>(le)] = local_rows(arrived, le);
  return rows;
}

std::vector<Tensor> MoeLayer::dispatch(const Tensor& packed, const std::vector<int64_t>& sent_rows,
                                       const std::vector<std::vector<int64_t>>& arrived, DType dtype,
                                       int64_t d) const {
  std::vector<Tensor> local(static_cast<size_t>(local_experts_));
  if (!ep_.active()) {  // every expert is local: its rows are its slice of the packed rows
    int64_t at = 0;
    for (int64_t e = 0; e < n_experts_; ++e) {
      const int64_t n = sent_rows[static_cast<size_t>(e)];
      if (n > 0) local[static_cast<size_t>(e)] = packed.slice(0, at, at + n);
      at += n;
    }
    return local;
  }
  const int ep = ep_.size;
  const int64_t per = local_experts_;
  std::vector<int64_t> send_counts(static_cast<size_t>(ep), 0), recv_counts(static_cast<size_t>(ep), 0);
  int64_t arrived_rows = 0;
  for (int j = 0; j < ep; ++j)
    for (int64_t le = 0; le < per; ++le) {
      const int64_t in = arrived[static_cast<size_t>(j)][static_cast<size_t>(le)];
      send_counts[static_cast<size_t>(j)] += sent_rows[static_cast<size_t>(j * per + le)] * d;
      recv_counts[static_cast<size_t>(j)] += in * d;
      arrived_rows += in;
    }
  // Experts ascending = owners ascending, so the packed rows are the send buffer as they are.
  Allocator& alloc = allocator_of(packed);
  Tensor in_buf = Tensor::empty({arrived_rows, d}, dtype, alloc);
  count_sent(send_counts, dtype);
  ep_.group->all_to_all(packed, send_counts, in_buf, recv_counts);
  // Arrived: source-major, then local expert. Each local expert's rows, concatenated by source.
  for (int64_t le = 0; le < per; ++le) {
    const int64_t n = local_rows(arrived, le);
    if (n > 0) local[static_cast<size_t>(le)] = Tensor::empty({n, d}, dtype, alloc);
  }
  std::vector<int64_t> filled(static_cast<size_t>(per), 0);
  int64_t at = 0;
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

Tensor MoeLayer::combine(const Tensor& by_local_expert, const std::vector<std::vector<int64_t>>& arrived,
                         const std::vector<int64_t>& sent_rows, DType dtype, int64_t d) const {
  if (!ep_.active()) return by_local_expert;  // packed by local expert = packed by expert
  const int ep = ep_.size;
  const int64_t per = local_experts_;
  // Back to the sources, in the layout they arrived in (source-major, local expert within).
  std::vector<int64_t> send_counts(static_cast<size_t>(ep), 0), recv_counts(static_cast<size_t>(ep), 0);
  int64_t back_rows = 0;
  for (int j = 0; j < ep; ++j) {
    for (int64_t le = 0; le < per; ++le) {
      send_counts[static_cast<size_t>(j)] += arrived[static_cast<size_t>(j)][static_cast<size_t>(le)] * d;
      recv_counts[static_cast<size_t>(j)] += sent_rows[static_cast<size_t>(j * per + le)] * d;
      back_rows += sent_rows[static_cast<size_t>(j * per + le)];
    }
  }
  Allocator& alloc = allocator_of(by_local_expert);
  Tensor out_buf = Tensor::empty({by_local_expert.size(0), d}, dtype, alloc);
  std::vector<int64_t> taken(static_cast<size_t>(per), 0), start(static_cast<size_t>(per), 0);
  for (int64_t le = 1; le < per; ++le)
    start[static_cast<size_t>(le)] = start[static_cast<size_t>(le - 1)] + local_rows(arrived, le - 1);
  int64_t at = 0;
  for (int j = 0; j < ep; ++j)
    for (int64_t le = 0; le < per; ++le) {
      const int64_t n = arrived[static_cast<size_t>(j)][static_cast<size_t>(le)];
      if (n == 0) continue;
      const int64_t from = start[static_cast<size_t>(le)] + taken[static_cast<size_t>(le)];
      Tensor dst = out_buf.slice(0, at, at + n);
      dst.copy_from(by_local_expert.slice(0, from, from + n));
      taken[static_cast<size_t>(le)] += n;
      at += n;
    }
  // What comes back is packed by global expert: sources ascending own experts ascending.
  Tensor in_buf = Tensor::empty({back_rows, d}, dtype, alloc);
  count_sent(send_counts, dtype);
  ep_.group->all_to_all(out_buf, send_counts, in_buf, recv_counts);
  return in_buf;
}

void MoeLayer::forward(const Tensor& x, Tensor& y, MoeSaved& s) const {
  const int64_t rows = x.size(0), d = x.size(1), E = n_experts_, k = top_k_;
  const DType dt = x.dtype();
  Allocator& alloc = allocator_of(x);

  // Router: scores [rows, E]; softmax, top-k and gates in f64.
  Tensor scores = Tensor::empty({rows, E}, dt, alloc);
  router_.forward(x, scores);
  s.probs = Tensor::empty({rows, E}, DType::f64, alloc);
  s.lse = Tensor::empty({rows}, DType::f64, alloc);
  s.expert = Tensor::empty({rows, k}, DType::i32, alloc);
  s.gate = Tensor::empty({rows, k}, DType::f64, alloc);
  ops::moe_route(scores, k, s.probs, s.lse, s.expert, s.gate);

  // Capacity: first choices of every token before second choices, then token order. On a GPU,
  // with a capacity and every expert here, the fixed layout (src/model/moe.h).
  const int64_t capacity =
      capacity_factor_ > 0
          ? static_cast<int64_t>(std::ceil(capacity_factor_ * static_cast<double>(rows * k) /
                                           static_cast<double>(E)))
          : rows * k;
  s.padded = capacity_factor_ > 0 && !ep_.active() && !x.device().is_cpu();
  s.row = Tensor::empty({rows, k}, DType::i32, alloc);
  s.counts = Tensor::empty({2, E}, DType::i64, alloc);
  ops::moe_capacity(s.expert, E, capacity, s.padded ? capacity : 0, s.row, s.counts);
  s.losses = Tensor::empty({2}, DType::f64, alloc);
  ops::moe_routing_losses(s.probs, s.lse, s.counts, k, s.losses);

  if (s.padded) {
    s.block_rows.assign(static_cast<size_t>(E), capacity);
  } else {
    // Packed by load: the forward's one read from the device, the experts' row counts, which size
    // their matrix products (and the all-to-all).
    const Tensor counts = s.counts.to_cpu();
    s.block_rows.assign(counts.data<int64_t>() + E, counts.data<int64_t>() + 2 * E);
  }
  int64_t block_total = 0;
  for (int64_t n : s.block_rows) block_total += n;

  // Each expert's tokens, packed, to the experts' owners; each local expert once on its rows;
  // the outputs back; y = sum over kept choices of gate x expert output.
  Tensor packed = Tensor::empty({block_total, d}, dt, alloc);
  if (s.padded) ops::fill(packed, 0.0);
  ops::moe_dispatch(x, s.row, packed);
  // The counts go first, once: backward moves the same rows the other way.
  s.arrived = exchange_counts(s.block_rows);
  s.local_inputs = dispatch(packed, s.block_rows, s.arrived, dt, d);
  s.local_saved.assign(static_cast<size_t>(local_experts_), MlpSaved{});
  const Tensor local_out =
      packed_by_local_expert(rows_per_local_expert(s.arrived), d, dt, alloc, [&](size_t le, Tensor& out) {
        experts_[le].forward(s.local_inputs[le], out, s.local_saved[le]);
      });
  s.outputs = combine(local_out, s.arrived, s.block_rows, dt, d);
  ops::moe_combine(s.outputs, s.row, s.gate, y);
}

void MoeLayer::backward(const Tensor& dy, const Tensor& x, const MoeSaved& s, double loss_scale,
                        Tensor& dx) const {
  const int64_t rows = x.size(0), d = x.size(1), E = n_experts_, k = top_k_;
  const DType dt = x.dtype();
  Allocator& alloc = allocator_of(x);

  // Through the experts: d(expert input) = expert'(gate x dy), computed by the experts' owners;
  // d gate = dy . expert output. Padding rows get a zero gradient.
  Tensor dout = Tensor::empty(s.outputs.shape(), dt, alloc), dgate = Tensor::empty({rows, k}, DType::f64, alloc);
  if (s.padded) ops::fill(dout, 0.0);
  ops::moe_combine_backward(dy, s.outputs, s.row, s.gate, dout, dgate);
  const std::vector<Tensor> local_dout = dispatch(dout, s.block_rows, s.arrived, dt, d);
  const Tensor local_din =
      packed_by_local_expert(rows_per_local_expert(s.arrived), d, dt, alloc, [&](size_t le, Tensor& grad) {
        experts_[le].backward(local_dout[le], s.local_inputs[le], s.local_saved[le], grad);
      });
  const Tensor din = combine(local_din, s.arrived, s.block_rows, dt, d);
  // Under tp each rank's expert outputs are partial sums: so are its gate gradients.
  if (tp_.active()) tp_.group->all_reduce(dgate, ReduceOp::sum);

  // Gates -> probabilities -> scores, with the auxiliary losses' gradients (kernels/cpu/moe.cpp
  // has the formulas).
  Tensor dscores = Tensor::empty({rows, E}, dt, alloc);
  ops::moe_router_backward(s.probs, s.lse, s.expert, s.gate, dgate, s.counts,
                           {.loss_scale = loss_scale, .aux_coef = aux_coef_, .z_coef = z_coef_}, dscores);
  // Router: its weight gradient on every tp rank (replicated, identical), its input gradient once.
  Tensor dxr = tp_.rank == 0 ? Tensor::empty({rows, d}, dt, alloc) : Tensor();
  router_.backward(x, dscores, dxr);
  ops::moe_dispatch_backward(din, s.row, dxr.defined() ? &dxr : nullptr, dx);
}

}  // namespace strata
