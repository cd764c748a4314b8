// The trainer: builds the model, optimizer and data loaders from a Config and runs the step loop:
// gradient accumulation over micro-batches, loss scaling (fp16), clipping by the global gradient
// norm, AdamW with the LR schedule, metrics, validation, checkpoints and exact resume.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/launch_env.h"
#include "comm/process_groups.h"
#include "data/loader.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "model/transformer.h"
#include "optim/adamw.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"
#include "parallel/data_parallel.h"
#include "parallel/pipeline.h"
#include "parallel/ring_attention.h"
#include "parallel/zero.h"

namespace strata {

struct TrainOptions {
  // "" starts fresh; "auto" resumes from the newest complete checkpoint in checkpoint_dir() (or
  // starts fresh when there is none); anything else is a checkpoint folder to resume from.
  std::string resume;
  // A checkpoint whose weights (only) initialise the model, in place of the random ones: any
  // layout, e.g. `strata convert --from-hf`'s. A resume (above) takes precedence over it.
  std::string init_from;
  bool show_progress = true;
  // Stop (with a checkpoint) after this optimizer step even though train.steps is larger, as an
  // interrupted run would; 0: run to train.steps.
  int64_t stop_at_step = 0;
  // Called after the backward of every step, before the gradient norm is taken: tests plant
  // overflows or inspect gradients here.
  std::function<void(int64_t step, ParameterRegistry& params)> after_backward;
};

// Preemption: SIGTERM or SIGUSR1 asks a run to stop. Installed by `strata train`; the trainer
// checks after every step (every rank agrees on the step), writes a checkpoint and returns.
void install_preemption_handlers();
bool preemption_requested();
void request_preemption();  // what the handlers do; tests call it directly
void clear_preemption();    // the trainer acted on it

struct TrainSummary {
  int64_t first_step = 0;  // the first step this run executed
  int64_t last_step = 0;
  std::vector<double> losses;  // train loss of each step this run executed
  std::vector<bool> skipped;   // whether each step's update was skipped (fp16 overflow)
  std::optional<double> last_val_loss;
  std::string last_checkpoint;
  bool preempted = false;  // stopped early by a signal, after writing last_checkpoint
  std::optional<double> best_val_loss;
  double seconds = 0;  // this run's steps, wall time
  int64_t tokens = 0;  // this run's training tokens
};

class Trainer {
 public:
  // `groups`: the process groups of a multi-rank run (their grid must match config.parallel), or
  // nullptr for one process.
  Trainer(const Config& config, TrainOptions options, const ProcessGroups* groups = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  TrainSummary run();

  Transformer& model() { return *model_; }
  const AdamW& optimizer() const { return *optimizer_; }
  // Mean loss over the validation set's first train.eval_batches batches.
  double evaluate();
  // Writes a checkpoint of the current state; returns its folder.
  std::string save(int64_t step);
  // What holds the parameters between uses under ZeRO stage 3 (nullptr otherwise): acquire() the
  // registry's parameters to read their whole values, release() them after.
  ParamGate* param_gate() { return zero_.get(); }
  // The pipeline's measurements of the last step (bubble, activations held); nullptr without one.
  const PipelineStats* pipeline_stats() const { return pipeline_ ? &pipeline_->last_stats() : nullptr; }

 private:
  void resume_from(const std::string& path);
  std::vector<CheckpointEntry> checkpoint_entries();

  bool is_rank0() const { return groups_ == nullptr || groups_->grid().rank() == 0; }
  // The mean over dp ranks of a per-rank value (each rank's share of the batch is equal).
  double dp_mean(double local) const;
  // This rank's share of a batch's sequences: under sequence parallelism its two zigzag chunks of
  // each row (parallel/ring_attention.h), else the batch itself.
  Batch sequence_share(const Batch& batch) const;
  // The sum over pipeline stages of a per-stage value (the value itself without a pipeline).
  double pp_sum(double local) const;
  // Tied embeddings split over the pipeline: adds the first stage's table gradient and the last
  // stage's mirror's, on both.
  void sum_tied_grads();
  // Brings expert gradients (expert parallelism) to the dp x sp mean the rest of the model has.
  void scale_expert_grads();
  // Sums over tp the gradients that tp ranks only hold parts of (Parameter::tp_partial_grad).
  void reduce_partial_grads();
  // The gradient norm of the whole model, each parameter counted once however it is split.
  double global_grad_norm();
  // On a GPU (one process): the step's decision and update without a host wait between them
  // (ops::grad_norm_and_check, clip_factor, AdamW::step_on_device), then one read of what the
  // host needs. The optimizer's step count is the caller's to advance (AdamW::count_step).
  struct DeviceDecision {
    double loss_sum = 0;  // the micro-batches' mean losses, summed
    double norm = 0;      // the gradient norm (unscaled)
    bool skipped = false; // non-finite loss or gradient: the update was not made
    Tensor routing_sums;  // the MoE routing sums (Transformer::routing_sums), on the CPU
  };
  DeviceDecision decide_and_update_on_device(double lr, double loss_scale);
  // Whether the step's decision and update run on the GPU (a CUDA run whose optimizer is not
  // offloaded to the host); else on the host, from the gradients where they are.
  bool device_step() const { return device_ && !config_.parallel.offload.optimizer; }
  CheckpointGroup checkpoint_group() const;

  Config config_;
  TrainOptions options_;
  const ProcessGroups* groups_ = nullptr;
  // The run's GPU (a CudaDevice) when train.device resolves to cuda; null on the CPU. Declared
  // before everything holding tensors, so it outlives them.
  std::shared_ptr<Allocator> device_;
  Tensor loss_sum_;  // the micro-batches' losses summed on the device (Transformer::set_loss_sink)
  // One-element device tensors of the step's decision (decide_and_update_on_device).
  Tensor step_sum_squares_, step_nonfinite_, step_grad_scale_, step_skip_, step_norm_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<GradientReducer> expert_reducer_;
  int64_t a2a_bytes_ = 0;  // bytes this rank's MoE all-to-alls sent to other ranks this step  // experts under expert parallelism (ep_dp)
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<ZeroEngine> zero_;  // ZeRO stages 2 and 3 over dp
  std::unique_ptr<PipelineEngine> pipeline_;
  std::unique_ptr<AdamW> optimizer_;
  LrSchedule schedule_;
  LossScaler scaler_;
  std::shared_ptr<const TokenDataset> train_set_, val_set_;
  std::unique_ptr<DataLoader> loader_;
  int64_t step_ = 0;  // optimizer steps completed
  int64_t bad_steps_ = 0;  // steps in a row with a non-finite loss or gradient
  Recompute recompute_ = Recompute::none;
};

// The parameters' dtype of a run in train.precision `precision` (fp32, bf16, fp16).
DType precision_dtype(const std::string& precision);
// train.device resolved for a run: a CUDA device (the GPU of this process's local rank) for cuda,
// or for auto when a GPU is visible and the run is one CUDA training covers; null for the CPU.
// cuda on a run it does not cover, or without a GPU, is an error naming the reason.
std::shared_ptr<Allocator> training_device(const Config& config);

// The communication backend of a multi-rank run and this rank's GPU for it (-1 for none), from
// parallel.backend: mpi; nccl (needs train.device: cuda, a build with NCCL and a GPU for each
// rank of the node); auto: nccl where those hold, else mpi (CUDA tensors then go through host
// staging). The GPU is local_rank % GPUs, the one training_device takes.
struct TrainingBackend {
  Backend backend = Backend::mpi;
  int cuda_device = -1;
};
TrainingBackend training_backend(const Config& config, const LaunchEnv& env);

// Whether this rank writes its copy of `p` into a checkpoint: of the ranks holding the same
// values (dp replicas, sp peers, tp ranks of a replicated tensor) one writes; `each_dp`: the dp
// ranks hold different rows (ZeRO's sharded state), so each writes its own.
bool writes_checkpoint_copy(const Parameter& p, const ProcessGrid& grid, const ParallelConfig& par,
                            bool each_dp);

// Refuses, with an Error naming the keys, a layout the model, the batch or this build cannot run:
// splits the heads, FFN or vocabulary do not allow, a pipeline the layers or micro-batches cannot
// fill, a sequence the ring cannot cut, ZeRO combinations not built yet. Nothing is read or
// allocated: `strata estimate` asks the same before estimating.
void check_layout(const Config& config);

// CPU reference rate for MFU: the best of a few 1024^3 f32 gemms through the op interface, in
// FLOP/s (measured once per process).
double cpu_peak_flops();

}  // namespace strata
