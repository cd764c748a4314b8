#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "core/allocator.h"
#include "kernels/ops.h"

namespace strata {

namespace {

// The master's values rounded into the parameter's rows, which may be on the GPU while an
// offloaded master is on the host: then rounded on the host and copied up.
void round_into(const Tensor& master, Tensor& value) {
  if (master.device() == value.device()) {
    ops::cast(master, value);
    return;
  }
  Tensor rounded = Tensor::empty(value.shape(), value.dtype(), allocator_of(master));
  ops::cast(master, rounded);
  value.copy_from(rounded);
}

}  // namespace

Tensor AdamW::value_rows(Parameter& p) {
  if (p.zero.value.defined()) return as_rows(p.zero.value);  // ZeRO-3: the rows are all there is
  return as_rows(p.value).slice(0, p.zero.begin, p.zero.end);
}

Tensor AdamW::grad_rows(Parameter& p) {
  if (p.zero.grad.defined()) return as_rows(p.zero.grad);  // ZeRO-2/3: reduced rows only
  return as_rows(p.accum()).slice(0, p.zero.begin, p.zero.end);
}

AdamW::AdamW(ParameterRegistry& params, const AdamWHyper& hyper, const ZeroShard& zero, bool offload)
    : hyper_(hyper), zero_(zero), offload_(offload) {
  const MemoryScope scope(MemoryKind::optimizer, offload ? MemoryPlace::host : MemoryPlace::device);
  // The state lives with the parameters (on their GPU when they are on one), or on the host.
  Allocator& alloc = offload ? cpu_allocator() : params.allocator();
  for (auto& p : params.all()) {
    assign_rows(*p, zero_);
    Slot s{p.get(), Tensor(), Tensor(), Tensor()};
    const DType master = p->dtype == DType::f64 ? DType::f64 : DType::f32;
    const Shape shape = rows_shape(p->local, p->zero.end - p->zero.begin);
    if (p->dtype != master || offload) {
      s.copied_master = p->dtype == master;
      s.master = Tensor::empty(shape, master, alloc);
      Tensor master_rows = as_rows(s.master);
      if (master_rows.numel() > 0) ops::cast(value_rows(*p).placed(alloc), master_rows);
    }
    s.m = Tensor::zeros(shape, master, alloc);
    s.v = Tensor::zeros(shape, master, alloc);
    slots_.push_back(std::move(s));
  }
}

void AdamW::step_on_device(double lr, const Tensor& grad_scale, const Tensor& skip) {
  STRATA_CHECK(!offload_, "AdamW::step_on_device: not with the optimizer offloaded (its state is "
               "on the host)");
  std::vector<ops::AdamWGroup> tensors;
  for (Slot& s : slots_) {
    Parameter& p = *s.param;
    if (p.zero.end == p.zero.begin) continue;  // ZeRO: no rows of this parameter here
    ops::AdamWGroup g;
    g.grad = grad_rows(p);
    g.m = as_rows(s.m);
    g.v = as_rows(s.v);
    // A 16-bit parameter gets its rounded copy of the updated master in the same pass.
    g.param = s.master.defined() ? as_rows(s.master) : value_rows(p);
    if (s.master.defined()) g.copy = value_rows(p);
    g.weight_decay = p.weight_decay;
    tensors.push_back(std::move(g));
  }
  ops::AdamWArgs args;
  args.lr = lr;
  args.beta1 = hyper_.beta1;
  args.beta2 = hyper_.beta2;
  args.eps = hyper_.eps;
  args.weight_decay = hyper_.weight_decay;
  args.step = step_ + 1;
  ops::adamw_multi(tensors, args, grad_scale, skip);
  if (zero_.active() && zero_.stage <= 2) gather_updated_rows();
}

void AdamW::step(double lr, double grad_scale) {
  ++step_;
  for (Slot& s : slots_) {
    Parameter& p = *s.param;
    if (p.zero.end == p.zero.begin) continue;  // ZeRO: no rows of this parameter here
    ops::AdamWArgs args;
    args.lr = lr;
    args.beta1 = hyper_.beta1;
    args.beta2 = hyper_.beta2;
    args.eps = hyper_.eps;
    args.weight_decay = p.weight_decay ? hyper_.weight_decay : 0.0;
    args.step = step_;
    args.grad_scale = grad_scale;
    // Rows of a row-major tensor are contiguous: the slices below are plain views.
    Tensor grad = grad_rows(p);
    Tensor value = value_rows(p);
    Tensor m = as_rows(s.m), v = as_rows(s.v);
    if (offload_ && !p.zero.grad.defined()) {
      // The gradient rows' host copy (ZeRO-2/3 shards are already kept on the host).
      const MemoryScope scope(MemoryKind::grads, MemoryPlace::host);
      Tensor host = Tensor::empty(grad.shape(), grad.dtype());
      host.copy_from(grad);
      grad = host;
    }
    if (s.master.defined()) {
      Tensor master = as_rows(s.master);
      ops::adamw(master, grad, m, v, args);
      round_into(master, value);
    } else {
      ops::adamw(value, grad, m, v, args);
    }
  }
  if (zero_.active() && zero_.stage <= 2) gather_updated_rows();
}

void AdamW::gather_updated_rows() {
  const double limit = zero_.bucket_mb * 1024 * 1024;
  std::vector<Parameter*> batch;
  double bytes = 0;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Parameter& p = *slots_[i].param;
    batch.push_back(&p);
    bytes += static_cast<double>(zero_.size * p.zero.run) *
             static_cast<double>(shape_numel(p.local) / std::max<int64_t>(1, row_count(p.local))) *
             static_cast<double>(dtype_size(p.dtype));
    if (bytes >= limit || i + 1 == slots_.size()) {
      RowGather(zero_, batch, [](Parameter& q) { return value_rows(q); }).wait();
      batch.clear();
      bytes = 0;
    }
  }
}

void AdamW::refresh_masters(bool copied_only) {
  for (Slot& s : slots_) {
    if (s.master.numel() == 0 || (copied_only && !s.copied_master)) continue;
    Tensor master = as_rows(s.master);
    ops::cast(value_rows(*s.param).placed(allocator_of(master)), master);
  }
}

std::vector<AdamW::NamedState> AdamW::state() {
  std::vector<NamedState> out;
  for (Slot& s : slots_) {
    const int64_t rows = s.param->zero.begin;
    if (s.master.defined() && !s.copied_master) out.push_back({s.param->name + "/master", s.param, &s.master, rows});
    out.push_back({s.param->name + "/exp_avg", s.param, &s.m, rows});
    out.push_back({s.param->name + "/exp_avg_sq", s.param, &s.v, rows});
  }
  return out;
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const Slot& s : slots_)
    for (const Tensor* t : {&s.master, &s.m, &s.v})
      if (t->defined()) bytes += static_cast<int64_t>(t->nbytes());
  return bytes;
}

double grad_norm(ParameterRegistry& params) {
  double sum = 0;
  for (auto& p : params.all()) sum += ops::sum_squares(p->accum());
  return std::sqrt(sum);
}

}  // namespace strata
