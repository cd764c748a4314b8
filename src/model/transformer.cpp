#include "model/transformer.h"

#include "core/random.h"
#include "kernels/ops.h"

namespace strata {

Transformer::Transformer(const ModelConfig& config, DType dtype, const TensorParallel& tp)
    : config_(config), dtype_(dtype), tp_(tp) {
  const int64_t d = config.d_model;
  check_attention_layout(config, tp.size);
  STRATA_CHECK(config.d_ff % tp.size == 0, "parallel.tp = ", tp.size,
               " does not divide model.d_ff = ", config.d_ff);
  vocab_ = vocab_shard(config.vocab_size, tp.rank, tp.size);
  const ShardSpec vocab_split = tp.active() ? ShardSpec{0, "tp", vocab_.start} : ShardSpec{};
  tokens_ = &params_.add("embed.tokens.weight", {config.vocab_size, d}, vocab_split, vocab_.rows,
                         Init::normal, 0.02, false, dtype);
  if (config.position == "learned")
    positions_ = &params_.add_replicated("embed.positions.weight", {config.max_seq_len, d},
                                         Init::normal, 0.02, false, dtype);
  blocks_.reserve(static_cast<size_t>(config.n_layers));
  for (int64_t i = 0; i < config.n_layers; ++i) blocks_.emplace_back(params_, i, config, dtype, tp);
  final_norm_ = Norm(params_, "final_norm",
                     config.norm == "layernorm" ? NormKind::layernorm : NormKind::rmsnorm, d,
                     config.norm_eps, dtype, tp.splits_rows());
  head_ = config.tie_embeddings ? tokens_
                                : &params_.add("head.weight", {config.vocab_size, d}, vocab_split,
                                               vocab_.rows, Init::normal, 0.02, true, dtype);

  // Group the parameters by when backward finishes them (see set_grad_ready_hook).
  auto with_prefix = [&](const std::string& prefix) {
    std::vector<Parameter*> out;
    for (auto& p : params_.all())
      if (p->name.rfind(prefix, 0) == 0) out.push_back(p.get());
    return out;
  };
  std::vector<Parameter*> top = with_prefix("final_norm.");
  if (!config.tie_embeddings) top.insert(top.begin(), head_);
  backward_groups_.push_back(top);
  for (int64_t i = config.n_layers; i-- > 0;)
    backward_groups_.push_back(with_prefix("layers." + std::to_string(i) + "."));
  backward_groups_.push_back(with_prefix("embed."));
  size_t grouped = 0;
  for (const auto& g : backward_groups_) grouped += g.size();
  STRATA_CHECK(grouped == params_.all().size(), "transformer: ", params_.all().size(),
               " parameters but ", grouped, " in the backward groups");
}

std::vector<Parameter*> Transformer::params_in_backward_order() const {
  std::vector<Parameter*> out;
  for (const auto& g : backward_groups_) out.insert(out.end(), g.begin(), g.end());
  return out;
}

void Transformer::report_ready(size_t group) const {
  // Fold finished 16-bit gradients into their f32 accumulators and clear them for the next
  // micro-batch.
  for (Parameter* p : backward_groups_[group]) {
    if (!p->main_grad.defined()) continue;
    ops::axpy(1.0, p->grad, p->main_grad);
    fill(p->grad, 0.0);
  }
  if (grad_ready_) grad_ready_(backward_groups_[group]);
}

double Transformer::forward(const Tensor& ids, const Tensor& targets, Recompute recompute) {
  STRATA_CHECK(ids.ndim() == 2 && targets.shape() == ids.shape(), "model forward: ids ",
               ids.describe(), " and targets ", targets.describe(), " must both be [batch, seq]");
  const int64_t batch = ids.size(0), seq = ids.size(1), rows = batch * seq, d = config_.d_model;
  STRATA_CHECK(seq <= config_.max_seq_len, "model forward: sequence of ", seq,
               " tokens exceeds max_seq_len ", config_.max_seq_len);
  ids_ = ids;
  targets_ = targets;

  // x = tokens[ids] (+ positions[0:seq] for every sequence of the batch)
  Tensor x = Tensor::empty({batch, seq, d}, dtype_);
  Tensor x2 = x.view({rows, d});
  ops::embedding_forward(ids.view({rows}), tokens_->value, vocab_.start, x2);
  tp_.reduce(x2);  // vocab-parallel: each rank filled the rows of the ids it holds
  if (positions_) {
    Tensor pos = positions_->value.slice(0, 0, seq);
    for (int64_t b = 0; b < batch; ++b) {
      Tensor xb = x.slice(0, b, b + 1).view({seq, d});
      ops::add(xb, pos, xb);
    }
  }

  // Blocks work on this rank's rows under sequence parallelism, on all rows otherwise.
  x = tp_.own_rows(x2);
  const int64_t local_rows = x.size(0);
  saved_.assign(blocks_.size(), BlockSaved{});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    Tensor y = Tensor::empty({local_rows, d}, dtype_);
    saved_[i].batch = batch;
    saved_[i].seq = seq;
    blocks_[i].forward(x, y, saved_[i], recompute);
    x = y;
  }
  xf_ = x;
  Tensor xn_rows = Tensor::empty({local_rows, d}, dtype_);
  final_norm_.forward(xf_, xn_rows, final_saved_);
  xn_ = tp_.to_full(xn_rows);  // the head needs every row

