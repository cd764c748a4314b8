// A mixture-of-experts feed-forward layer (Shazeer et al. 2017; GShard, Lepikhin et al. 2020;
// Switch, Fedus et al. 2021): a linear router scores each token against n_experts experts,
// softmax turns the scores into probabilities p, each token goes to its top_k experts with the
// gate weights w_j = p_j / sum of its top_k p (renormalised; with top_k = 1, w = p as in Switch,
// since a renormalised single gate is 1 and would give the router no gradient from the loss),
// and the layer's output is sum_j w_j expert_j(x). Experts are the model's MLP (SwiGLU or GELU).
//
// Routing statistics (capacity, f_e, P_e, the z-loss) are per forward over the tokens this rank
// holds: under sequence parallelism each rank's half-sequences form their own group (as GShard's
// groups), so MoE with sp > 1 is not the one-process computation.
//
// Capacity: each expert takes at most C = ceil(capacity_factor * tokens * top_k / n_experts)
// tokens; assignments are filled by choice (every token's first choice before any second choice),
// then by token order, and those past C are dropped: the token gets nothing from that expert
// (its residual carries it on). capacity_factor 0 is dropless.
//
// Layout of the experts' rows: packed by load (each expert's kept rows, back to back), which
// sizes the experts' matrix products from the counts, so the forward reads them from the device
// once; or, on a GPU with a capacity and without expert parallelism, a fixed layout: C rows for
// every expert, the unused ones zero padding, so no shape depends on the routing and a step
// reads nothing from the device until its metrics. Padding rows change no result: they are
// never combined, and their output gradients are zero, so they add nothing to any gradient.
//
// Auxiliary losses, added to the training loss with their coefficients:
//   load balancing (Switch): L_aux = n_experts * sum_e f_e P_e, f_e = share of the token-choices
//     routed to e (before dropping), P_e = mean router probability of e over the tokens;
//   router z-loss (ST-MoE, Zoph et al. 2022): L_z = mean over tokens of logsumexp(scores)^2.
// f_e counts choices, so it carries no gradient; P_e and the scores do.
//
// Under expert parallelism (ep ranks) each rank holds n_experts / ep of the experts (rank i the
// i-th contiguous range) and routes its own tokens: an all-to-all of uneven sizes sends every kept
// token-choice to the rank that owns its expert, the owner runs each of its experts once on the
// tokens of all ranks, and a second all-to-all brings the outputs back; backward does the same
// with the output gradients and the input gradients. Expert weights then hold the gradient of
// every rank's tokens: the trainer reduces them over the ranks holding the same experts.
//
// Under tensor parallelism every expert's MLP is split like the dense one (its output is this
// rank's partial sum, which the block combines over tp); the router is replicated: the gate
// gradients, which need the whole expert outputs, are summed over tp, and the router's input
// gradient is added on tp rank 0 only.
#pragma once

#include <vector>

#include "core/tensor.h"

#include "model/config.h"
#include "model/linear.h"
#include "model/mlp.h"
#include "parallel/tensor_parallel.h"

