#include "parallel/pipeline.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <numeric>
#include <utility>

#include "core/error.h"

namespace strata {

std::vector<int64_t> pipeline_layer_split(int64_t n_layers, int stages, int virtual_stages,
                                          const std::vector<int64_t>& pp_layers) {
  const int64_t n_virtual = int64_t{stages} * virtual_stages;
  STRATA_CHECK(stages >= 1 && virtual_stages >= 1, "parallel.pp = ", stages,
               " and parallel.virtual_stages = ", virtual_stages, " must be at least 1");
  if (!pp_layers.empty()) {
    STRATA_CHECK(static_cast<int64_t>(pp_layers.size()) == n_virtual, "parallel.pp_layers has ",
                 pp_layers.size(), " entries but the pipeline has ", n_virtual,
                 " virtual stages (parallel.pp = ", stages, " x parallel.virtual_stages = ",
                 virtual_stages, ")");
    for (size_t i = 0; i < pp_layers.size(); ++i)
      STRATA_CHECK(pp_layers[i] >= 1, "parallel.pp_layers[", i, "] = ", pp_layers[i],
                   ": every stage needs at least one layer");
    const int64_t total = std::accumulate(pp_layers.begin(), pp_layers.end(), int64_t{0});
    STRATA_CHECK(total == n_layers, "parallel.pp_layers sums to ", total, " layers but model.n_layers = ",
                 n_layers);
    return pp_layers;
  }
  STRATA_CHECK(n_virtual <= n_layers, "the pipeline has ", n_virtual, " virtual stages (parallel.pp = ",
               stages, " x parallel.virtual_stages = ", virtual_stages, ") but model.n_layers = ",
               n_layers, ": every stage needs at least one layer");
  std::vector<int64_t> split(static_cast<size_t>(n_virtual), n_layers / n_virtual);
  for (int64_t i = 0; i < n_layers % n_virtual; ++i) ++split[static_cast<size_t>(i)];
  return split;
}

std::vector<ChunkSpec> pipeline_chunks(int64_t n_layers, int stages, int virtual_stages, int rank,
                                       const std::vector<int64_t>& pp_layers) {
  STRATA_CHECK(rank >= 0 && rank < stages, "pipeline rank ", rank, " outside parallel.pp = ", stages);
  const std::vector<int64_t> split = pipeline_layer_split(n_layers, stages, virtual_stages, pp_layers);
  std::vector<int64_t> first(split.size() + 1, 0);
  std::partial_sum(split.begin(), split.end(), first.begin() + 1);
  const int n_virtual = stages * virtual_stages;
  std::vector<ChunkSpec> chunks;
  for (int c = 0; c < virtual_stages; ++c) {
    const int v = c * stages + rank;
    chunks.push_back({first[static_cast<size_t>(v)], first[static_cast<size_t>(v) + 1], v == 0,
                      v == n_virtual - 1});
  }
  return chunks;
}

PipelineEngine::PipelineEngine(Transformer& model, PipelineSchedule kind, int stages,
                               int virtual_stages, Communicator* forward_group,
                               Communicator* backward_group)
    : model_(model),
      kind_(kind),
      stages_(stages),
      virtual_stages_(virtual_stages),
      rank_(forward_group ? forward_group->rank() : 0),
      forward_group_(forward_group),
      backward_group_(backward_group) {
  STRATA_CHECK(stages == 1 || (forward_group && backward_group && forward_group->size() == stages &&
                               backward_group->size() == stages),
               "pipeline engine: ", stages, " stages need two pp communicators of that size");
  STRATA_CHECK(static_cast<int>(model.chunks().size()) == virtual_stages, "pipeline engine: the model holds ",
               model.chunks().size(), " chunks but parallel.virtual_stages = ", virtual_stages);
}

bool PipelineEngine::is_last_stage() const { return model_.chunks().back().head; }

double PipelineEngine::train_step(std::span<const Batch> micro, double scale, Recompute recompute,
                                  const std::function<void(bool last)>& before_backward) {
  const PipelineShape shape{stages_, virtual_stages_, static_cast<int>(micro.size())};
  return execute(build_pipeline_schedule(kind_, shape, rank_), micro, scale, recompute, true,
                 before_backward);
}

double PipelineEngine::forward_only(std::span<const Batch> micro) {
  const PipelineShape shape{stages_, virtual_stages_, static_cast<int>(micro.size())};
  return execute(build_forward_only_schedule(shape, rank_), micro, 0.0, Recompute::full, false, {});
}

double PipelineEngine::execute(const std::vector<PipeAction>& actions, std::span<const Batch> micro,
                               double scale, Recompute recompute, bool train,
                               const std::function<void(bool last)>& before_backward) {
  using Clock = std::chrono::steady_clock;
  const auto ms_since = [](Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  };
  const int m = static_cast<int>(micro.size());
  const int next = (rank_ + 1) % stages_, prev = (rank_ + stages_ - 1) % stages_;
  const DType dtype = model_.dtype();
  using Key = std::pair<int, int>;  // (micro-batch, chunk)
  struct Incoming {
    Tensor tensor;
    CommHandle handle;
  };
  std::map<Key, Incoming> inputs, output_grads;  // received, or in flight
  std::map<Key, Tensor> outputs, input_grads;    // computed, waiting for their send action
  std::map<Key, ChunkActivations> saved;
  std::deque<CommHandle> sends;  // in flight; each keeps its tensor alive until done
  std::vector<int> live(static_cast<size_t>(virtual_stages_), 0);
  std::vector<int> backwards_left(static_cast<size_t>(virtual_stages_), m);
  stats_ = PipelineStats{};
  stats_.max_live_by_chunk.assign(static_cast<size_t>(virtual_stages_), 0);
  double loss_sum = 0;

  auto receive = [&](std::map<Key, Incoming>& into, Key key, Communicator* group, int peer) {
    const Batch& b = micro[static_cast<size_t>(key.first)];
    Incoming in;
    in.tensor = Tensor::empty(model_.activation_shape(b.input.size(0), b.input.size(1)), dtype,
                              model_.params().allocator());
    in.handle = group->recv_async(in.tensor, peer);
    STRATA_CHECK(into.emplace(key, std::move(in)).second, "pipeline: a second receive for micro-batch ",
                 key.first, " chunk ", key.second);
  };
  auto take = [&](std::map<Key, Incoming>& from, Key key, const char* what) {
    auto it = from.find(key);
    STRATA_CHECK(it != from.end(), "pipeline schedule: ", what, " of micro-batch ", key.first,
                 " chunk ", key.second, " was never received");
    it->second.handle.wait();
    Tensor t = it->second.tensor;
    from.erase(it);
    return t;
  };
  auto take_computed = [&](std::map<Key, Tensor>& from, Key key, const char* what) {
    auto it = from.find(key);
    STRATA_CHECK(it != from.end(), "pipeline schedule: sends the ", what, " of micro-batch ", key.first,
                 " chunk ", key.second, " before computing it");
    Tensor t = it->second;
    from.erase(it);
    return t;
  };
  const auto drop_finished_sends = [&] {
    while (!sends.empty() && sends.front().is_done()) sends.pop_front();
  };

  const auto start = Clock::now();
  for (const PipeAction& a : actions) {
    const Key key{a.microbatch, a.chunk};
    const ChunkSpec& chunk = model_.chunks()[static_cast<size_t>(a.chunk)];
    switch (a.op) {
      case PipeOp::recv_forward:
        receive(inputs, key, forward_group_, prev);
        break;
      case PipeOp::recv_backward:
        receive(output_grads, key, backward_group_, next);
        break;
      case PipeOp::send_forward:
        sends.push_back(forward_group_->send_async(take_computed(outputs, key, "output"), next));
        break;
      case PipeOp::send_backward:
        sends.push_back(backward_group_->send_async(take_computed(input_grads, key, "input gradient"), prev));
        break;
      case PipeOp::forward: {
        const Tensor x = chunk.embedding ? Tensor() : take(inputs, key, "the input activation");
        const Batch& b = micro[static_cast<size_t>(a.microbatch)];
        const auto t0 = Clock::now();
        ChunkActivations& acts = saved[key];
        double loss = 0;
        Tensor y = model_.forward_chunk(static_cast<size_t>(a.chunk), b.input, b.target, x, acts,
                                        train ? recompute : Recompute::full, &loss);
        stats_.compute_ms += ms_since(t0);
        if (chunk.head) loss_sum += train ? loss : loss * static_cast<double>(b.n_rows());
        if (!chunk.head) outputs.emplace(key, y);
        if (!train) {
          saved.erase(key);  // nothing to keep without a backward
          break;
        }
        int& n = live[static_cast<size_t>(a.chunk)];
        ++n;
        stats_.max_live_by_chunk[static_cast<size_t>(a.chunk)] =
            std::max(stats_.max_live_by_chunk[static_cast<size_t>(a.chunk)], n);
        stats_.max_live = std::max(stats_.max_live, std::accumulate(live.begin(), live.end(), 0));
        break;
      }
      case PipeOp::backward: {
        const Tensor dy = chunk.head ? Tensor() : take(output_grads, key, "the output gradient");
        auto it = saved.find(key);
        STRATA_CHECK(it != saved.end(), "pipeline schedule: backward of micro-batch ", a.microbatch,
                     " chunk ", a.chunk, " before its forward");
        int& left = backwards_left[static_cast<size_t>(a.chunk)];
        if (before_backward) before_backward(--left == 0);
        const auto t0 = Clock::now();
        Tensor dx = model_.backward_chunk(static_cast<size_t>(a.chunk), dy, scale, it->second);
        stats_.compute_ms += ms_since(t0);
        saved.erase(it);
        --live[static_cast<size_t>(a.chunk)];
        if (!chunk.embedding) input_grads.emplace(key, dx);
        break;
      }
    }
    drop_finished_sends();
  }
  for (CommHandle& h : sends) h.wait();
  stats_.step_ms = ms_since(start);
  STRATA_CHECK(inputs.empty() && output_grads.empty() && outputs.empty() && input_grads.empty() &&
                   saved.empty(),
               "pipeline schedule left work undone: ", inputs.size() + output_grads.size(),
               " receives, ", outputs.size() + input_grads.size(), " sends, ", saved.size(),
               " backwards");
  return loss_sum;
}

}  // namespace strata
