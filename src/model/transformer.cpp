#include "model/transformer.h"

#include <algorithm>
#include <numeric>

#include "core/random.h"
#include "kernels/ops.h"

namespace strata {

Transformer::Transformer(const ModelConfig& config, DType dtype, const TensorParallel& tp,
                         std::vector<ChunkSpec> chunks, const SequenceParallel& sp,
                         const ExpertParallel& ep, ParamStorage storage)
    : config_(config), dtype_(dtype), tp_(tp), sp_(sp), chunks_(std::move(chunks)), params_(storage) {
  const int64_t d = config.d_model;
  check_attention_layout(config, tp.size);
  STRATA_CHECK(config.d_ff % tp.size == 0, "parallel.tp = ", tp.size,
               " does not divide model.d_ff = ", config.d_ff);
  if (chunks_.empty()) chunks_.push_back({0, config.n_layers, true, true});
  bool has_embedding = false, has_head = false;
  for (const ChunkSpec& c : chunks_) {
    STRATA_CHECK(0 <= c.first_layer && c.first_layer < c.end_layer && c.end_layer <= config.n_layers,
                 "model chunk of layers [", c.first_layer, ", ", c.end_layer, ") is empty or outside ",
                 "model.n_layers = ", config.n_layers);
    has_embedding |= c.embedding;
    has_head |= c.head;
  }
  vocab_ = vocab_shard(config.vocab_size, tp.rank, tp.size);
  const ShardSpec vocab_split = tp.active() ? ShardSpec{0, "tp", vocab_.start} : ShardSpec{};

  // Registered in forward order, so each chunk's parameters are a contiguous run of the registry.
  groups_.resize(chunks_.size());
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const ChunkSpec& spec = chunks_[c];
    ChunkGroups& g = groups_[c];
    if (spec.embedding) {
      const size_t first = params_.all().size();
      tokens_ = &params_.add("embed.tokens.weight", {config.vocab_size, d}, vocab_split, vocab_.rows,
                             Init::normal, 0.02, false, dtype);
      if (config.position == "learned")
        positions_ = &params_.add_replicated("embed.positions.weight", {config.max_seq_len, d},
                                             Init::normal, 0.02, false, dtype);
      g.embed = registered_since(first);
    }
    chunk_first_block_.push_back(blocks_.size());
    for (int64_t i = spec.first_layer; i < spec.end_layer; ++i) {
      const size_t first = params_.all().size();
      blocks_.emplace_back(params_, i, config, dtype, tp, sp, ep);
      layer_of_.push_back(i);
      moe_row_.push_back(blocks_.back().is_moe() ? static_cast<int64_t>(moe_layers_.size()) : -1);
      if (blocks_.back().is_moe()) moe_layers_.push_back(i);
      g.layers.push_back(registered_since(first));
    }
    if (spec.head) {
      const size_t first = params_.all().size();
      final_norm_ = Norm(params_, "final_norm",
                         config.norm == "layernorm" ? NormKind::layernorm : NormKind::rmsnorm, d,
                         config.norm_eps, dtype, tp.splits_rows());
      g.top = registered_since(first);
      if (!config.tie_embeddings) {
        head_ = &params_.add("head.weight", {config.vocab_size, d}, vocab_split, vocab_.rows,
                             Init::normal, 0.02, true, dtype);
        g.top.insert(g.top.begin(), head_);
      } else if (!has_embedding) {
        // The tied table lives on the first stage; this stage keeps a copy under the same name (so
        // it initialises and loads identically) whose gradient the pipeline sums with the owner's.
        head_ = &params_.add("embed.tokens.weight", {config.vocab_size, d}, vocab_split, vocab_.rows,
                             Init::normal, 0.02, false, dtype);
        head_->mirror = true;
        g.top.insert(g.top.begin(), head_);
      }
    }
  }
  if (config.tie_embeddings && has_head && has_embedding) head_ = tokens_;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    ChunkGroups& g = groups_[c];
    if (!chunks_[c].head) continue;
    g.top_use = g.top;
    if (std::find(g.top_use.begin(), g.top_use.end(), head_) == g.top_use.end()) g.top_use.push_back(head_);
  }
}