namespace strata {

// Whether layer `layer` (0-based) has an MoE FFN: every `every`-th layer, the last of each group.
bool is_moe_layer(const ModelConfig& config, int64_t layer);

// What the forwards routed, on the host: counted per expert, before and after capacity.
struct MoeRouting {
  std::vector<int64_t> chosen;  // token-choices per expert, before capacity: [n_experts]
  std::vector<int64_t> load;    // token-choices each expert processed: [n_experts]
  int64_t dropped = 0;          // token-choices past capacity
  double aux_loss = 0;          // L_aux (before its coefficient)
  double z_loss = 0;            // L_z (before its coefficient)
};

// The expert-parallel group (ranks of one dp x sp block that split the experts among them).
struct ExpertParallel {
  Communicator* group = nullptr;  // nullptr for one rank: every expert is local
  int rank = 0;
  int size = 1;
  // When set, every all-to-all of tokens adds the bytes this rank sends to other ranks.
  int64_t* bytes_sent = nullptr;
  bool active() const { return size > 1; }
};

// What forward keeps for backward, on the layer's device (src/model/moe.h's opening comment has
// the math; kernels/ops.h the moe_* ops' layouts). Token-choice c = r * top_k + j.
struct MoeSaved {
  Tensor probs;   // [rows, n_experts] f64: the router's softmax
  Tensor lse;     // [rows] f64: logsumexp of the router scores
  Tensor expert;  // [rows, top_k] i32: the expert of each token-choice
  Tensor gate;    // [rows, top_k] f64: its weight
  Tensor row;     // [rows, top_k] i32: its row in the packed expert blocks, -1 when dropped
  Tensor counts;  // [2, n_experts] i64: token-choices per expert before capacity, then kept
  Tensor losses;  // [2] f64: L_aux and L_z of this forward, before their coefficients
  Tensor outputs; // every expert block's outputs, packed like the inputs (this rank's partial
                  // sum under tp)
  // Rows of each expert's block: its load (read from the device), or in the fixed layout the
  // capacity for every expert (padding included; nothing read).
  std::vector<int64_t> block_rows;
  bool padded = false;  // the fixed layout: the blocks' unused rows are zero padding
  // This rank's own experts (all of them without expert parallelism): their tokens from every
  // rank [m_e, d_model], what their MLP saved, and how many rows came from each rank:
  // arrived[source][local expert].
  std::vector<Tensor> local_inputs;
  std::vector<MlpSaved> local_saved;
  std::vector<std::vector<int64_t>> arrived;
};

class MoeLayer {
 public:
  MoeLayer() = default;
  MoeLayer(ParameterRegistry& registry, const std::string& name, const ModelConfig& config,
           DType dtype, const TensorParallel& tp = {}, const ExpertParallel& ep = {});

  // x: [rows, d_model] -> y: [rows, d_model] (overwritten; this rank's partial sum under tp).
  void forward(const Tensor& x, Tensor& y, MoeSaved& saved) const;
  // dx overwritten (this rank's partial sum under tp). `loss_scale` multiplies the auxiliary
  // losses' gradients, as the backward's loss scale multiplies dy.
  void backward(const Tensor& dy, const Tensor& x, const MoeSaved& saved, double loss_scale,
                Tensor& dx) const;

  double aux_loss_coef() const { return aux_coef_; }
  double z_loss_coef() const { return z_coef_; }

 private:
  int64_t n_experts_ = 0, top_k_ = 1;
  double capacity_factor_ = 0, aux_coef_ = 0, z_coef_ = 0;
  // Rows per global expert this rank sends (sent_rows[e]) -> rows each rank sends to this one:
  // arrived[source][local expert] (one all-to-all of counts; no communication without ep).
  std::vector<std::vector<int64_t>> exchange_counts(const std::vector<int64_t>& sent_rows) const;
  // Rows packed by global expert ([sum of sent_rows, d], expert e's sent_rows[e] rows in order)
  // -> per local expert, its rows from every rank (concatenated by source rank); and the inverse:
  // rows packed by local expert ([sum of arrived, d], local expert le's rows in order, as
  // dispatch gave them) back to their sources, packed by global expert.
  std::vector<Tensor> dispatch(const Tensor& packed, const std::vector<int64_t>& sent_rows,
                               const std::vector<std::vector<int64_t>>& arrived, DType dtype,
                               int64_t d) const;
  Tensor combine(const Tensor& by_local_expert, const std::vector<std::vector<int64_t>>& arrived,
                 const std::vector<int64_t>& sent_rows, DType dtype, int64_t d) const;
  // Rows a local expert holds: sum over sources of arrived[source][le].
  int64_t local_rows(const std::vector<std::vector<int64_t>>& arrived, int64_t le) const;
  std::vector<int64_t> rows_per_local_expert(const std::vector<std::vector<int64_t>>& arrived) const;

  void count_sent(const std::vector<int64_t>& send_counts, DType dtype) const;

  TensorParallel tp_;
  ExpertParallel ep_;
  int64_t first_expert_ = 0, local_experts_ = 0;  // this rank's experts
  Linear router_;  // [n_experts, d_model], no bias
  std::vector<Mlp> experts_;  // the local ones
};

}  // namespace strata
