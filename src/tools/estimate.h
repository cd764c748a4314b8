// `strata estimate`: parameters, FLOPs, memory per rank and step time of a run, from the same
// Config that `strata train` reads and a hardware description (configs/hardware/*.yaml). No model
// is built and nothing is allocated: every figure is arithmetic on the config.
//
// Memory per rank = model states (the ZeRO forms of docs/zero.md, which the trainer's allocator
// counts) + activations (what Strata's layers keep for backward, per micro-batch, times the
// micro-batches a pipeline stage holds under its schedule) + temporary buffers (logits, a layer's
// backward, communication buckets, ZeRO-3's gathered layers). The published formulas sit beside
// them for reference: the ZeRO paper's (2 + 2 + K)Ψ family and Korthikanti et al. 2022's
// activation bytes per layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"
#include "model/block.h"

namespace strata {

struct Hardware {
  std::string name;
  double peak_flops_bf16 = 0;  // dense FLOP/s for 16-bit matmuls (bf16 and fp16)
  double peak_flops_fp32 = 0;
  double memory_bytes = 0;           // per device
  double memory_bandwidth = 0;       // bytes/s per device
  double intra_node_bandwidth = 0;   // bytes/s per device, one direction, between devices of a node
  double inter_node_bandwidth = 0;   // bytes/s per device, one direction, between nodes
  int64_t devices_per_node = 1;
  double flops_efficiency = 0.5;     // the fraction of peak a training step's matmuls sustain
};
// Reads a hardware file; a missing or bad field is an Error naming the file and the field.
Hardware load_hardware(const std::string& path);

// Bytes of model states per rank in the ZeRO paper's accounting (Rajbhandari et al. 2020, §5):
// 16-bit parameters and gradients, K bytes per parameter of optimizer state, N_d-way data
// parallelism, stage 0..3.
double zero_paper_state_bytes(double psi, int stage, double n_d, double k = 12);

// Activation bytes of one transformer layer in Korthikanti et al. 2022, Table 2 (16-bit
// activations, GPT with a 4h MLP and dropout): s sequence, b micro-batch, h hidden, a heads, t tp;
// `sequence_parallel`: Megatron's sequence parallelism of the norm/dropout regions; recompute
// none, selective (the attention core) or full (only the layer input kept).
double korthikanti_layer_bytes(double s, double b, double h, double a, double t,
                               bool sequence_parallel, Recompute recompute);

struct MemoryBreakdown {
  double params = 0, grads = 0, optimizer = 0;  // on the device
  double offloaded = 0;                          // model states in host memory
  double activations = 0;      // every micro-batch held at once
  double activations_per_layer = 0;  // one micro-batch, one layer
  // The same from Korthikanti et al.'s Table 2 (16-bit GPT layer), for comparison.
  double korthikanti_per_layer = 0;
  double microbatches_held = 0;      // layers' worth of micro-batches held at the peak, / layers
  double temporary = 0;
  double total() const { return params + grads + optimizer + activations + temporary; }
};

struct CommVolume {
  // Bytes each rank sends per optimizer step, by group.
  double dp = 0, tp = 0, pp = 0, sp = 0, ep = 0;
};

struct Estimate {
  // Counts.
  int64_t params = 0, embedding_params = 0, active_params_per_token = 0;
  std::vector<int64_t> params_by_stage;  // per pipeline rank, before tp/ep/zero
  int64_t params_per_rank = 0;           // Ψ of the fullest rank (after tp, pp, ep)
  // FLOPs.
  double forward_flops_per_token = 0, backward_flops_per_token = 0, recompute_flops_per_token = 0;
  double model_flops_per_step = 0;   // 6N + attention per token (what MFU counts)
  double hardware_flops_per_step = 0;  // with recompute
  // Memory of the fullest rank.
  int fullest_stage = 0;
  MemoryBreakdown memory;
  double kv_cache_bytes = 0;  // inference: micro_batch sequences of seq_len, this rank's kv heads
  bool fits = true;
  double headroom = 0;  // device memory minus the total (negative: short by that much)
  // Time.
  double bubble = 0;  // idle share of a pipeline stage
  CommVolume comm;
  double compute_s = 0, comm_exposed_s = 0, step_s = 0, mfu = 0;
};

Estimate estimate_run(const Config& config, const Hardware& hardware);

// Layouts for `world` ranks that fit the hardware, fastest first: dp, tp, pp, sp, ep, zero,
// recompute and micro-batch over what the config's model and batch allow.
struct SearchResult {
  Config config;
  Estimate estimate;
};
std::vector<SearchResult> search_layouts(const Config& config, const Hardware& hardware, int64_t world);

// The report: a table for a terminal, or JSON.
std::string format_estimate(const Config& config, const Hardware& hardware, const Estimate& e);
std::string estimate_json(const Config& config, const Hardware& hardware, const Estimate& e);

}  // namespace strata