std::vector<Transformer::PositionRun> Transformer::position_runs(int64_t seq) const {
  if (!sp_.active()) return {{0, 0, seq}};
  STRATA_CHECK(seq % 2 == 0, "model forward: a sequence-parallel rank's ", seq,
               " tokens are not two equal zigzag chunks");
  const int64_t c = seq / 2;
  const std::array<int64_t, 2> at = zigzag_offsets(sp_.rank, sp_.size, c);
  return {{at[0], 0, c}, {at[1], c, c}};
}

std::vector<Parameter*> Transformer::registered_since(size_t first) const {
  std::vector<Parameter*> out;
  for (size_t i = first; i < params_.all().size(); ++i) out.push_back(params_.all()[i].get());
  return out;
}

std::vector<Parameter*> Transformer::params_in_backward_order() const {
  std::vector<Parameter*> out;
  for (size_t c = groups_.size(); c-- > 0;) {
    const ChunkGroups& g = groups_[c];
    out.insert(out.end(), g.top.begin(), g.top.end());
    for (size_t i = g.layers.size(); i-- > 0;) out.insert(out.end(), g.layers[i].begin(), g.layers[i].end());
    out.insert(out.end(), g.embed.begin(), g.embed.end());
  }
  return out;
}

void Transformer::report_ready(std::span<Parameter* const> group) const {
  if (group.empty()) return;
  // Fold finished 16-bit gradients into their f32 accumulators and clear them for the next
  // micro-batch.
  for (Parameter* p : group) {
    if (!p->main_grad.defined()) continue;
    ops::axpy(1.0, p->grad, p->main_grad);
    p->grad.set_zero();
  }
  if (grad_ready_) grad_ready_(group);
}

void Transformer::open_group(std::span<Parameter* const> group, std::span<Parameter* const> next,
                             bool backward) const {
  if (!gate_) return;
  gate_->acquire(group, backward);
  if (!next.empty()) gate_->prefetch(next);
}

void Transformer::close_group(std::span<Parameter* const> group) const {
  if (gate_) gate_->release(group);
}

double Transformer::forward(const Tensor& ids, const Tensor& targets, Recompute recompute) {
  STRATA_CHECK(chunks_.size() == 1 && chunks_[0].embedding && chunks_[0].head,
               "model forward: this rank holds a pipeline stage, not the whole model; run it "
               "through the pipeline engine");
  double loss = 0;
  // A forward without backward (evaluation) leaves its logits behind: the next one reuses them.
  if (whole_.logits.defined()) spare_logits_ = whole_.logits;
  whole_ = ChunkActivations{};
  forward_chunk(0, ids, targets, Tensor(), whole_, recompute, &loss);
  if (!moe_layers_.empty()) {  // this forward's routing alone, for aux_loss()
    if (!last_routing_.defined()) last_routing_ = Tensor::empty(routing_sums_.shape(), DType::f64, device());
    ops::fill(last_routing_, 0.0);
    for (size_t i = 0; i < blocks_.size(); ++i)
      if (blocks_[i].is_moe()) accumulate_routing(whole_.blocks[i].moe, moe_row_[i], last_routing_);
  }
  return loss;
}

void Transformer::accumulate_routing(const MoeSaved& s, int64_t row, Tensor& sums) {
  Tensor mine = sums.slice(0, row, row + 1).view({sums.size(1)});
  ops::moe_routing_accumulate(s.counts, s.losses, mine);
}

double Transformer::aux_loss() const {
  return last_routing_.defined() ? weighted_aux_loss(routing_log_of(last_routing_)) : 0.0;
}

void Transformer::clear_routing_log() {
  if (routing_sums_.defined()) ops::fill(routing_sums_, 0.0);
}

std::map<int64_t, MoeRouting> Transformer::routing_log() const {
  return routing_sums_.defined() ? routing_log_of(routing_sums_) : std::map<int64_t, MoeRouting>{};
}

std::map<int64_t, MoeRouting> Transformer::routing_log_of(const Tensor& any_sums) const {
  std::map<int64_t, MoeRouting> log;
  if (!any_sums.defined()) return log;
  const Tensor sums = any_sums.to_cpu();
  const int64_t E = config_.moe.n_experts, width = sums.size(1);
  for (size_t i = 0; i < moe_layers_.size(); ++i) {
    const double* row = sums.data<double>() + static_cast<int64_t>(i) * width;
    MoeRouting r;
    for (int64_t e = 0; e < E; ++e) {
      r.chosen.push_back(static_cast<int64_t>(row[e]));
      r.load.push_back(static_cast<int64_t>(row[E + e]));
      r.dropped += r.chosen.back() - r.load.back();
    }
    if (std::accumulate(r.chosen.begin(), r.chosen.end(), int64_t{0}) == 0) continue;  // not run
    r.aux_loss = row[2 * E];
    r.z_loss = row[2 * E + 1];
    log.emplace(moe_layers_[i], std::move(r));
  }
  return log;
}

