// What a run reports per step: a JSON object per logged step in <out_dir>/metrics.jsonl (step,
// loss, lr, grad_norm, tokens_per_s, mfu, memory_mb, loss_scale, and val_loss when evaluated; the
// data-parallel all-reduce times and the pipeline's bubble by stage when there are such), and
// a progress line on the terminal (rewritten in place on a tty, one line per log step otherwise).
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace strata {

struct StepMetrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double tokens_per_s = 0;
  double mfu = 0;  // model FLOPs per second over the peak rate of the device
  double step_ms = 0;
  double eta_s = 0;  // the remaining steps at this run's mean step time so far
  double memory_mb = 0;  // resident set size of this process
  // Model states this rank holds on its compute device, in MiB, as the allocator counts them:
  // parameters, gradients (16-bit grads and their f32 accumulators, or ZeRO's row shards),
  // optimizer state (master weights and moments); the model states offloaded to host memory; and
  // the host pool's peak of memory in use since the start (every tensor: states and activations).
  double params_mb = 0, grads_mb = 0, optimizer_mb = 0, offload_mb = 0, peak_mb = 0;
  double loss_scale = 1;
  bool skipped = false;  // fp16 overflow: the update was not applied
  // Data parallelism: the gradient all-reduce's span from its first bucket's start to its end, and
  // the part of it backward did not hide (time waited after backward).
  double comm_total_ms = 0;
  double comm_exposed_ms = 0;
  // Pipeline parallelism: each stage's share of the step spent not computing (waiting for its
  // neighbours: the bubble), by pipeline rank; empty without a pipeline.
  std::vector<double> pipeline_bubble;
  // Mixture of experts: the auxiliary losses (with their coefficients) added to the objective, and
  // per MoE layer (global index) the token-choices each expert processed over the step and the
  // share of token-choices dropped past capacity (every stage's layers).
  bool moe = false;  // the model has MoE layers: aux_loss is logged
  double aux_loss = 0;
  int64_t all_to_all_bytes = 0;  // expert parallelism: bytes rank 0 sent to other ranks
  std::map<int64_t, std::vector<int64_t>> expert_load;
  std::map<int64_t, double> drop_rate;
  std::optional<double> val_loss;
};

class MetricsLog {
 public:
  // Appends to <out_dir>/metrics.jsonl (creating out_dir); `append` keeps earlier lines (resume)
  // but drops any line for a step >= first_step, so a resumed run never duplicates steps.
  MetricsLog(const std::string& out_dir, bool append, int64_t first_step);
  void write(const StepMetrics& m);
  // The progress line, on stderr.
  void show(const StepMetrics& m);
  void finish_line();

 private:
  std::ofstream out_;
  bool tty_ = false;
};

// Resident set size of this process in MiB (Linux /proc/self/statm).
double resident_memory_mb();

}  // namespace strata
