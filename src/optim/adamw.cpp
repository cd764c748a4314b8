#include "optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "kernels/ops.h"

namespace strata {

Tensor AdamW::as_rows(const Tensor& t) {
  const int64_t rows = t.ndim() == 0 ? 1 : t.size(0);
  return t.view({rows, rows == 0 ? 0 : t.numel() / rows});
}

AdamW::AdamW(ParameterRegistry& params, const AdamWHyper& hyper, const ZeroShard& zero)
    : hyper_(hyper), zero_(zero) {
  for (auto& p : params.all()) {
    Slot s{p.get(), Tensor(), Tensor(), Tensor()};
    const DType value = p->value.dtype();
    const DType master = value == DType::f64 ? DType::f64 : DType::f32;
    const Tensor rows = as_rows(p->value);
    s.row_end = rows.size(0);
    if (zero_.active()) {
      s.run_rows = (rows.size(0) + zero_.size - 1) / zero_.size;
      s.row_begin = std::min(rows.size(0), zero_.rank * s.run_rows);
      s.row_end = std::min(rows.size(0), s.row_begin + s.run_rows);
    }
    Shape shape = p->value.shape();
    if (!shape.empty()) shape[0] = s.row_end - s.row_begin;
    const Tensor mine = rows.slice(0, s.row_begin, s.row_end);
    if (value != master) {
      s.master = Tensor::empty(shape, master);
      Tensor master_rows = as_rows(s.master);
      if (mine.numel() > 0) ops::cast(mine, master_rows);
    }
    s.m = Tensor::zeros(shape, master);
    s.v = Tensor::zeros(shape, master);
    slots_.push_back(std::move(s));
  }
}

void AdamW::step(double lr, double grad_scale) {
  ++step_;
  for (Slot& s : slots_) {
    if (s.row_end == s.row_begin) continue;  // ZeRO: no rows of this parameter here
    ops::AdamWArgs args;
    args.lr = lr;
    args.beta1 = hyper_.beta1;
    args.beta2 = hyper_.beta2;
    args.eps = hyper_.eps;
    args.weight_decay = s.param->weight_decay ? hyper_.weight_decay : 0.0;
    args.step = step_;
    args.grad_scale = grad_scale;
    // Rows of a row-major tensor are contiguous: the slices below are plain views.
    const Tensor grad = as_rows(s.param->accum()).slice(0, s.row_begin, s.row_end);
    Tensor value = as_rows(s.param->value).slice(0, s.row_begin, s.row_end);
    Tensor m = as_rows(s.m), v = as_rows(s.v);
    if (s.master.defined()) {
      Tensor master = as_rows(s.master);
      ops::adamw(master, grad, m, v, args);
      ops::cast(master, value);
    } else {
      ops::adamw(value, grad, m, v, args);
    }
  }
  if (zero_.active()) gather_updated();
}

void AdamW::gather_updated() {
  // Parameters grouped by dtype (one flat buffer each); each rank's part: every parameter's run of
  // run_rows rows, its own rows first and zero padding after.
  std::map<DType, std::vector<Slot*>> by_dtype;
  for (Slot& s : slots_) by_dtype[s.param->value.dtype()].push_back(&s);
  for (auto& [dtype, slots] : by_dtype) {
    int64_t part = 0;
    for (const Slot* s : slots) part += s->run_rows * as_rows(s->param->value).size(1);
    Tensor mine = Tensor::zeros({part}, dtype);
    Tensor all = Tensor::empty({part * zero_.size}, dtype);
    int64_t at = 0;
    for (const Slot* s : slots) {
      const Tensor rows = as_rows(s->param->value);
      const int64_t cols = rows.size(1), n = (s->row_end - s->row_begin) * cols;
      if (n > 0) {
        Tensor dst = mine.slice(0, at, at + n);
        dst.copy_from(rows.slice(0, s->row_begin, s->row_end).contiguous().view({n}));
      }
      at += s->run_rows * cols;
    }
    zero_.group->all_gather(mine, all);
    for (int r = 0; r < zero_.size; ++r) {
      at = r * part;
      for (const Slot* s : slots) {
        Tensor rows = as_rows(s->param->value);
        const int64_t cols = rows.size(1), total = rows.size(0);
        const int64_t begin = std::min(total, r * s->run_rows), end = std::min(total, begin + s->run_rows);
        if (end > begin) {
          Tensor dst = rows.slice(0, begin, end);
          dst.copy_from(all.slice(0, at, at + (end - begin) * cols).view({end - begin, cols}));
        }
        at += s->run_rows * cols;
      }
    }
  }
}

std::vector<AdamW::NamedState> AdamW::state() {
  std::vector<NamedState> out;
  for (Slot& s : slots_) {
    if (s.master.defined()) out.push_back({s.param->name + "/master", s.param, &s.master, s.row_begin});
    out.push_back({s.param->name + "/exp_avg", s.param, &s.m, s.row_begin});
    out.push_back({s.param->name + "/exp_avg_sq", s.param, &s.v, s.row_begin});
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