double Transformer::weighted_aux_loss(const std::map<int64_t, MoeRouting>& log) const {
  double total = 0;
  for (const auto& [layer, r] : log)
    total += config_.moe.aux_loss_coef * r.aux_loss + config_.moe.z_loss_coef * r.z_loss;
  return total;
}

void Transformer::backward(double scale) {
  STRATA_CHECK(whole_.live, "model backward called without a forward");
  backward_chunk(0, Tensor(), scale, whole_);
}

Tensor Transformer::forward_chunk(size_t chunk, const Tensor& ids, const Tensor& targets,
                                  const Tensor& x_in, ChunkActivations& a, Recompute recompute,
                                  double* loss_out) {
  STRATA_CHECK(chunk < chunks_.size(), "model chunk ", chunk, " of ", chunks_.size());
  const ChunkSpec& spec = chunks_[chunk];
  STRATA_CHECK(ids.ndim() == 2 && targets.shape() == ids.shape(), "model forward: ids ",
               ids.describe(), " and targets ", targets.describe(), " must both be [batch, seq]");
  const int64_t batch = ids.size(0), seq = ids.size(1), rows = batch * seq, d = config_.d_model;
  STRATA_CHECK(seq <= config_.max_seq_len, "model forward: sequence of ", seq,
               " tokens exceeds max_seq_len ", config_.max_seq_len);
  STRATA_CHECK(!a.live, "model forward: these activations still wait for their backward");
  // Ignored targets (< 0) do not count in the mean; counted on the host copy the data loader
  // made (a device copy would have to be read back, which waits for the device).
  if (spec.head) {
    const Tensor t = targets.to_cpu().view({rows});
    a.n_valid = 0;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t target = t.dtype() == DType::i64 ? t.data<int64_t>()[i] : t.data<int32_t>()[i];
      a.n_valid += target >= 0;
    }
    STRATA_CHECK(a.n_valid > 0, "model forward: every target of the batch is ignored");
  }
  a.ids = ids.placed(device());
  a.targets = targets.placed(device());
  a.live = true;

  const ChunkGroups& groups = groups_[chunk];
  Tensor x;
  if (spec.embedding) {
    open_group(groups.embed, groups.layers.front(), false);
    // x = tokens[ids] (+ positions[0:seq] for every sequence of the batch)
    Tensor full = Tensor::empty({batch, seq, d}, dtype_, device());
    Tensor x2 = full.view({rows, d});
    ops::embedding_forward(a.ids.view({rows}), tokens_->value, vocab_.start, x2);
    tp_.reduce(x2);  // vocab-parallel: each rank filled the rows of the ids it holds
    if (positions_) {
      for (const PositionRun& run : position_runs(seq)) {
        STRATA_CHECK(run.table_row + run.count <= config_.max_seq_len, "model forward: position ",
                     run.table_row + run.count - 1, " is past model.max_seq_len ", config_.max_seq_len);
        Tensor pos = positions_->value.slice(0, run.table_row, run.table_row + run.count);
        for (int64_t b = 0; b < batch; ++b) {
          Tensor xb = full.slice(0, b, b + 1).view({seq, d}).slice(0, run.local_row,
                                                                    run.local_row + run.count);
          ops::add(xb, pos, xb);
        }
      }
    }
    close_group(groups.embed);
    // Blocks work on this rank's rows under sequence parallelism, on all rows otherwise.
    x = tp_.own_rows(x2);
  } else {
    STRATA_CHECK(x_in.defined() && x_in.ndim() == 2 && x_in.size(1) == d,
                 "model chunk forward: input activation ", x_in.describe(), " is not [rows, ", d, "]");
    x = x_in;
  }
  const int64_t local_rows = x.size(0);
  const size_t first = chunk_first_block_[chunk];
  const auto n_blocks = static_cast<size_t>(spec.end_layer - spec.first_layer);
  a.blocks.assign(n_blocks, BlockSaved{});
  for (size_t i = 0; i < n_blocks; ++i) {
    Tensor y = Tensor::empty({local_rows, d}, dtype_, device());
    a.blocks[i].batch = batch;
    a.blocks[i].seq = seq;
    const Block& block = blocks_[first + i];
    const std::vector<Parameter*> none;
    open_group(groups.layers[i], i + 1 < n_blocks ? groups.layers[i + 1] : spec.head ? groups.top_use : none,
               false);
    block.forward(x, y, a.blocks[i], recompute);
    close_group(groups.layers[i]);
    if (block.is_moe()) {
      // What it routed, added to the layer's running sums on the device.
      if (!routing_sums_.defined())
        routing_sums_ = Tensor::zeros({static_cast<int64_t>(moe_layers_.size()), 2 * config_.moe.n_experts + 2},
                                      DType::f64, device());
      accumulate_routing(a.blocks[i].moe, moe_row_[first + i], routing_sums_);
    }
    x = y;
  }
  if (!spec.head) return x;

  a.xf = x;
  open_group(groups.top_use, {}, false);
  Tensor xn_rows = Tensor::empty({local_rows, d}, dtype_, device());
  final_norm_.forward(a.xf, xn_rows, a.final_saved);
  a.xn = tp_.to_full(xn_rows);  // the head needs every row

  // Vocab-parallel logits: this rank's columns [vocab_.start, vocab_.start + vocab_.rows). The
  // buffer is reused from the last backward when the shape allows: at GPT-2's vocabulary it is
  // 200 KB per row, worth not allocating afresh on every call.
  const Shape logits_shape{rows, vocab_.rows};
  a.logits = spare_logits_;
  if (!a.logits.defined() || a.logits.shape() != logits_shape || a.logits.dtype() != dtype_)
    a.logits = Tensor::empty(logits_shape, dtype_, device());
  spare_logits_ = Tensor();
  ops::gemm(a.xn, head_->value, a.logits, {.trans_b = true});
  close_group(groups.top_use);
  const DType stats = ops::stats_dtype(dtype_);
  Tensor loss = Tensor::empty({rows}, stats, device());
  a.lse = Tensor::empty({rows}, stats, device());
  if (!tp_.active()) {
    ops::cross_entropy_forward(a.logits, a.targets.view({rows}), loss, a.lse);
  } else {
    // Each rank's shard statistics, gathered over tp ([tp, rows]) and combined identically on
    // every rank: the loss and lse of the whole vocabulary.
    Tensor max = Tensor::empty({rows}, stats, device()), sum_exp = Tensor::empty({rows}, stats, device()),
           target_logit = Tensor::empty({rows}, stats, device());
    ops::cross_entropy_stats(a.logits, a.targets.view({rows}), vocab_.start, max, sum_exp, target_logit);
    Tensor all_max = Tensor::empty({tp_.size, rows}, stats, device()),
           all_sum = Tensor::empty({tp_.size, rows}, stats, device()),
           all_target = Tensor::empty({tp_.size, rows}, stats, device());
    tp_.group->all_gather(max, all_max);
    tp_.group->all_gather(sum_exp, all_sum);
    tp_.group->all_gather(target_logit, all_target);
    ops::cross_entropy_combine(all_max, all_sum, all_target, a.targets.view({rows}), loss, a.lse);
  }

  // Mean over the targets that count (negative targets are ignored and have loss 0).
  if (loss_sink_) {
    ops::sum_into(loss, 1.0 / static_cast<double>(a.n_valid), *loss_sink_);
    if (loss_out) *loss_out = 0.0;
  } else if (loss_out) {
    *loss_out = ops::sum(loss) / static_cast<double>(a.n_valid);
  }
  return Tensor();
}

