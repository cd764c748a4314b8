// Parameters with their global identity. Every parameter is registered under its global name
// (Hugging Face-like: "layers.3.attn.wq"), its global shape, and its shard spec (which dim is
// split over which process-grid axis, and where this rank's slice starts), so checkpoints,
// conversion, ZeRO and the estimator work on any layer without knowing it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace strata {

struct ShardSpec {
  int dim = -1;              // the split dim of the global tensor; -1: replicated
  std::string axis;          // the process-grid axis it is split over ("tp", "ep")
  int64_t start = 0;         // first index of this rank's slice along `dim`
  bool replicated() const { return dim < 0; }
};

enum class Init : uint8_t {
  normal,  // normal(0, init_std) from Philox(seed, stream_key(name), global element index)
  ones,
  zeros,
};

struct Parameter {
  std::string name;
  Shape global_shape;
  ShardSpec shard;
  Init init = Init::normal;
  double init_std = 0.02;
  bool weight_decay = true;  // false for norms, biases and embeddings
  // Replicated over tp, but each tp rank's backward gives only a partial gradient (kv projections
  // shared by the query heads of several ranks): the gradients are summed over tp after backward.
  bool tp_partial_grad = false;
  // A copy of a parameter that another pipeline stage owns, under the same name: the tied head on
  // the last stage mirrors embed.tokens.weight of the first. The pipeline sums the two copies'
  // gradients so both take the same update; the copy is not counted again in the gradient norm
  // and not written to checkpoints (it is read back from the owner's tensor).
  bool mirror = false;
  // A weight of an expert that lives on one rank of each expert-parallel group: its gradient is
  // reduced over the ranks holding the same experts (ep_dp), not over dp x sp.
  bool expert = false;
  // ZeRO over the data-parallel group (parallel/zero.h): this rank's rows [begin, end) of the
  // local tensor (dim 0; a 1-D parameter's elements), padded to `run` rows in collectives. By stage:
  // 2 and 3 keep the gradient of those rows only, reduced over dp and accumulated over the step
  // (`grad`, f32, or f64 for f64 parameters); 3 also keeps the value of those rows only (`value`),
  // the whole one existing only while a forward or backward uses it.
  struct ZeroRows {
    int64_t begin = 0, end = 0, run = 0;
    Tensor value;
    Tensor grad;
  } zero;
  Shape local;               // this rank's slice's shape (value's, when value is held)
  DType dtype = DType::f32;  // the value's dtype
  Tensor value;              // this rank's slice, in the model's parameter dtype
  Tensor grad;               // same shape and dtype as value; backward accumulates into it
  // For 16-bit parameters, the f32 gradient accumulated over a step's micro-batches: each
  // micro-batch's 16-bit `grad` is added into it (and cleared) as soon as backward finishes it,
  // so accumulation, the data-parallel reduction and the optimizer all work in f32.
  Tensor main_grad;

  const Shape& local_shape() const { return local; }
  // Where this rank's slice starts in the global tensor, per dim (zeros when replicated).
  std::vector<int64_t> global_offset() const {
    std::vector<int64_t> offset(global_shape.size(), 0);
    if (!shard.replicated()) offset[static_cast<size_t>(shard.dim)] = shard.start;
    return offset;
  }
  // The gradient the optimizer sees: ZeRO's row shard when it keeps one (stages 2 and 3), else
  // main_grad when there is one, else grad.
  Tensor& accum() { return zero.grad.defined() ? zero.grad : main_grad.defined() ? main_grad : grad; }

};

// Told by the model which parameters a forward or backward is about to use and when it is done
// with them, so that ZeRO (parallel/zero.h) can hold values and gradients only while they are in
// use. `acquire(group, backward)`: the group's values must be there, and for a backward its
// gradients too (zeroed if they were not held); `prefetch(group)`: the group comes next, start
// bringing it; `release(group)`: done with the group's values.
class ParamGate {
 public:
  virtual ~ParamGate() = default;
  virtual void acquire(std::span<Parameter* const> group, bool backward) = 0;
  virtual void prefetch(std::span<Parameter* const> group) = 0;
  virtual void release(std::span<Parameter* const> group) = 0;
};

// What the registry allocates for each parameter as it is added. ZeRO stages 2 and 3 leave the
// gradients (and stage 3 the values) to be allocated only while backward (or forward) uses them.
struct ParamStorage {
  bool values = true;
  bool grads = true;
  // Where values and gradients live: the run's CudaDevice for a GPU run; nullptr: the CPU.
  Allocator* allocator = nullptr;
};

class ParameterRegistry {
 public:
  explicit ParameterRegistry(ParamStorage storage = {}) : storage_(storage) {}
  // Registers a parameter whose local slice is `global_shape` with shard.dim cut to `local_size`.
  Parameter& add(std::string name, Shape global_shape, ShardSpec shard, int64_t local_size, Init init,
                 double init_std, bool weight_decay, DType dtype);
  Parameter& add_replicated(std::string name, Shape shape, Init init, double init_std,
                            bool weight_decay, DType dtype) {
    return add(std::move(name), shape, {}, 0, init, init_std, weight_decay, dtype);
  }
  Parameter* find(const std::string& name);
  Parameter& get(const std::string& name);  // throws an Error naming the missing parameter
  const std::vector<std::unique_ptr<Parameter>>& all() const { return params_; }
  // Fills every parameter from its initialiser; layout-independent (each element's value depends
  // only on seed, the parameter's name and its global index). A parameter whose value is not held
  // (ZeRO stage 3) has its rows filled: the whole local slice is drawn one parameter at a time.
  void initialize(uint64_t seed);
  // Clears every gradient that is held (grad, main_grad, ZeRO's row shard).
  void zero_grads();
  int64_t local_numel() const;
  const ParamStorage& storage() const { return storage_; }
  // The allocator of the parameters' values and gradients (the CPU's unless storage says otherwise).
  Allocator& allocator() const { return storage_.allocator ? *storage_.allocator : cpu_allocator(); }

 private:
  ParamStorage storage_;  std::vector<std::unique_ptr<Parameter>> params_;
};

// Fills `local` (a slice of a tensor of `global_shape`, starting at `start` along `dim`, or the
// whole tensor when dim < 0) with normal(0, std) values drawn for the global element indices.
void init_normal_slice(Tensor& local, const Shape& global_shape, int dim, int64_t start,
                       uint64_t seed, uint64_t stream, double std);

}  // namespace strata
