// ZeRO (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
// Models", SC 2020) over a data-parallel group: the ranks that hold the same parameters each keep
// only their share of the model states.
//
// The share is by rows: every parameter's local tensor is seen as [rows, cols] (dim 0; a 1-D
// parameter as [n, 1]) and its rows are cut into `size` near-equal runs, rank r owning run r:
// rows / size rows each, the first rows % size ranks one more. Collectives pad every run to
// ceil(rows / size) rows (Parameter::zero.run). No size has to divide the group's, the runs are
// plain row slices of a row-major tensor, and checkpoints store them as row ranges of the global
// tensor, so a run saved under one stage or dp size resumes under any other.
//
//   stage 1: the optimizer state (master weights, moments) of its rows only (optim/adamw.h);
//   stage 2: also the gradient of its rows only. Backward hands each gradient over as soon as it is
//            final; ZeroEngine packs arriving gradients into buckets in arrival order and
//            reduce-scatters each bucket over the group, so each rank receives the dp mean of its
//            rows and adds it into its f32 row shard (Parameter::zero.grad). The full gradient of a
//            parameter exists only from its layer's backward until its bucket is packed.
//   stage 3: also the value of its rows only (Parameter::zero.value). The model asks for a
//            layer's parameters just before its forward and its backward (ParamGate); they are
//            all-gathered then, the next layer's gather started while this one computes, and freed
//            when the layer is done.
//
// With optimizer offload the optimizer state and the gradient shards live in host memory and the
// optimizer runs there (optim/adamw.h); with parameter offload (stage 3) the value shards do too.
#pragma once

#include <functional>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "model/parameter.h"

namespace strata {

struct ZeroShard {
  Communicator* group = nullptr;  // nullptr: no sharding (every rank keeps all the state)
  int rank = 0;
  int size = 1;
  int stage = 0;
  // Collectives move at most about this much at once (gradient buckets, the gather of updated
  // parameters), so their buffers stay small next to the model states.
  double bucket_mb = 25.0;
  bool active() const { return group != nullptr && size > 1 && stage > 0; }
};

// A tensor as [rows, cols]: dim 0 by the rest (a 1-D tensor as [n, 1], a scalar as [1, 1]).
Tensor as_rows(const Tensor& t);
int64_t row_count(const Shape& shape);
// The shape of `rows` rows of a tensor of `shape` (dim 0 replaced).
Shape rows_shape(const Shape& shape, int64_t rows);
// Rank r's rows [begin, end) of `rows` rows cut into `size` near-equal runs.
std::pair<int64_t, int64_t> zero_row_range(int64_t rows, int rank, int size);
// Sets p.zero's begin, end and run for this rank (all rows when `zero` is not active).
void assign_rows(Parameter& p, const ZeroShard& zero);

// An all-gather of row runs in flight: each rank gave its run of every parameter (padded to the
// run length, one flat buffer per dtype); wait() puts every rank's runs into the parameters'
// values (as_rows(value)), which must be allocated.
class RowGather {
 public:
  RowGather() = default;
  // `mine(p)`: this rank's rows of p, [zero.end - zero.begin, cols] in p's dtype.
  RowGather(const ZeroShard& zero, std::vector<Parameter*> params,
            const std::function<Tensor(Parameter&)>& mine);
  void wait();
  bool pending() const { return !parts_.empty(); }

 private:
  struct Part {
    std::vector<Parameter*> params;
    Tensor all;
    CommHandle handle;
  };
  int size_ = 1;
  std::vector<Part> parts_;
};

// Stage 2 and 3 gradient reduction and stage 3 parameter residency. Construct after the model
// (whose registry must not hold the gradients, nor under stage 3 the values) and before
// initialising the parameters.
class ZeroEngine final : public ParamGate {
 public:
  // `offload_grads`: the gradient shards in host memory; `offload_params`: the value shards too.
  ZeroEngine(ParameterRegistry& params, const ZeroShard& zero, bool offload_grads, bool offload_params);
  ZeroEngine(const ZeroEngine&) = delete;
  ZeroEngine& operator=(const ZeroEngine&) = delete;

  // ParamGate: values (stage 3) and, for a backward, zeroed gradients of a group; the gather of
  // the group to come; the group's values dropped again (stage 3).
  void acquire(std::span<Parameter* const> group, bool backward) override;
  void prefetch(std::span<Parameter* const> group) override;
  void release(std::span<Parameter* const> group) override;

  // Backward has finished these gradients for the current micro-batch: they join the open bucket
  // (and are freed), which is reduce-scattered once it holds zero.bucket_mb.
  void ready(std::span<Parameter* const> params);
  // Reduces what is left and adds every bucket's result into the gradient shards.
  void finish();

  int stage() const { return zero_.stage; }
  int64_t buckets_reduced() const { return buckets_reduced_; }

 private:
  struct Bucket {
    std::vector<Parameter*> params;
    Tensor flat;  // rank-major: [size][every parameter's run, padded to run rows]
    Tensor mine;  // the reduced run of this rank
    CommHandle handle;
  };
  // Stage 3: the parameters of `group` whose values are not held (each once), and an all-gather of
  // their values into newly allocated ones.
  static std::vector<Parameter*> without_values(std::span<Parameter* const> group);
  RowGather gather_values(const std::vector<Parameter*>& params);
  void launch();                  // the open bucket
  void complete(Bucket& bucket);  // adds its result into the shards and frees it
  void poll();

  static constexpr size_t kMaxInFlight = 2;
  ZeroShard zero_;
  Allocator* device_;  // where the parameters live: whole values and gradients, buckets
  int64_t bucket_limit_ = 0;  // elements
  std::vector<Parameter*> open_;
  int64_t open_elements_ = 0;
  std::vector<Bucket> in_flight_;
  int64_t buckets_reduced_ = 0;
  // Stage 3: how many acquires hold each parameter's value, and gathers started ahead.
  std::unordered_map<Parameter*, int> holders_;
  std::vector<std::pair<std::vector<Parameter*>, RowGather>> prefetched_;
};

}  // namespace strata
