#include "parallel/zero.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "core/allocator.h"
#include "core/error.h"
#include "kernels/ops.h"

namespace strata {

namespace {

// The gradient shard's dtype: f32, or f64 for f64 parameters (the optimizer's master precision).
DType shard_dtype(DType value) { return value == DType::f64 ? DType::f64 : DType::f32; }

int64_t cols_of(const Parameter& p) {
  const int64_t rows = row_count(p.local);
  return rows == 0 ? 0 : shape_numel(p.local) / rows;
}

MemoryPlace place(bool offloaded) { return offloaded ? MemoryPlace::host : MemoryPlace::device; }


}  // namespace

// rows / size rows each, the first rows % size ranks one more.
std::pair<int64_t, int64_t> zero_row_range(int64_t rows, int r, int size) {
  const int64_t q = rows / size, rem = rows % size;
  const int64_t begin = r * q + std::min<int64_t>(r, rem);
  return {begin, begin + q + (r < rem ? 1 : 0)};
}

int64_t row_count(const Shape& shape) { return shape.empty() ? 1 : shape[0]; }

Tensor as_rows(const Tensor& t) {
  const int64_t rows = row_count(t.shape());
  return t.view({rows, rows == 0 ? 0 : t.numel() / rows});
}

Shape rows_shape(const Shape& shape, int64_t rows) {
  Shape out = shape;
  if (out.empty()) return {rows};
  out[0] = rows;
  return out;
}

void assign_rows(Parameter& p, const ZeroShard& zero) {
  const int64_t rows = row_count(p.local);
  if (!zero.active()) {
    p.zero.begin = 0;
    p.zero.end = p.zero.run = rows;
    return;
  }
  p.zero.run = (rows + zero.size - 1) / zero.size;
  std::tie(p.zero.begin, p.zero.end) = zero_row_range(rows, zero.rank, zero.size);
}

RowGather::RowGather(const ZeroShard& zero, std::vector<Parameter*> params,
                     const std::function<Tensor(Parameter&)>& mine)
    : size_(zero.size) {
  std::map<DType, std::vector<Parameter*>> by_dtype;
  for (Parameter* p : params) by_dtype[p->dtype].push_back(p);
  for (auto& [dtype, group] : by_dtype) {
    int64_t part = 0;
    for (const Parameter* p : group) part += p->zero.run * cols_of(*p);
    Part out;
    out.params = group;
    // Where the rows are (a GPU's memory for a run on one).
    Allocator& where = allocator_of(mine(*group.front()));
    Tensor send = Tensor::zeros({part}, dtype, where);
    int64_t at = 0;
    for (Parameter* p : group) {
      const int64_t n = (p->zero.end - p->zero.begin) * cols_of(*p);
      if (n > 0) {
        Tensor dst = send.slice(0, at, at + n);
        dst.copy_from(mine(*p).contiguous().view({n}));
      }
      at += p->zero.run * cols_of(*p);
    }
    out.all = Tensor::empty({part * zero.size}, dtype, where);
    out.handle = zero.group->all_gather_async(send, out.all);
    parts_.push_back(std::move(out));
  }
}

void RowGather::wait() {
  for (Part& part : parts_) {
    part.handle.wait();
    int64_t at = 0;
    for (int r = 0; r < size_; ++r) {
      for (Parameter* p : part.params) {
        const int64_t cols = cols_of(*p);
        const auto [begin, end] = zero_row_range(row_count(p->local), r, size_);
        if (end > begin) {
          Tensor dst = as_rows(p->value).slice(0, begin, end);
          dst.copy_from(part.all.slice(0, at, at + (end - begin) * cols).view({end - begin, cols}));
        }
        at += p->zero.run * cols;
      }
    }
  }
  parts_.clear();
}

ZeroEngine::ZeroEngine(ParameterRegistry& params, const ZeroShard& zero, bool offload_grads,
                       bool offload_params)
    : zero_(zero), device_(&params.allocator()) {
  STRATA_CHECK(zero.active() && zero.stage >= 2, "ZeroEngine: needs stage 2 or 3 over a group of "
               "more than one rank");
  bucket_limit_ = std::max<int64_t>(1, static_cast<int64_t>(zero.bucket_mb * 1024 * 1024 / 4));
  for (auto& p : params.all()) {
    assign_rows(*p, zero);
    const Shape shape = rows_shape(p->local, p->zero.end - p->zero.begin);
    p->grad = Tensor();
    p->main_grad = Tensor();
    // The shards on the parameters' device (a GPU on a CUDA run), or offloaded to host memory.
    {
      MemoryScope scope(MemoryKind::grads, place(offload_grads));
      p->zero.grad = Tensor::zeros(shape, shard_dtype(p->dtype), offload_grads ? cpu_allocator() : *device_);
    }
    if (zero.stage == 3) {
      MemoryScope scope(MemoryKind::params, place(offload_params));
      p->value = Tensor();
      p->zero.value = Tensor::zeros(shape, p->dtype, offload_params ? cpu_allocator() : *device_);
    }
  }
}

std::vector<Parameter*> ZeroEngine::without_values(std::span<Parameter* const> group) {
  std::vector<Parameter*> missing;
  for (Parameter* p : group)
    if (!p->value.defined() && std::find(missing.begin(), missing.end(), p) == missing.end())
      missing.push_back(p);
  return missing;
}

RowGather ZeroEngine::gather_values(const std::vector<Parameter*>& params) {
  {
    MemoryScope scope(MemoryKind::params);
    for (Parameter* p : params) p->value = Tensor::empty(p->local, p->dtype, *device_);
  }
  return RowGather(zero_, params, [](Parameter& p) { return as_rows(p.zero.value); });
}

void ZeroEngine::acquire(std::span<Parameter* const> group, bool backward) {
  if (zero_.stage == 3) {
    // Gathers started ahead for any of these parameters finish first; the rest are gathered now.
    for (auto it = prefetched_.begin(); it != prefetched_.end();) {
      const bool wanted = std::any_of(it->first.begin(), it->first.end(), [&](Parameter* p) {
        return std::find(group.begin(), group.end(), p) != group.end();
      });
      if (wanted) {
        it->second.wait();
        it = prefetched_.erase(it);
      } else {
        ++it;
      }
    }
    std::vector<Parameter*> missing = without_values(group);
    if (!missing.empty()) gather_values(missing).wait();
    for (Parameter* p : group) ++holders_[p];
  }
  if (backward) {
    // A gradient still waiting in the open bucket is the last micro-batch's: the bucket goes now,
    // so this backward starts from zero.
    for (Parameter* p : group)
      if (p->grad.defined() && std::find(open_.begin(), open_.end(), p) != open_.end()) {
        launch();
        break;
      }
    MemoryScope scope(MemoryKind::grads);
    for (Parameter* p : group)
      if (!p->grad.defined()) p->grad = Tensor::zeros(p->local, p->dtype, *device_);
  }
}

void ZeroEngine::prefetch(std::span<Parameter* const> group) {
  if (zero_.stage != 3) return;
  std::vector<Parameter*> missing = without_values(group);
  if (missing.empty()) return;
  RowGather gather = gather_values(missing);
  prefetched_.emplace_back(std::move(missing), std::move(gather));
}

void ZeroEngine::release(std::span<Parameter* const> group) {
  if (zero_.stage != 3) return;
  for (Parameter* p : group) {
    auto it = holders_.find(p);
    STRATA_CHECK(it != holders_.end() && it->second > 0, "ZeRO-3: parameter '", p->name,
                 "' released more often than acquired");
    if (--it->second == 0) {
      holders_.erase(it);
      p->value = Tensor();
    }
  }
  poll();
}

void ZeroEngine::ready(std::span<Parameter* const> params) {
  for (Parameter* p : params) {
    STRATA_CHECK(p->grad.defined(), "ZeRO: parameter '", p->name, "' reported ready without a gradient");
    if (!open_.empty() && shard_dtype(open_.front()->dtype) != shard_dtype(p->dtype)) launch();
    open_.push_back(p);
    open_elements_ += zero_.size * p->zero.run * cols_of(*p);
    if (open_elements_ >= bucket_limit_) launch();
  }
  poll();
}

void ZeroEngine::launch() {
  if (open_.empty()) return;
  Bucket b;
  b.params = std::move(open_);
  open_.clear();
  open_elements_ = 0;
  const DType dtype = shard_dtype(b.params.front()->dtype);
  int64_t part = 0;
  for (const Parameter* p : b.params) part += p->zero.run * cols_of(*p);
  {
    MemoryScope scope(MemoryKind::grads);
    b.flat = Tensor::zeros({part * zero_.size}, dtype, *device_);
    b.mine = Tensor::empty({part}, dtype, *device_);
  }
  // Rank r's segment holds every parameter's run r, so the reduce-scatter leaves each rank the
  // reduced rows it owns.
  int64_t at = 0;
  for (int r = 0; r < zero_.size; ++r) {
    for (Parameter* p : b.params) {
      const int64_t cols = cols_of(*p);
      const auto [begin, end] = zero_row_range(row_count(p->local), r, zero_.size);
      if (end > begin) {
        Tensor dst = b.flat.slice(0, at, at + (end - begin) * cols).view({end - begin, cols});
        ops::cast(as_rows(p->grad).slice(0, begin, end), dst);
      }
      at += p->zero.run * cols;
    }
  }
  for (Parameter* p : b.params) p->grad = Tensor();
  // At most kMaxInFlight buckets at once: a backward that outruns the network waits here instead
  // of holding every gradient of the step in buckets.
  while (in_flight_.size() >= kMaxInFlight) {
    complete(in_flight_.front());
    in_flight_.erase(in_flight_.begin());
  }
  b.handle = zero_.group->reduce_scatter_async(b.flat, b.mine, ReduceOp::avg);
  in_flight_.push_back(std::move(b));
}

void ZeroEngine::complete(Bucket& b) {
  b.handle.wait();
  int64_t at = 0;
  for (Parameter* p : b.params) {
    const int64_t n = (p->zero.end - p->zero.begin) * cols_of(*p);
    if (n > 0) {
      Tensor shard = as_rows(p->zero.grad);
      // (Through a copy where the shard is when it is offloaded to the host.)
      ops::axpy(1.0, b.mine.slice(0, at, at + n).view(shard.shape()).placed(allocator_of(shard)), shard);
    }
    at += p->zero.run * cols_of(*p);
  }
  ++buckets_reduced_;
  b = Bucket{};
}

void ZeroEngine::poll() {
  // In launch order, so every shard adds its micro-batches' parts in the same order on every run.
  while (!in_flight_.empty() && in_flight_.front().handle.is_done()) {
    complete(in_flight_.front());
    in_flight_.erase(in_flight_.begin());
  }
}

void ZeroEngine::finish() {
  launch();
  for (Bucket& b : in_flight_) complete(b);
  in_flight_.clear();
  STRATA_CHECK(prefetched_.empty() && holders_.empty(), "ZeRO-3: ", prefetched_.size(),
               " prefetched groups and ", holders_.size(), " held parameters left at the end of a step");
}

}  // namespace strata
