#include "model/parameter.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <utility>
#include <vector>

#include "core/allocator.h"
#include "core/philox.h"
#include "core/random.h"
#include "kernels/ops.h"

namespace strata {

Parameter& ParameterRegistry::add(std::string name, Shape global_shape, ShardSpec shard,
                                  int64_t local_size, Init init, double init_std, bool weight_decay,
                                  DType dtype) {
  STRATA_CHECK(find(name) == nullptr, "parameter '", name, "' registered twice");
  Shape local = global_shape;
  if (!shard.replicated()) {
    STRATA_CHECK(shard.dim < static_cast<int>(global_shape.size()), "parameter '", name,
                 "': shard dim ", shard.dim, " out of range for ", shape_string(global_shape));
    const auto d = static_cast<size_t>(shard.dim);
    STRATA_CHECK(shard.start >= 0 && local_size > 0 && shard.start + local_size <= global_shape[d],
                 "parameter '", name, "': slice [", shard.start, ", ", shard.start + local_size,
                 ") of dim ", shard.dim, " exceeds ", shape_string(global_shape));
    local[d] = local_size;
  }
  auto p = std::make_unique<Parameter>();
  p->name = std::move(name);
  p->global_shape = std::move(global_shape);
  p->shard = std::move(shard);
  p->init = init;
  p->init_std = init_std;
  p->weight_decay = weight_decay;
  p->local = local;
  p->dtype = dtype;
  if (storage_.values) {
    MemoryScope scope(MemoryKind::params);
    p->value = Tensor::zeros(local, dtype, allocator());
  }
  if (storage_.grads) {
    MemoryScope scope(MemoryKind::grads);
    p->grad = Tensor::zeros(local, dtype, allocator());
    if (dtype == DType::bf16 || dtype == DType::f16) p->main_grad = Tensor::zeros(local, DType::f32, allocator());
  }
  params_.push_back(std::move(p));
  return *params_.back();
}

Parameter* ParameterRegistry::find(const std::string& name) {
  for (auto& p : params_)
    if (p->name == name) return p.get();
  return nullptr;
}

Parameter& ParameterRegistry::get(const std::string& name) {
  Parameter* p = find(name);
  STRATA_CHECK(p != nullptr, "no parameter named '", name, "'");
  return *p;
}

void ParameterRegistry::initialize(uint64_t seed) {
  for (auto& p : params_) {
    // Values are drawn on the host (the Philox streams are a CPU routine) and copied to a device.
    const bool on_host = p->value.defined() && p->value.device().is_cpu();
    Tensor value = on_host ? p->value : Tensor::empty(p->local, p->dtype);
    switch (p->init) {
      case Init::normal:
        init_normal_slice(value, p->global_shape, p->shard.dim, p->shard.start, seed,
                          philox::stream_key(p->name), p->init_std);
        break;
      case Init::ones: fill(value, 1.0); break;
      case Init::zeros: fill(value, 0.0); break;
    }
    if (p->value.defined() && !on_host) p->value.copy_from(value);
    if (!p->value.defined() && p->zero.value.defined() && p->zero.end > p->zero.begin) {
      const int64_t rows = p->local.empty() ? 1 : p->local[0];
      p->zero.value.copy_from(value.view({rows, value.numel() / rows}).slice(0, p->zero.begin, p->zero.end)
                                  .view(p->zero.value.shape()));
    }
  }
}

void ParameterRegistry::zero_grads() {
  // +0.0 is all zero bits in every floating dtype, so the gradients are cleared with memset, in
  // pieces of at most 1 MiB spread over the OpenMP threads: one pass at memory bandwidth, where
  // fill() converts element by element on one core (GPT-2 124M: 0.5 GB of gradients every step).
  constexpr size_t kPiece = size_t{1} << 20;
  std::vector<std::pair<std::byte*, size_t>> pieces;
  auto add = [&](Tensor& t) {
    if (t.device().is_cuda()) return t.set_zero();  // a memset on the device's stream
    STRATA_CHECK(t.is_contiguous(), "zero_grads: needs contiguous gradients, got ", t.describe());
    auto* data = static_cast<std::byte*>(t.raw());
    for (size_t at = 0; at < t.nbytes(); at += kPiece)
      pieces.emplace_back(data + at, std::min(kPiece, t.nbytes() - at));
  };
  for (auto& p : params_)
    for (Tensor* t : {&p->grad, &p->main_grad, &p->zero.grad})
      if (t->defined()) add(*t);
  const auto n = static_cast<int64_t>(pieces.size());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    std::memset(pieces[static_cast<size_t>(i)].first, 0, pieces[static_cast<size_t>(i)].second);
}

int64_t ParameterRegistry::local_numel() const {
  int64_t n = 0;
  for (const auto& p : params_) n += shape_numel(p->local);
  return n;
}

void init_normal_slice(Tensor& local, const Shape& global_shape, int dim, int64_t start,
                       uint64_t seed, uint64_t stream, double std) {
  if (dim < 0) {
    fill_normal(local, seed, stream, 0.0, std);
    return;
  }
  // The slice is [outer, local_d, inner] inside the global [outer, global_d, inner]: each run of
  // `inner` contiguous elements starts at a known global index, and is drawn with fill_normal's
  // first_index so every element gets exactly its global value.
  const auto d = static_cast<size_t>(dim);
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < d; ++i) outer *= global_shape[i];
  for (size_t i = d + 1; i < global_shape.size(); ++i) inner *= global_shape[i];
  const int64_t global_d = global_shape[d], local_d = local.size(dim);
  Tensor flat = local.view({outer * local_d, inner});
  for (int64_t o = 0; o < outer; ++o) {
    Tensor rows = flat.slice(0, o * local_d, (o + 1) * local_d).view({local_d * inner});
    fill_normal(rows, seed, stream, 0.0, std,
                static_cast<uint64_t>((o * global_d + start) * inner));
  }
}

}  // namespace strata
