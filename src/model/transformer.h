// The decoder: token embedding (+ learned positions for GPT-2), n_layers blocks, final norm,
// output head (tied to the embedding or its own), and the cross-entropy loss.
//
// Under pipeline parallelism a rank holds only some of it: one or more model chunks, each a
// contiguous range of layers, the first chunk of the whole model with the embedding and the last
// with the final norm, head and loss. Each chunk runs forward and backward on its own, for any
// number of micro-batches in flight, each with its own ChunkActivations. With one chunk holding
// everything (the default), forward()/backward() run the whole model for one micro-batch.
#pragma once

#include <functional>
#include <map>
#include <span>
#include <vector>

#include "model/block.h"
#include "model/config.h"
#include "model/parameter.h"
#include "parallel/tensor_parallel.h"

namespace strata {

// Layers [first_layer, end_layer) (global indices), and whether the chunk starts the model (the
// embedding) and ends it (final norm, head, loss).
struct ChunkSpec {
  int64_t first_layer = 0, end_layer = 0;
  bool embedding = false, head = false;
};

// What a chunk's forward keeps for its backward, for one micro-batch.
struct ChunkActivations {
  Tensor ids, targets;  // [batch, seq]
  std::vector<BlockSaved> blocks;
  Tensor xf, xn, logits, lse;  // the head chunk's: last block output, normed rows, logits, lse
  NormSaved final_saved;
  int64_t n_valid = 0;  // targets that count (>= 0)
  bool live = false;    // forward ran and backward has not yet released it
};

// Keys and values of every layer for `batch` sequences of up to `max_len` tokens, this rank's kv
// heads only (GQA stores kv heads, not query heads).
struct KvCache {
  int64_t batch = 0, max_len = 0;
  std::vector<Tensor> k, v;  // per layer: [batch, max_len, local kv heads, head_dim]
  int64_t bytes() const;
};

// New tokens of one sequence in an inference forward: `n` tokens at positions [start, start + n)
// of cache sequence `sequence`.
struct CacheSegment {
  int64_t sequence = 0, n = 0, start = 0;
};

class Transformer {
 public:
  // Under tensor parallelism (tp.size > 1) blocks split their heads and FFN, the token table and
  // the head split the vocabulary (parallel/tensor_parallel.h), and the loss is combined over tp.
  // `chunks`: this rank's model chunks in order (empty: one chunk with the whole model).
  // Under sequence parallelism (sp.size > 1) every [batch, seq] input holds this rank's two zigzag
  // chunks of each sequence (parallel/ring_attention.h): positions are the global ones and
  // attention rings over the sp group.
  // `storage`: what the registry allocates up front (ZeRO stages 2 and 3 leave gradients, and
  // values, to their ParamGate).
  Transformer(const ModelConfig& config, DType dtype, const TensorParallel& tp = {},
              std::vector<ChunkSpec> chunks = {}, const SequenceParallel& sp = {},
              const ExpertParallel& ep = {}, ParamStorage storage = {});
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return config_; }
  DType dtype() const { return dtype_; }
  ParameterRegistry& params() { return params_; }
  const std::vector<ChunkSpec>& chunks() const { return chunks_; }
  const SequenceParallel& sequence_parallel() const { return sp_; }
  // The shape of the activation between two chunks for a [batch, seq] micro-batch: [rows, d_model]
  // with rows = batch * seq, or this rank's batch * seq / tp under sequence parallelism.
  Shape activation_shape(int64_t batch, int64_t seq) const {
    return {tp_.splits_rows() ? batch * seq / tp_.size : batch * seq, config_.d_model};
  }

  // The whole model, one micro-batch (one chunk holding everything). ids, targets: [batch, seq]
  // (i32/i64). Returns the mean cross-entropy over the targets that are not ignored (>= 0), and
  // keeps what backward needs.
  double forward(const Tensor& ids, const Tensor& targets, Recompute recompute = Recompute::none);
  // Gradient of `scale` x (the mean loss of the last forward), accumulated into the parameters'
  // grads; releases the saved activations.
  void backward(double scale);
  // Logits [batch * seq, vocab] of the last forward() (valid until the next forward or backward,
  // which reuse the buffer).
  const Tensor& logits() const { return whole_.logits; }
  // Where the mean loss of each forward goes instead of forward's return value (which is then 0):
  // acc += loss, acc a one-element f64 tensor on the model's device. On a GPU this keeps the loss
  // on the device, so a step reads it once rather than once per micro-batch. nullptr: returned.
  void set_loss_sink(Tensor* acc) { loss_sink_ = acc; }
  // The MoE auxiliary losses (with their coefficients) of the last forward(); 0 without MoE.
  // Part of the training objective (the loss forward returns is the cross-entropy alone); kept
  // on the model's device, so this reads it.
  double aux_loss() const;

  // What the MoE layers routed in the forwards since clear_routing_log(), summed over them: per
  // MoE layer that routed (by global index), token-choices per expert before and after capacity,
  // drops, and the auxiliary losses (before their coefficients). The sums stay on the model's
  // device; this reads them, once.
  std::map<int64_t, MoeRouting> routing_log() const;
  void clear_routing_log();
  // The same from the sums themselves (undefined without MoE or before the first forward), for a
  // caller that reads them together with other results: routing_log_of(its CPU copy).
  const Tensor& routing_sums() const { return routing_sums_; }
  std::map<int64_t, MoeRouting> routing_log_of(const Tensor& sums) const;
  // The auxiliary losses of a routing log with their coefficients (the training objective's part).
  double weighted_aux_loss(const std::map<int64_t, MoeRouting>& log) const;

