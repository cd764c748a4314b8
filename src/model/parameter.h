// Parameters with their global identity. Every parameter is registered under its global name
// (Hugging Face-like: "layers.3.attn.wq"), its global shape, and its shard spec (which dim is
// split over which process-grid axis, and where this rank's slice starts), so checkpoints,
// conversion, ZeRO and the estimator work on any layer without knowing it.
#pragma once

#include <cstdint>
#include <memory>
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
  Tensor value;              // this rank's slice, in the model's parameter dtype
  Tensor grad;               // same shape and dtype as value; backward accumulates into it
  // For 16-bit parameters, the f32 gradient accumulated over a step's micro-batches: each
  // micro-batch's 16-bit `grad` is added into it (and cleared) as soon as backward finishes it,
  // so accumulation, the data-parallel reduction and the optimizer all work in f32.
  Tensor main_grad;

  Shape local_shape() const { return value.shape(); }
  // The gradient the optimizer sees: main_grad when there is one, else grad.
  Tensor& accum() { return main_grad.defined() ? main_grad : grad; }
};

class ParameterRegistry {
 public:
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
  // only on seed, the parameter's name and its global index).
  void initialize(uint64_t seed);
  void zero_grads();
  int64_t local_numel() const;

 private:
  std::vector<std::unique_ptr<Parameter>> params_;
};

// Fills `local` (a slice of a tensor of `global_shape`, starting at `start` along `dim`, or the
// whole tensor when dim < 0) with normal(0, std) values drawn for the global element indices.
void init_normal_slice(Tensor& local, const Shape& global_shape, int dim, int64_t start,
                       uint64_t seed, uint64_t stream, double std);

}  // namespace strata
