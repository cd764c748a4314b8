// The feed-forward block: GPT-2's fc -> tanh-GELU -> proj, or Llama's SwiGLU:
// down(silu(gate(x)) * up(x)). Under tensor parallelism fc/gate/up are column-parallel, proj/down
// row-parallel.
#pragma once

#include "model/config.h"
#include "model/linear.h"
#include "parallel/tensor_parallel.h"

namespace strata {

struct MlpSaved {
  Tensor h;     // gelu: fc output [rows, d_ff]; swiglu: gate output
  Tensor up;    // swiglu: up output [rows, d_ff]
  Tensor act;   // activation output, the input of proj/down [rows, d_ff]
};

class Mlp {
 public:
  Mlp() = default;
  Mlp(ParameterRegistry& registry, const std::string& name, const ModelConfig& config, DType dtype,
      const TensorParallel& tp = {});
  // x, y: [rows, d_model]; y and dx are this rank's partial sums (the block combines them).
  void forward(const Tensor& x, Tensor& y, MlpSaved& saved) const;
  // Weight-only int8 for its linears (Linear::quantize_int8); bytes before and after.
  std::pair<int64_t, int64_t> quantize_int8();
  void backward(const Tensor& dy, const Tensor& x, const MlpSaved& saved, Tensor& dx) const;

 private:
  bool swiglu_ = true;
  int64_t local_ff_ = 0;
  Linear in_, gate_, out_;  // gelu: in_ = fc, out_ = proj; swiglu: in_ = up, gate_, out_ = down
};

}  // namespace strata