  // One chunk, one micro-batch. ids, targets: [batch, seq] (the embedding chunk reads ids, the head
  // chunk targets; both are kept). x: the chunk's input [rows, d_model] (this rank's rows under
  // sequence parallelism) from the previous chunk; ignored by the embedding chunk. Returns the
  // chunk's output [rows, d_model], or for the head chunk an empty tensor with the mean loss in
  // *loss.
  Tensor forward_chunk(size_t chunk, const Tensor& ids, const Tensor& targets, const Tensor& x,
                       ChunkActivations& saved, Recompute recompute, double* loss = nullptr);
  // dy: the gradient of the chunk's output (the head chunk ignores it and starts from `scale` x
  // its mean loss). Accumulates parameter gradients, releases `saved`, and returns the gradient of
  // the chunk's input (an empty tensor for the embedding chunk).
  Tensor backward_chunk(size_t chunk, const Tensor& dy, double scale, ChunkActivations& saved);

  // Called during backward each time a group of parameters has its final gradient for this
  // micro-batch: the head and final norm, then each block from the last to the first, then the
  // embeddings (the tied head's table last of all). Data parallelism starts reducing those
  // gradients while backward goes on.
  using GradReadyHook = std::function<void(std::span<Parameter* const> ready)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_ = std::move(hook); }
  // Inference (one chunk holding the whole model): a cache for `batch` sequences of `max_len`
  // tokens, and a forward of new tokens through it. ids: [rows], the segments' tokens back to
  // back. Keys and values of the new tokens are written into the cache; each query sees its own
  // sequence's cache up to itself. Returns logits over the whole vocabulary (gathered over tp), in
  // the model's dtype: [rows, vocab], or [segments, vocab] for each segment's last token only.
  KvCache make_kv_cache(int64_t batch, int64_t max_len) const;
  // Weight-only int8 for every block's linears (the embeddings and the head stay in the model's
  // dtype); the weights' bytes before and after. Forward only afterwards.
  std::pair<int64_t, int64_t> quantize_int8();
  Tensor forward_cached(const Tensor& ids, std::span<const CacheSegment> segments, KvCache& cache,
                        bool last_only) const;

  // The parameters in the order the hook reports them (chunks from the last to the first).
  std::vector<Parameter*> params_in_backward_order() const;
  // Told, around every group of parameters a forward or backward uses (the embeddings, each layer,
  // the final norm with the head), that the group is about to be used and when it is done.
  void set_param_gate(ParamGate* gate) { gate_ = gate; }

 private:
  // The parameters of one chunk, grouped by when its backward finishes them: [head + final norm],
  // [its last layer], ..., [its first layer], [embeddings]; groups may be absent.
  struct ChunkGroups {
    std::vector<Parameter*> top;
    std::vector<std::vector<Parameter*>> layers;  // by layer, first to last
    std::vector<Parameter*> embed;
    std::vector<Parameter*> top_use;  // what the head's forward and backward read: top + a tied table
  };
  void report_ready(std::span<Parameter* const> group) const;
  // The gate's acquire (and the prefetch of `next`) and release, when there is a gate.
  void open_group(std::span<Parameter* const> group, std::span<Parameter* const> next, bool backward) const;
  void close_group(std::span<Parameter* const> group) const;
  std::vector<Parameter*> registered_since(size_t first) const;
  // The allocator of activations and scratch: the parameters' (the CPU's or a CUDA device).
  Allocator& device() const { return params_.allocator(); }

  ModelConfig config_;
  DType dtype_;
  TensorParallel tp_;
  SequenceParallel sp_;
  std::vector<ChunkSpec> chunks_;
  VocabShard vocab_;  // this rank's rows of the token table and the head
  ParameterRegistry params_;
  Tensor* loss_sink_ = nullptr;
  Parameter* tokens_ = nullptr;     // embed.tokens.weight [vocab, d_model] (embedding chunk)
  Parameter* positions_ = nullptr;  // embed.positions.weight [max_seq_len, d_model] (learned)
  // head.weight [vocab, d_model]; tokens_ when tied on the same rank, or a mirror of
  // embed.tokens.weight when tied and the embedding is on another pipeline stage.
  Parameter* head_ = nullptr;
  std::vector<Block> blocks_;  // this rank's layers, in order; block i is layer layer_of_[i]
  std::vector<int64_t> layer_of_;
  std::vector<size_t> chunk_first_block_;  // index into blocks_ of each chunk's first layer
  Norm final_norm_;
  std::vector<ChunkGroups> groups_;
  GradReadyHook grad_ready_;
  ParamGate* gate_ = nullptr;

  // The rows of the position table a [seq]-long local sequence uses, as (first table row, local
  // row, count) runs: one run, or two under sequence parallelism.
  struct PositionRun {
    int64_t table_row, local_row, count;
  };
  std::vector<PositionRun> position_runs(int64_t seq) const;

  ChunkActivations whole_;
  // On the device, per MoE layer here (row moe_row_[block], layer moe_layers_[row]), its counts
  // and losses [MoE layers, 2 n_experts + 2] f64 (ops::moe_routing_accumulate's layout): summed
  // since clear_routing_log(), and of the last forward() alone.
  Tensor routing_sums_, last_routing_;
  std::vector<int64_t> moe_row_, moe_layers_;
  static void accumulate_routing(const MoeSaved& s, int64_t row, Tensor& sums);
  Tensor spare_logits_;     // the last backward's dlogits buffer, reused as the next logits
};

}  // namespace strata