Tensor Transformer::backward_chunk(size_t chunk, const Tensor& dy, double scale,
                                   ChunkActivations& a) {
  STRATA_CHECK(chunk < chunks_.size(), "model chunk ", chunk, " of ", chunks_.size());
  STRATA_CHECK(a.live, "model backward called without a forward");
  const ChunkSpec& spec = chunks_[chunk];
  const ChunkGroups& groups = groups_[chunk];
  const int64_t batch = a.ids.size(0), seq = a.ids.size(1), rows = batch * seq, d = config_.d_model;
  const std::vector<Parameter*> none;
  Tensor dx;
  if (spec.head) {
    open_group(groups.top_use, groups.layers.back(), true);
    const int64_t local_rows = a.xf.size(0);  // rows / tp under sequence parallelism
    const DType stats = ops::stats_dtype(dtype_);
    // d(scale * mean loss)/d loss_row = scale / n_valid for every row (ignored rows get no
    // gradient from the op itself).
    Tensor dloss = Tensor::empty({rows}, stats, device());
    ops::fill(dloss, scale / static_cast<double>(a.n_valid));
    // dlogits overwrite the logits in place: the op reads each logit before writing its gradient
    // (kernels/cpu/cross_entropy.h), and this halves the largest activation of the step.
    Tensor dlogits = a.logits;
    a.logits = Tensor();
    ops::cross_entropy_backward(dlogits, a.targets.view({rows}), vocab_.start, a.lse, dloss, dlogits);

    // logits = xn @ W^T:  dW += dlogits^T @ xn,  dxn = dlogits @ W
    ops::gemm(dlogits, a.xn, head_->grad, {.trans_a = true, .beta = 1.0});
    Tensor dxn = Tensor::empty({rows, d}, dtype_, device());
    ops::gemm(dlogits, head_->value, dxn);
    // Each vocabulary shard's part of the gradient, summed (and under sequence parallelism
    // scattered to the rows this rank's norms hold).
    Tensor dxn_rows = tp_.from_partial(dxn);
    spare_logits_ = dlogits;  // the next forward's logits buffer
    dx = Tensor::empty({local_rows, d}, dtype_, device());
    final_norm_.backward(dxn_rows, a.xf, a.final_saved, dx);
    report_ready(groups.top);
    close_group(groups.top_use);
  } else {
    STRATA_CHECK(dy.defined() && dy.ndim() == 2 && dy.size(1) == d,
                 "model chunk backward: output gradient ", dy.describe(), " is not [rows, ", d, "]");
    dx = dy;
  }

  const size_t first = chunk_first_block_[chunk];
  for (size_t i = a.blocks.size(); i-- > 0;) {
    open_group(groups.layers[i], i > 0 ? groups.layers[i - 1] : spec.embedding ? groups.embed : none, true);
    Tensor dprev = Tensor::empty(dx.shape(), dtype_, device());
    blocks_[first + i].backward(dx, a.blocks[i], dprev, scale);
    dx = dprev;
    report_ready(groups.layers[i]);
    close_group(groups.layers[i]);
  }
  const Tensor ids = a.ids;
  a = ChunkActivations{};
  if (!spec.embedding) return dx;

  open_group(groups.embed, {}, true);
  Tensor dx2 = tp_.to_full(dx);  // every row, for the embedding tables
  Tensor dx3 = dx2.view({batch, seq, d});
  if (positions_) {
    for (const PositionRun& run : position_runs(seq)) {
      Tensor dpos = positions_->grad.slice(0, run.table_row, run.table_row + run.count);
      for (int64_t b = 0; b < batch; ++b)
        ops::axpy(1.0,
                  dx3.slice(0, b, b + 1).view({seq, d}).slice(0, run.local_row, run.local_row + run.count),
                  dpos);
    }
  }
  ops::embedding_backward(dx2, ids.view({rows}), vocab_.start, tokens_->grad);
  report_ready(groups.embed);
  close_group(groups.embed);
  return Tensor();
}

}  // namespace strata

