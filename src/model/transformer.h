// The decoder: token embedding (+ learned positions for GPT-2), n_layers blocks, final norm,
// output head (tied to the embedding or its own), and the cross-entropy loss.
#pragma once

#include <functional>
#include <span>
#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "model/parameter.h"
#include "parallel/tensor_parallel.h"

namespace strata {

class Transformer {
 public:
  // Under tensor parallelism (tp.size > 1) blocks split their heads and FFN, the token table and
  // the head split the vocabulary (parallel/tensor_parallel.h), and the loss is combined over tp.
  Transformer(const ModelConfig& config, DType dtype, const TensorParallel& tp = {});
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  ParameterRegistry& params() { return params_; }

  // ids, targets: [batch, seq] (i32/i64). Returns the mean cross-entropy over the targets that are
  // not ignored (>= 0), and keeps what backward needs.
  double forward(const Tensor& ids, const Tensor& targets, Recompute recompute = Recompute::none);
  // Gradient of `scale` x (the mean loss of the last forward), accumulated into the parameters'
  // grads; releases the saved activations.
  void backward(double scale);
  // Logits [batch * seq, vocab] of the last forward (valid until the next forward or backward,
  // which reuse the buffer).
  const Tensor& logits() const { return logits_; }

  // Called during backward each time a group of parameters has its final gradient for this
  // micro-batch: the head and final norm, then each block from the last to the first, then the
  // embeddings (the tied head's table last of all). Data parallelism starts reducing those
  // gradients while backward goes on.
  using GradReadyHook = std::function<void(std::span<Parameter* const> ready)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_ = std::move(hook); }
  // The parameters in the order the hook reports them.
  std::vector<Parameter*> params_in_backward_order() const;

 private:
  ModelConfig config_;
  DType dtype_;
  TensorParallel tp_;
  VocabShard vocab_;  // this rank's rows of the token table and the head
  ParameterRegistry params_;
  Parameter* tokens_ = nullptr;     // embed.tokens.weight [vocab, d_model]
  Parameter* positions_ = nullptr;  // embed.positions.weight [max_seq_len, d_model] (learned)
  Parameter* head_ = nullptr;       // head.weight [vocab, d_model], or tokens_ when tied
  std::vector<Block> blocks_;
  Norm final_norm_;
  // The parameter groups reported to grad_ready_, in backward order: [head + final norm],
  // [layer n-1], ..., [layer 0], [embeddings].
  std::vector<std::vector<Parameter*>> backward_groups_;
  GradReadyHook grad_ready_;
  void report_ready(size_t group) const;

  // Saved by forward for backward.
  Tensor ids_, targets_;
  std::vector<BlockSaved> saved_;
  Tensor xf_, xn_, logits_, lse_;
  Tensor spare_logits_;  // the last backward's dlogits buffer, reused as the next logits
  NormSaved final_saved_;
  int64_t n_valid_ = 0;
};

}  // namespace strata
