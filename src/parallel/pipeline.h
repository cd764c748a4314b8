// Pipeline parallelism: the model's layers split into stages on different ranks, micro-batches
// flowing through them as a schedule (parallel/pipeline_schedule.h) says. One engine runs any
// schedule: it walks this rank's action list, starting receives and sends without blocking and
// waiting for a transfer only when the compute that needs it comes up.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "comm/communicator.h"
#include "data/loader.h"
#include "model/transformer.h"
#include "parallel/pipeline_schedule.h"

namespace strata {

// Layers per virtual stage (stages * virtual_stages of them, in model order): `pp_layers` when
// given (it must have one positive entry per virtual stage, summing to n_layers), else an even
// split with the remainder going one layer each to the earliest virtual stages. Refuses more
// virtual stages than layers.
std::vector<int64_t> pipeline_layer_split(int64_t n_layers, int stages, int virtual_stages,
                                          const std::vector<int64_t>& pp_layers);

// The model chunks pipeline rank `rank` holds: chunk c is virtual stage c * stages + rank; the
// embedding goes with virtual stage 0, the final norm, head and loss with the last.
std::vector<ChunkSpec> pipeline_chunks(int64_t n_layers, int stages, int virtual_stages, int rank,
                                       const std::vector<int64_t>& pp_layers);

struct PipelineStats {
  double step_ms = 0;     // wall time of the schedule, first action to last send completed
  double compute_ms = 0;  // time inside forward and backward compute actions
  // Share of the step this rank was not computing: waiting for its neighbours (the pipeline's
  // bubble) and for transfers.
  double bubble() const { return step_ms > 0 ? 1.0 - compute_ms / step_ms : 0.0; }
  int max_live = 0;  // most micro-batch activations (summed over chunks) held at once
  std::vector<int> max_live_by_chunk;
};

class PipelineEngine {
 public:
  // `forward_group` and `backward_group`: two communicators over the same pp ranks (activations go
  // forward on the first, gradients backward on the second), with this rank at index `rank`.
  PipelineEngine(Transformer& model, PipelineSchedule kind, int stages, int virtual_stages,
                 Communicator* forward_group, Communicator* backward_group);

  // One optimizer step's forwards and backwards over `micro` (every rank passes the same batches;
  // at least `stages` of them). Backward of each micro-batch starts from `scale` x its mean loss.
  // `before_backward(last)` is called before each backward action, with `last` true when it is the
  // chunk's last micro-batch of the step (data parallelism communicates only then). Returns the
  // sum over micro-batches of their mean losses on the last stage, 0 on the others.
  double train_step(std::span<const Batch> micro, double scale, Recompute recompute,
                    const std::function<void(bool last)>& before_backward = {});
  // Forward only (evaluation): returns the sum over micro-batches of (mean loss x rows) on the
  // last stage, 0 on the others.
  double forward_only(std::span<const Batch> micro);

  const PipelineStats& last_stats() const { return stats_; }
  bool is_last_stage() const;

 private:
  double execute(const std::vector<PipeAction>& actions, std::span<const Batch> micro, double scale,
                 Recompute recompute, bool train, const std::function<void(bool last)>& before_backward);

  Transformer& model_;
  PipelineSchedule kind_;
  int stages_, virtual_stages_, rank_;
  Communicator* forward_group_;
  Communicator* backward_group_;
  PipelineStats stats_;
};

}  // namespace strata