  // Vocab-parallel logits: this rank's columns [vocab_.start, vocab_.start + vocab_.rows). The
  // buffer is reused from the last forward or backward when the shape allows: at GPT-2's vocabulary
  // it is 200 KB per row, an allocation the system maps afresh and zero-fills page by page on every
  // call (measured ~15 ms a step at 256 rows).
  const Shape logits_shape{rows, vocab_.rows};
  if (!logits_.defined()) logits_ = spare_logits_;
  if (!logits_.defined() || logits_.shape() != logits_shape || logits_.dtype() != dtype_)
    logits_ = Tensor::empty(logits_shape, dtype_);
  spare_logits_ = Tensor();
  ops::gemm(xn_, head_->value, logits_, {.trans_b = true});
  const DType stats = ops::stats_dtype(dtype_);
  Tensor loss = Tensor::empty({rows}, stats);
  lse_ = Tensor::empty({rows}, stats);
  if (!tp_.active()) {
    ops::cross_entropy_forward(logits_, targets.view({rows}), loss, lse_);
  } else {
    // Each rank's shard statistics, gathered over tp ([tp, rows]) and combined identically on
    // every rank: the loss and lse of the whole vocabulary.
    Tensor max = Tensor::empty({rows}, stats), sum_exp = Tensor::empty({rows}, stats),
           target_logit = Tensor::empty({rows}, stats);
    ops::cross_entropy_stats(logits_, targets.view({rows}), vocab_.start, max, sum_exp, target_logit);
    Tensor all_max = Tensor::empty({tp_.size, rows}, stats),
           all_sum = Tensor::empty({tp_.size, rows}, stats),
           all_target = Tensor::empty({tp_.size, rows}, stats);
    tp_.group->all_gather(max, all_max);
    tp_.group->all_gather(sum_exp, all_sum);
    tp_.group->all_gather(target_logit, all_target);
    ops::cross_entropy_combine(all_max, all_sum, all_target, targets.view({rows}), loss, lse_);
  }

  // Mean over the targets that count (negative targets are ignored and have loss 0).
  const Tensor t = targets.view({rows});
  n_valid_ = 0;
  for (int64_t i = 0; i < rows; ++i) {
    int64_t target = t.dtype() == DType::i64 ? t.data<int64_t>()[i] : t.data<int32_t>()[i];
    n_valid_ += target >= 0;
  }
  STRATA_CHECK(n_valid_ > 0, "model forward: every target of the batch is ignored");
  return ops::sum(loss) / static_cast<double>(n_valid_);
}

void Transformer::backward(double scale) {
  STRATA_CHECK(logits_.defined(), "model backward called without a forward");
  const int64_t batch = ids_.size(0), seq = ids_.size(1), rows = batch * seq, d = config_.d_model;
  const int64_t local_rows = xf_.size(0);  // rows / tp under sequence parallelism
  const DType stats = ops::stats_dtype(dtype_);

  // d(scale * mean loss)/d loss_row = scale / n_valid for every row (ignored rows get no gradient
  // from the op itself).
  Tensor dloss = Tensor::empty({rows}, stats);
  fill(dloss, scale / static_cast<double>(n_valid_));
  // dlogits overwrite the logits in place: the op reads each logit before writing its gradient
  // (kernels/cpu/cross_entropy.h), and this halves the largest activation of the step.
  Tensor dlogits = logits_;
  logits_ = Tensor();
  ops::cross_entropy_backward(dlogits, targets_.view({rows}), vocab_.start, lse_, dloss, dlogits);

  // logits = xn @ W^T:  dW += dlogits^T @ xn,  dxn = dlogits @ W
  ops::gemm(dlogits, xn_, head_->grad, {.trans_a = true, .beta = 1.0});
  Tensor dxn = Tensor::empty({rows, d}, dtype_);
  ops::gemm(dlogits, head_->value, dxn);
  // Each vocabulary shard's part of the gradient, summed (and under sequence parallelism
  // scattered to the rows this rank's norms hold).
  Tensor dxn_rows = tp_.from_partial(dxn);
  spare_logits_ = dlogits;  // the next forward's logits buffer
  Tensor dx = Tensor::empty({local_rows, d}, dtype_);
  final_norm_.backward(dxn_rows, xf_, final_saved_, dx);
  report_ready(0);

  for (size_t i = blocks_.size(); i-- > 0;) {
    Tensor dprev = Tensor::empty({local_rows, d}, dtype_);
    blocks_[i].backward(dx, saved_[i], dprev);
    dx = dprev;
    report_ready(blocks_.size() - i);
  }
  Tensor dx2 = tp_.to_full(dx);  // every row, for the embedding tables
  dx = dx2.view({batch, seq, d});
  if (positions_) {
    Tensor dpos = positions_->grad.slice(0, 0, seq);
    for (int64_t b = 0; b < batch; ++b) ops::axpy(1.0, dx.slice(0, b, b + 1).view({seq, d}), dpos);
  }
  ops::embedding_backward(dx2, ids_.view({rows}), vocab_.start, tokens_->grad);
  report_ready(backward_groups_.size() - 1);
  saved_.clear();
  xf_ = xn_ = lse_ = Tensor();
}

}  // namespace strata