namespace strata {

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (const Tensor& t : k) total += static_cast<int64_t>(t.nbytes());
  for (const Tensor& t : v) total += static_cast<int64_t>(t.nbytes());
  return total;
}

std::pair<int64_t, int64_t> Transformer::quantize_int8() {
  std::pair<int64_t, int64_t> total{0, 0};
  for (Block& b : blocks_) {
    const auto [before, after] = b.quantize_int8();
    total.first += before;
    total.second += after;
  }
  return total;
}

KvCache Transformer::make_kv_cache(int64_t batch, int64_t max_len) const {
  STRATA_CHECK(max_len <= config_.max_seq_len, "KV cache of ", max_len, " tokens exceeds model.max_seq_len ",
               config_.max_seq_len);
  KvCache cache;
  cache.batch = batch;
  cache.max_len = max_len;
  for (const Block& block : blocks_) {
    const Shape shape{batch, max_len, block.attention().local_kv_heads(), block.attention().head_dim()};
    cache.k.push_back(Tensor::zeros(shape, dtype_, device()));
    cache.v.push_back(Tensor::zeros(shape, dtype_, device()));
  }
  return cache;
}

Tensor Transformer::forward_cached(const Tensor& ids, std::span<const CacheSegment> segments, KvCache& cache,
                                   bool last_only) const {
  STRATA_CHECK(chunks_.size() == 1 && chunks_[0].embedding && chunks_[0].head,
               "inference needs the whole model on this rank (no pipeline stages)");
  STRATA_CHECK(!sp_.active(), "inference does not run with sequence parallelism");
  const int64_t rows = ids.numel(), d = config_.d_model;
  int64_t total = 0;
  for (const CacheSegment& s : segments) {
    STRATA_CHECK(s.sequence >= 0 && s.sequence < cache.batch, "inference: cache sequence ", s.sequence,
                 " of ", cache.batch);
    STRATA_CHECK(s.n > 0 && s.start >= 0 && s.start + s.n <= cache.max_len, "inference: tokens [", s.start, ", ",
                 s.start + s.n, ") do not fit the cache of ", cache.max_len);
    total += s.n;
  }
  STRATA_CHECK(total == rows, "inference: segments cover ", total, " tokens but ", rows, " were given");
  Tensor x = Tensor::empty({rows, d}, dtype_, device());
  ops::embedding_forward(ids.placed(device()).view({rows}), tokens_->value, vocab_.start, x);
  tp_.reduce(x);
  if (positions_) {
    int64_t row = 0;
    for (const CacheSegment& s : segments) {
      Tensor xs = x.slice(0, row, row + s.n);
      ops::add(xs, positions_->value.slice(0, s.start, s.start + s.n), xs);
      row += s.n;
    }
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    std::vector<SelfAttention::CachedSegment> cached;
    int64_t row = 0;
    for (const CacheSegment& s : segments) {
      const Tensor& k = cache.k[i];
      const Shape one{k.size(1), k.size(2), k.size(3)};
      cached.push_back({row, s.n, s.start, k.slice(0, s.sequence, s.sequence + 1).view(one),
                        cache.v[i].slice(0, s.sequence, s.sequence + 1).view(one)});
      row += s.n;
    }
    Tensor y = Tensor::empty({rows, d}, dtype_, device());
    blocks_[i].forward_cached(x, cached, y);
    x = y;
  }
  if (last_only) {
    Tensor last = Tensor::empty({static_cast<int64_t>(segments.size()), d}, dtype_, device());
    int64_t row = 0;
    for (size_t j = 0; j < segments.size(); ++j) {
      row += segments[j].n;
      Tensor dst = last.slice(0, static_cast<int64_t>(j), static_cast<int64_t>(j) + 1);
      dst.copy_from(x.slice(0, row - 1, row));
    }
    x = last;
  }
  const int64_t out_rows = x.size(0);
  Tensor xn = Tensor::empty({out_rows, d}, dtype_, device());
  NormSaved saved;
  final_norm_.forward(x, xn, saved);
  Tensor local = Tensor::empty({out_rows, vocab_.rows}, dtype_, device());
  ops::gemm(xn, head_->value, local, {.trans_b = true});
  if (!tp_.active()) return local;
  // Every rank's vocabulary columns, padded to the common stride, gathered and laid side by side.
  Tensor padded = Tensor::zeros({out_rows, vocab_.stride}, dtype_, device());
  for (int64_t r = 0; r < out_rows; ++r) {
    Tensor dst = padded.slice(0, r, r + 1).view({vocab_.stride}).slice(0, 0, vocab_.rows);
    dst.copy_from(local.slice(0, r, r + 1).view({vocab_.rows}));
  }
  Tensor all = Tensor::empty({tp_.size * out_rows * vocab_.stride}, dtype_, device());
  tp_.group->all_gather(padded.view({out_rows * vocab_.stride}), all);
  Tensor logits = Tensor::empty({out_rows, config_.vocab_size}, dtype_, device());
  for (int64_t t = 0; t < tp_.size; ++t) {
    const int64_t start = t * vocab_.stride;
    const int64_t n = std::clamp<int64_t>(config_.vocab_size - start, 0, vocab_.stride);
    for (int64_t r = 0; r < out_rows && n > 0; ++r) {
      Tensor dst = logits.slice(0, r, r + 1).view({config_.vocab_size}).slice(0, start, start + n);
      dst.copy_from(all.slice(0, (t * out_rows + r) * vocab_.stride, (t * out_rows + r) * vocab_.stride + n));
    }
  }
  return logits;
}

}  // namespace strata
