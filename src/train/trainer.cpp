#include "train/trainer.h"

#include <algorithm>
#include <array>
#include <csignal>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "comm/launch_env.h"
#include "comm/watchdog.h"
#include "core/allocator.h"
#include "core/log.h"
#if STRATA_CUDA
#include "core/cuda/cuda_allocator.h"
#include "core/compute_device.h"
#if STRATA_CUDA
#include "core/cuda/cuda_device.h"
#endif
#endif
#include "core/random.h"
#include "kernels/ops.h"
#include "model/attention.h"
#include "model/flops.h"
#include "train/metrics.h"

namespace strata {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::shared_ptr<const TokenDataset> read_dataset(const std::string& path, const char* key,
                                                 int64_t vocab_size) {
  auto set = std::make_shared<const TokenDataset>(TokenDataset::read(path));
  STRATA_CHECK(set->info().vocab_size <= vocab_size, key, " '", path, "' holds ids up to ",
               set->info().vocab_size, " but model.vocab_size is ", vocab_size);
  return set;
}

}  // namespace

namespace {
volatile std::sig_atomic_t preempt_flag = 0;
extern "C" void on_preemption_signal(int) { preempt_flag = 1; }
}  // namespace

void install_preemption_handlers() {
  std::signal(SIGTERM, on_preemption_signal);
  std::signal(SIGUSR1, on_preemption_signal);
}

bool preemption_requested() { return preempt_flag != 0; }
void request_preemption() { preempt_flag = 1; }
void clear_preemption() { preempt_flag = 0; }

double cpu_peak_flops() {
  static const double peak = [] {
    const int64_t n = 1024;
    Tensor a = Tensor::empty({n, n}, DType::f32), b = Tensor::empty({n, n}, DType::f32),
           c = Tensor::empty({n, n}, DType::f32);
    fill_uniform(a, 1, 1, -1, 1);
    fill_uniform(b, 1, 2, -1, 1);
    double best = 0;
    for (int i = 0; i < 3; ++i) {
      auto start = Clock::now();
      ops::gemm(a, b, c);
      best = std::max(best, 2.0 * n * n * n / seconds_since(start));
    }
    return best;
  }();
  return peak;
}

bool writes_checkpoint_copy(const Parameter& p, const ProcessGrid& g, const ParallelConfig& par, bool each_dp) {
  const bool first_copy = par.ep > 1 && p.expert
                              ? g.coordinate(Axis::ep_dp) == 0
                              : (each_dp || g.coordinate(Axis::dp) == 0) && g.coordinate(Axis::sp) == 0;
  return !p.mirror && first_copy && (!p.shard.replicated() || g.coordinate(Axis::tp) == 0);
}

void check_layout(const Config& config) {
  const ParallelConfig& par = config.parallel;
  // The model's splits: heads and FFN over tp, the vocabulary padded over tp.
  check_attention_layout(config.model, par.tp);
  STRATA_CHECK(config.model.d_ff % par.tp == 0, "parallel.tp = ", par.tp,
               " does not divide model.d_ff = ", config.model.d_ff);
  vocab_shard(config.model.vocab_size, par.tp - 1, par.tp);
  STRATA_CHECK(par.ep == 1 || config.model.moe.n_experts > 0, "parallel.ep = ", par.ep,
               " needs mixture-of-experts layers (model.moe.n_experts > 0)");
  if (par.sp > 1) zigzag_chunk_len(config.train.seq_len, static_cast<int>(par.sp));  // refuses
  // The pipeline's shape.
  const int64_t accumulation = config.train.global_batch / (config.train.micro_batch * par.dp);
  const PipelineSchedule pp_kind = parse_pipeline_schedule(par.pp_schedule);
  const int pp = static_cast<int>(par.pp), virtual_stages = static_cast<int>(par.virtual_stages);
  STRATA_CHECK(pp > 1 || virtual_stages == 1, "parallel.virtual_stages = ", virtual_stages,
               " needs a pipeline (parallel.pp > 1)");
  if (pp > 1) check_pipeline_shape(pp_kind, {pp, virtual_stages, static_cast<int>(accumulation)});
  pipeline_layer_split(config.model.n_layers, pp, virtual_stages, par.pp_layers);
  // What ZeRO does not combine with yet.
  STRATA_CHECK(par.zero == 0 || par.ep == 1, "parallel.zero = ", par.zero, " with parallel.ep = ",
               par.ep, ": ZeRO does not yet shard the state of experts split over ep");
  STRATA_CHECK(par.zero <= 1 || par.sp == 1, "parallel.zero = ", par.zero, " with parallel.sp = ",
               par.sp, ": ZeRO stages 2 and 3 do not yet reduce gradients over sequence-parallel "
               "ranks (stage 1 does)");
  STRATA_CHECK(!par.offload.params || par.zero == 3, "parallel.offload.params needs "
               "parallel.zero = 3 (only stage 3 shards the parameters), got parallel.zero = ", par.zero);
}

// The gradient norm's parts, which sum over different groups: 0 replicated, 1 tp-sharded,
// 2 tp-sharded experts, 3 replicated experts (the tp-sharded parts 1-2 and the experts' 2-3 are
// each contiguous, so one all-reduce takes them).
namespace {
size_t norm_part(const Parameter& p) {
  return p.expert ? (p.shard.replicated() ? 3 : 2) : (p.shard.replicated() ? 0 : 1);
}
}  // namespace

std::shared_ptr<Allocator> training_device(const Config& config) {
  // What training on CUDA does not cover: every layout over several ranks runs (over NCCL or MPI
  // with host staging, each rank on the GPU of its local rank), ZeRO's stages and offload included,
  // except stage 3's parameter shards on the host with the optimizer on the GPU (the update of
  // host-held rows runs in the host optimizer).
  const ParallelConfig& par = config.parallel;
  std::string missing;
  if (par.offload.params && !par.offload.optimizer)
    missing = "parallel.offload.params without parallel.offload.optimizer (the rows of host-held "
              "parameters are updated by the host optimizer)";
  return select_device("key 'train.device'", config.train.device, missing, read_launch_env().local_rank);
}

TrainingBackend training_backend(const Config& config, const LaunchEnv& env) {
  const std::string& want = config.parallel.backend;
  STRATA_CHECK(want == "auto" || want == "mpi" || want == "nccl", "key 'parallel.backend': '", want,
               "' is not a backend (auto, mpi or nccl)");
  if (want == "mpi") return {};
  const int gpus = cuda_device_count();
  // The simulated GPU gives every process a GPU of its own.
  const bool gpu_each = gpus > 0 && (STRATA_GPUSIM || gpus >= env.local_size);
  const bool can = STRATA_HAVE_NCCL && config.train.device == "cuda" && gpu_each;
  if (want == "nccl") {
    STRATA_CHECK(STRATA_HAVE_NCCL, "parallel.backend: nccl needs the CUDA backend, which this build "
                 "does not have; use mpi or auto");
    STRATA_CHECK(config.train.device == "cuda", "parallel.backend: nccl carries CUDA tensors: it "
                 "needs train.device: cuda (got '", config.train.device, "'); use mpi or auto");
    STRATA_CHECK(gpu_each, "parallel.backend: nccl needs a GPU for each rank: ", env.local_size,
                 " ranks on this node see ", gpus, " GPUs (NCCL refuses two ranks on one GPU); use "
                 "mpi or auto, which stage through host memory");
  }
  if (!can) return {};
  return {Backend::nccl, env.local_rank % gpus};
}

Trainer::Trainer(const Config& config, TrainOptions options, const ProcessGroups* groups)
    : config_(config),
      options_(std::move(options)),
      groups_(groups),
      scaler_(config.train.precision == "fp16") {
  const ParallelConfig& par = config.parallel;
  const int world = groups ? groups->grid().world_size() : 1;
  device_ = training_device(config);
  STRATA_CHECK(par.dp * par.tp * par.pp * par.sp == world, "parallel layout dp*tp*pp*sp = ",
               par.dp * par.tp * par.pp * par.sp, " but ", world, " processes were launched",
               world == 1 ? " (launch the ranks with mpirun)" : "");
  check_layout(config);
  const PipelineSchedule pp_kind = parse_pipeline_schedule(par.pp_schedule);
  const int pp = static_cast<int>(par.pp), virtual_stages = static_cast<int>(par.virtual_stages);
  // A resume target that is not a checkpoint fails before any data is read.
  if (!options_.resume.empty() && options_.resume != "auto") read_manifest(options_.resume, false);
  if (!options_.init_from.empty()) read_manifest(options_.init_from, false);
  recompute_ = parse_recompute(config.train.recompute);
  schedule_ = LrSchedule{config.optim.lr, config.optim.min_lr, config.optim.warmup_steps,
                         config.train.steps, config.optim.schedule};

  train_set_ = read_dataset(config.data.train, "data.train", config.model.vocab_size);
  if (config.train.eval_every > 0)
    val_set_ = read_dataset(config.data.val, "data.val", config.model.vocab_size);
  const int dp_rank = groups ? groups->grid().coordinate(Axis::dp) : 0;
  loader_ = std::make_unique<DataLoader>(train_set_, config.train.seq_len, config.train.global_batch,
                                         dp_rank, static_cast<int>(par.dp),
                                         static_cast<uint64_t>(config.train.seed));

  TensorParallel tp;
  if (groups)
    tp = {&groups->tp(), groups->grid().coordinate(Axis::tp), groups->tp().size(),
          par.tp_sequence_parallel};
  std::vector<ChunkSpec> chunks;
  if (pp > 1)
    chunks = pipeline_chunks(config.model.n_layers, pp, virtual_stages,
                             groups->grid().coordinate(Axis::pp), par.pp_layers);
  SequenceParallel sp;
  if (groups && par.sp > 1)
    sp = {&groups->sp(), groups->grid().coordinate(Axis::sp), groups->sp().size()};
  ExpertParallel ep;
  if (groups && par.ep > 1)
    ep = {&groups->ep(), groups->grid().coordinate(Axis::ep), groups->ep().size(), &a2a_bytes_};
  // ZeRO over dp: stages 2 and 3 hold gradients (and values) only while a layer uses them.
  ZeroShard zero;
  if (groups && par.zero >= 1 && groups->dp().size() > 1)
    zero = {&groups->dp(), groups->grid().coordinate(Axis::dp), groups->dp().size(),
            static_cast<int>(par.zero), par.bucket_mb};
  const bool engine = zero.active() && zero.stage >= 2;
  const ParamStorage storage{.values = !(engine && zero.stage == 3), .grads = !engine, .allocator = device_.get()};
  model_ = std::make_unique<Transformer>(config.model, precision_dtype(config.train.precision), tp, chunks, sp, ep, storage);
  if (engine) {
    zero_ = std::make_unique<ZeroEngine>(model_->params(), zero, par.offload.optimizer, par.offload.params);
    model_->set_param_gate(zero_.get());
  }
  if (pp > 1)
    pipeline_ = std::make_unique<PipelineEngine>(*model_, pp_kind, pp, virtual_stages, &groups->pp(),
                                                 &groups->pp_backward());
  model_->params().initialize(static_cast<uint64_t>(config.train.seed));
  if (config.optim.decay_all)
    for (auto& p : model_->params().all()) p->weight_decay = true;
  if (zero_) {
    model_->set_grad_ready_hook([this](std::span<Parameter* const> ready) { zero_->ready(ready); });
  } else if (groups && groups->dp_sp().size() > 1) {
    // Under expert parallelism the experts' gradients are reduced over the ranks holding the same
    // experts (ep_dp), everything else over dp x sp.
    std::vector<Parameter*> shared, experts;
    for (Parameter* p : model_->params_in_backward_order())
      (par.ep > 1 && p->expert ? experts : shared).push_back(p);
    reducer_ = std::make_unique<GradientReducer>(shared, groups->dp_sp(), par.bucket_mb);
    if (!experts.empty() && groups->ep_dp().size() > 1)
      expert_reducer_ = std::make_unique<GradientReducer>(experts, groups->ep_dp(), par.bucket_mb);
    model_->set_grad_ready_hook([this](std::span<Parameter* const> ready) {
      std::vector<Parameter*> shared_ready, expert_ready;
      for (Parameter* p : ready)
        (config_.parallel.ep > 1 && p->expert ? expert_ready : shared_ready).push_back(p);
      reducer_->ready(shared_ready);
      if (expert_reducer_) expert_reducer_->ready(expert_ready);
    });
  }
  optimizer_ = std::make_unique<AdamW>(
      model_->params(),
      AdamWHyper{config.optim.betas[0], config.optim.betas[1], config.optim.eps,
                 config.optim.weight_decay},
      zero, par.offload.optimizer);

  if (!options_.init_from.empty()) {
    // Weights only (a converted Hugging Face model, another run's checkpoint): the run starts
    // at step 0 with fresh optimizer state and data order.
    std::vector<CheckpointEntry> weights = checkpoint_entries();
    weights.erase(std::remove_if(weights.begin(), weights.end(),
                                 [](const CheckpointEntry& e) { return e.name.rfind("optim/", 0) == 0; }),
                  weights.end());
    load_checkpoint(options_.init_from, weights);
    optimizer_->refresh_masters(/*copied_only=*/false);
    log::info("initialised the weights from ", options_.init_from);
  }
  if (groups)
    Watchdog::start(par.timeout_s, config.train.out_dir, groups->grid().rank(), groups->grid().world_size());
  std::string resume = options_.resume;
  if (resume == "auto") {
    auto latest = latest_checkpoint(config_.checkpoint_dir());
    resume = latest ? *latest : "";
    if (!latest) log::info("no checkpoint in ", config_.checkpoint_dir(), ": starting fresh");
  }
  if (!resume.empty()) resume_from(resume);
}

Trainer::~Trainer() { Watchdog::stop(); }

DType precision_dtype(const std::string& precision) {
  return precision == "bf16" ? DType::bf16 : precision == "fp16" ? DType::f16 : DType::f32;
}


std::vector<CheckpointEntry> Trainer::checkpoint_entries() {
  std::vector<CheckpointEntry> entries;
  auto writes = [&](const Parameter& p, bool each_dp) {
    return !groups_ || writes_checkpoint_copy(p, groups_->grid(), config_.parallel, each_dp);
  };
  // Under ZeRO each dp rank holds (and writes) its own rows of the optimizer state, and under
  // stage 3 of the parameters.
  const bool sharded_state = config_.parallel.zero >= 1 && groups_ && groups_->dp().size() > 1;
  for (auto& p : model_->params().all()) {
    if (p->zero.value.defined()) {
      std::vector<int64_t> offset = p->global_offset();
      if (!offset.empty()) offset[0] += p->zero.begin;
      entries.push_back({p->name, p->global_shape, offset, &p->zero.value,
                         p->zero.value.numel() > 0 && writes(*p, true)});
    } else {
      entries.push_back({p->name, p->global_shape, p->global_offset(), &p->value, writes(*p, false)});
    }
  }
  for (auto& s : optimizer_->state()) {
    std::vector<int64_t> offset = s.param->global_offset();
    if (!offset.empty()) offset[0] += s.row_offset;
    const bool write = s.tensor->numel() > 0 && writes(*s.param, sharded_state);
    entries.push_back({"optim/" + s.name, s.param->global_shape, offset, s.tensor, write});
  }
  return entries;
}

std::string Trainer::save(int64_t step) {
  Manifest m;
  m.step = step;
  m.config_yaml = config_to_yaml(config_);
  const ParallelConfig& par = config_.parallel;
  m.layout = {{"world", par.dp * par.tp * par.pp * par.sp}, {"dp", par.dp}, {"tp", par.tp},
              {"pp", par.pp}, {"sp", par.sp}, {"ep", par.ep}};
  const LoaderState data = loader_->state();
  const LossScalerState& scale = scaler_.state();
  auto exact = [](double x) {  // a double as text that reads back bit for bit
    char text[40];
    std::snprintf(text, sizeof(text), "%.17g", x);
    return std::string(text);
  };
  m.state = {{"data.epoch", std::to_string(data.epoch)},
             {"data.position", std::to_string(data.position)},
             {"loss_scale", exact(scale.scale)},
             {"loss_scale.good_steps", std::to_string(scale.good_steps)},
             {"loss_scale.skipped_steps", std::to_string(scale.skipped_steps)},
             {"optimizer.steps", std::to_string(optimizer_->steps_taken())}};
  const CheckpointGroup group = checkpoint_group();
  const std::string path = save_checkpoint(config_.checkpoint_dir(), m, checkpoint_entries(), group);
  if (is_rank0()) prune_checkpoints(config_.checkpoint_dir(), config_.checkpoint.keep);
  group.barrier();
  return path;
}

CheckpointGroup Trainer::checkpoint_group() const {
  CheckpointGroup g;
  if (!groups_) return g;
  Communicator& world = groups_->world();
  g.rank = world.rank();
  g.world = world.size();
  g.barrier = [&world] { world.barrier(); };
  // Strings travel as fixed 256-byte records (a file's name, size and checksum fit easily).
  g.gather = [&world](const std::string& mine) {
    constexpr int64_t kRecord = 256;
    STRATA_CHECK(static_cast<int64_t>(mine.size()) < kRecord, "checkpoint record too long: ", mine);
    Tensor in = Tensor::zeros({kRecord}, DType::u16);
    for (size_t i = 0; i < mine.size(); ++i) in.data<uint16_t>()[i] = static_cast<uint8_t>(mine[i]);
    Tensor out = Tensor::empty({kRecord * world.size()}, DType::u16);
    world.all_gather(in, out);
    std::vector<std::string> all;
    if (world.rank() != 0) return all;
    for (int r = 0; r < world.size(); ++r) {
      std::string s;
      for (int64_t i = 0; i < kRecord; ++i) {
        const uint16_t c = out.data<uint16_t>()[r * kRecord + i];
        if (c == 0) break;
        s.push_back(static_cast<char>(c));
      }
      all.push_back(s);
    }
    return all;
  };
  return g;
}

void Trainer::sum_tied_grads() {
  if (!pipeline_ || !config_.model.tie_embeddings) return;
  const int stage = groups_->grid().coordinate(Axis::pp), last = groups_->pp().size() - 1;
  if (stage != 0 && stage != last) return;
  // The first stage's table and the last stage's mirror: each adds the other's gradient. a + b and
  // b + a are the same float, so both copies take bit-identical updates and stay equal.
  Tensor& mine = model_->params().get("embed.tokens.weight").accum();
  Tensor theirs = Tensor::empty(mine.shape(), mine.dtype(), allocator_of(mine));
  const int peer = stage == 0 ? last : 0;
  groups_->pp().send_recv(mine.contiguous(), peer, theirs, peer);
  ops::add(mine, theirs, mine);
}

void Trainer::scale_expert_grads() {
  // An expert's gradient is the sum over the tokens of its whole ep group (the all-to-all brought
  // them); averaged over the ep_dp copies it is ep times the dp x sp mean the rest of the model has.
  const int64_t ep = config_.parallel.ep;
  if (ep == 1) return;
  for (auto& p : model_->params().all())
    if (p->expert) ops::scale(p->accum(), 1.0 / static_cast<double>(ep));
}

void Trainer::reduce_partial_grads() {
  if (!groups_ || groups_->tp().size() == 1) return;
  for (auto& p : model_->params().all())
    if (p->tp_partial_grad) groups_->tp().all_reduce(p->accum(), ReduceOp::sum);
}

double Trainer::global_grad_norm() {
  // Every parameter counted once: a tp-sharded one contributes each rank's slice (summed over tp),
  // a replicated one its (identical) local copy. Gradients are already the same across dp.
  // Each pipeline stage holds its own layers (a tied head's mirror is left out: its owner counts it).
  // Experts split over ep add up over the ep group.
  // Under ZeRO stages 2 and 3 each dp rank holds its rows of every gradient: their sums add up
  // over dp.
  double sums[4] = {0, 0, 0, 0};  // by norm_part
  for (auto& p : model_->params().all())
    if (!p->mirror) sums[norm_part(*p)] += ops::sum_squares(p->accum());
  if (zero_) {
    Tensor x = Tensor::from_vector(std::vector<double>(std::begin(sums), std::end(sums)), {4});
    groups_->dp().all_reduce(x, ReduceOp::sum);
    std::copy_n(x.data<double>(), 4, sums);
  }
  if (groups_ && groups_->tp().size() > 1) {
    Tensor x = Tensor::from_vector(std::vector<double>{sums[1], sums[2]}, {2});
    groups_->tp().all_reduce(x, ReduceOp::sum);
    sums[1] = x.data<double>()[0];
    sums[2] = x.data<double>()[1];
  }
  double experts = sums[2] + sums[3];
  if (groups_ && config_.parallel.ep > 1) {
    Tensor x = Tensor::from_vector(std::vector<double>{experts}, {1});
    groups_->ep().all_reduce(x, ReduceOp::sum);
    experts = x.data<double>()[0];
  }
  return std::sqrt(pp_sum(sums[0] + sums[1] + experts));
}

Trainer::DeviceDecision Trainer::decide_and_update_on_device(double lr, double loss_scale) {
  // The gradient norm, the non-finite check, the clip factor, the skip flag and the update, all
  // queued on the device; then the step's one wait, for the loss, the norm and the skip flag.
  Allocator& device = *device_;
  if (!step_norm_.defined()) {
    step_sum_squares_ = Tensor::empty({4}, DType::f64, device);
    step_nonfinite_ = Tensor::empty({1}, DType::i32, device);
    step_grad_scale_ = Tensor::empty({1}, DType::f32, device);
    step_skip_ = Tensor::empty({1}, DType::i32, device);
    step_norm_ = Tensor::empty({1}, DType::f64, device);
  }
  // Sums of squares in the four norm_part parts: replicated gradients are identical over dp and
  // tp; the sharded ones (1, 2) sum over tp; experts split over ep (2, 3) sum over ep; all four
  // over the pipeline's stages (each holds its own layers; a tied head's mirror is left out, its
  // owner counts it). The overflow flag and the loss agree over the layout (the losses are the
  // dp x sp mean), so every rank takes the same decision. Under a pipeline the loss is the
  // engine's, on the host: a non-finite one comes with non-finite gradients on the last stage,
  // which the flag carries to every stage.
  std::array<std::vector<const Tensor*>, 4> parts;
  for (auto& p : model_->params().all())
    if (!p->mirror) parts[norm_part(*p)].push_back(&p->accum());
  // The first part sets the flag; the others accumulate (the flag ORs in, each sum adds to its
  // part, cleared first).
  ops::fill(step_sum_squares_, 0.0);
  for (size_t i = 0; i < parts.size(); ++i) {
    Tensor part = step_sum_squares_.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
    ops::grad_norm_and_check(parts[i], part, step_nonfinite_, /*accumulate=*/i > 0);
  }
  if (zero_) {
    // ZeRO stages 2 and 3: each dp rank holds its rows of every gradient.
    groups_->dp().all_reduce(step_sum_squares_, ReduceOp::sum);
    groups_->dp().all_reduce(step_nonfinite_, ReduceOp::max);
  }
  if (groups_ && groups_->tp().size() > 1) {
    Tensor sharded = step_sum_squares_.slice(0, 1, 3);
    groups_->tp().all_reduce(sharded, ReduceOp::sum);
    groups_->tp().all_reduce(step_nonfinite_, ReduceOp::max);
  }
  if (groups_ && config_.parallel.ep > 1) {
    Tensor experts = step_sum_squares_.slice(0, 2, 4);
    groups_->ep().all_reduce(experts, ReduceOp::sum);
    groups_->ep().all_reduce(step_nonfinite_, ReduceOp::max);
  }
  if (pipeline_) {
    groups_->pp().all_reduce(step_sum_squares_, ReduceOp::sum);
    groups_->pp().all_reduce(step_nonfinite_, ReduceOp::max);
  }
  const Tensor no_loss;
  const Tensor& loss = pipeline_ ? no_loss : loss_sum_;
  if (!pipeline_ && groups_ && groups_->dp_sp().size() > 1) groups_->dp_sp().all_reduce(loss_sum_, ReduceOp::avg);
  ops::clip_factor(step_sum_squares_, step_nonfinite_, loss,
                   {.max_norm = config_.train.grad_clip, .loss_scale = loss_scale}, step_grad_scale_,
                   step_skip_, step_norm_);
  optimizer_->step_on_device(lr, step_grad_scale_, step_skip_);
  // The step's one wait: its decision and (MoE) the routing sums the metrics log.
  const std::vector<Tensor> read = to_cpu_together({&loss, &step_norm_, &step_skip_, &model_->routing_sums()});
  DeviceDecision d;
  d.loss_sum = read[0].defined() ? read[0].data<double>()[0] : 0.0;
  d.norm = read[1].data<double>()[0];
  d.skipped = read[2].data<int32_t>()[0] != 0;
  d.routing_sums = read[3];
  return d;
}

Batch Trainer::sequence_share(const Batch& batch) const {
  if (!groups_ || groups_->sp().size() == 1 || batch.n_rows() == 0) return batch;
  const int rank = groups_->grid().coordinate(Axis::sp), sp = groups_->sp().size();
  return {zigzag_local(batch.input, rank, sp), zigzag_local(batch.target, rank, sp)};
}

double Trainer::pp_sum(double local) const {
  if (!pipeline_) return local;
  Tensor x = Tensor::from_vector(std::vector<double>{local}, {1});
  groups_->pp().all_reduce(x, ReduceOp::sum);
  return x.data<double>()[0];
}

double Trainer::dp_mean(double local) const {
  if (!groups_ || groups_->dp_sp().size() == 1) return local;
  Tensor x = Tensor::from_vector(std::vector<double>{local}, {1});
  groups_->dp_sp().all_reduce(x, ReduceOp::avg);
  return x.data<double>()[0];
}

void Trainer::resume_from(const std::string& path) {
  const Manifest m = read_manifest(path);
  load_checkpoint(path, checkpoint_entries());
  auto number = [&](const char* key) {
    auto it = m.state.find(key);
    STRATA_CHECK(it != m.state.end(), "checkpoint '", path, "': manifest state lacks '", key, "'");
    return it->second;
  };
  loader_->restore({std::stoll(number("data.epoch")), std::stoll(number("data.position"))});
  scaler_.restore({std::stod(number("loss_scale")), std::stoll(number("loss_scale.good_steps")),
                   std::stoll(number("loss_scale.skipped_steps"))});
  optimizer_->set_steps_taken(std::stoll(number("optimizer.steps")));
  optimizer_->refresh_masters(/*copied_only=*/true);
  step_ = m.step;
  log::info("resumed from ", path, " at step ", step_);
}

double Trainer::evaluate() {
  // A run with train.eval_every 0 reads the validation set only when asked.
  if (!val_set_) val_set_ = read_dataset(config_.data.val, "data.val", config_.model.vocab_size);
  const int dp_rank = groups_ ? groups_->grid().coordinate(Axis::dp) : 0;
  EvalLoader eval(val_set_, config_.train.seq_len, config_.train.micro_batch * config_.parallel.dp,
                  dp_rank, static_cast<int>(config_.parallel.dp));
  const int64_t n = std::min(eval.n_batches(), config_.train.eval_batches *
                                                   (config_.train.global_batch / config_.train.micro_batch));
  double weighted = 0;
  int64_t rows = 0;
  std::vector<Batch> batches;
  for (int64_t b = 0; b < n; ++b) {
    Batch batch = sequence_share(eval.batch(b));
    if (config_.parallel.ep > 1) {
      // Expert parallelism exchanges tokens between dp ranks in every MoE forward: all ranks must
      // run the same forwards, so a short last batch that leaves some rank without a row is
      // skipped everywhere (one process would still count it).
      Tensor fewest = Tensor::from_vector(std::vector<double>{-static_cast<double>(batch.n_rows())}, {1});
      groups_->dp_sp().all_reduce(fewest, ReduceOp::max);  // max of negatives: the fewest rows
      if (-fewest.data<double>()[0] == 0) continue;
    }
    if (batch.n_rows() == 0) continue;
    rows += batch.n_rows();
    if (pipeline_)
      batches.push_back(batch);
    else
      weighted += model_->forward(batch.input, batch.target, Recompute::full) *
                  static_cast<double>(batch.n_rows());
  }
  // Under a pipeline the last stage computes the losses; the stages' sum hands them to everyone.
  if (pipeline_) weighted = pp_sum(batches.empty() ? 0.0 : pipeline_->forward_only(batches));
  // Ranks may hold different numbers of rows (the last batch is short): weight by rows.
  Tensor totals = Tensor::from_vector(std::vector<double>{weighted, static_cast<double>(rows)}, {2});
  if (groups_ && groups_->dp_sp().size() > 1) groups_->dp_sp().all_reduce(totals, ReduceOp::sum);
  STRATA_CHECK(totals.data<double>()[1] > 0, "data.val '", config_.data.val,
               "' holds no full sequence of ", config_.train.seq_len, " tokens");
  return totals.data<double>()[0] / totals.data<double>()[1];
}

TrainSummary Trainer::run() {
  const TrainConfig& t = config_.train;
  const int64_t accumulation = t.global_batch / (t.micro_batch * config_.parallel.dp);
  const double tokens_per_step = static_cast<double>(t.global_batch * t.seq_len);
  const double flops_per_step = count_model(config_.model).train_flops_per_token(t.seq_len) * tokens_per_step;
  const bool show = options_.show_progress && is_rank0();
  const double peak = show ? cpu_peak_flops() : 0.0;

  TrainSummary summary;
  summary.first_step = step_ + 1;
  std::unique_ptr<MetricsLog> metrics;
  if (is_rank0()) metrics = std::make_unique<MetricsLog>(t.out_dir, /*append=*/step_ > 0, step_ + 1);
  if (show)
    log::info("training ", config_.model.arch, " (", count_model(config_.model).params,
              " parameters) for ", t.steps, " steps of ", t.global_batch, " x ", t.seq_len,
              " tokens, ", t.precision, ", accumulation ", accumulation);

  double run_seconds = 0;  // the steps of this run so far, for the ETA
  const int64_t last = options_.stop_at_step > 0 ? std::min(options_.stop_at_step, t.steps) : t.steps;
  // Fault injection for the watchdog's test: STRATA_FAULT_HANG=RANK:STEP makes that rank stop
  // responding at the start of that step.
  long long hang_rank = -1, hang_step = -1;
  if (const char* hang = std::getenv("STRATA_FAULT_HANG"))
    if (std::sscanf(hang, "%lld:%lld", &hang_rank, &hang_step) != 2) hang_rank = -1;
  while (step_ < last) {
    const int64_t step = step_ + 1;
    Watchdog::set_step(step);
    if (groups_ && groups_->grid().rank() == hang_rank && step == hang_step) {
      log::warn("STRATA_FAULT_HANG: rank ", hang_rank, " stops responding at step ", step);
      std::this_thread::sleep_for(std::chrono::hours(24));
    }
    const auto start = Clock::now();
    ParameterRegistry& params = model_->params();
    params.zero_grads();
    const Batch batch = sequence_share(loader_->next_batch());
    const double scale = scaler_.scale();  // the backward's loss scale (update() may change it)
    if (reducer_) reducer_->begin_step();
    if (expert_reducer_) expert_reducer_->begin_step();
    model_->clear_routing_log();
    a2a_bytes_ = 0;
    double loss = 0, aux_loss = 0;
    if (pipeline_) {
      std::vector<Batch> micro;
      for (int64_t k = 0; k < accumulation; ++k) micro.push_back(batch.rows(k * t.micro_batch, t.micro_batch));
      // Each chunk's last micro-batch's backward communicates; the others accumulate locally.
      loss = pipeline_->train_step(micro, scale / static_cast<double>(accumulation), recompute_,
                                   [this](bool final_micro) {
                                     if (reducer_) reducer_->begin_backward(final_micro);
                                     if (expert_reducer_) expert_reducer_->begin_backward(final_micro);
                                   }) /
             static_cast<double>(accumulation);
      loss = pp_sum(loss);  // only the last stage has it
    } else {
      // On a GPU the micro-batches' losses add up on the device, read once below (with the
      // optimizer on the host, each is read as it comes: the host step waits for the gradients
      // anyway).
      if (device_step()) {
        if (!loss_sum_.defined()) loss_sum_ = Tensor::empty({1}, DType::f64, *device_);
        ops::fill(loss_sum_, 0.0);
        model_->set_loss_sink(&loss_sum_);
      }
      for (int64_t k = 0; k < accumulation; ++k) {
        const Batch micro = batch.rows(k * t.micro_batch, t.micro_batch);
        // Only the last micro-batch's backward communicates; the others accumulate locally.
        if (reducer_) reducer_->begin_backward(k == accumulation - 1);
        if (expert_reducer_) expert_reducer_->begin_backward(k == accumulation - 1);
        loss += model_->forward(micro.input, micro.target, recompute_) / static_cast<double>(accumulation);
        model_->backward(scale / static_cast<double>(accumulation));
      }
      if (device_step()) model_->set_loss_sink(nullptr);  // read with the step's decision below
    }
    if (reducer_) reducer_->finish();
    if (expert_reducer_) expert_reducer_->finish();
    if (zero_) zero_->finish();
    scale_expert_grads();
    reduce_partial_grads();
    sum_tied_grads();
    loss = dp_mean(loss);
    if (options_.after_backward) options_.after_backward(step, params);

    const double lr = schedule_.at(step);
    double norm = 0;
    bool apply = false;
    std::map<int64_t, MoeRouting> routing;  // what the MoE layers routed over the step
    if (device_step()) {
      const DeviceDecision d = decide_and_update_on_device(lr, scale);
      if (!pipeline_) loss = d.loss_sum / static_cast<double>(accumulation);
      norm = d.norm;
      apply = scaler_.update(norm) && !d.skipped;
      if (apply) optimizer_->count_step();
      routing = model_->routing_log_of(d.routing_sums);
    } else {
      norm = global_grad_norm() / scale;
      apply = scaler_.update(norm);
      routing = model_->routing_log();
    }
    // Their auxiliary losses: each pipeline stage has its own layers'.
    aux_loss = model_->weighted_aux_loss(routing) / static_cast<double>(accumulation);
    if (pipeline_) aux_loss = pp_sum(aux_loss);
    aux_loss = dp_mean(aux_loss);
    // A non-finite loss or gradient: the update is skipped (parameters and optimizer state stay as
    // they were, so nothing corrupt reaches a checkpoint); too many in a row end the run.
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      apply = false;
      ++bad_steps_;
      if (is_rank0() && !scaler_.enabled())
        log::warn("step ", step, ": ", std::isfinite(loss) ? "gradient norm" : "loss", " is not finite; the update "
                  "is skipped (", bad_steps_, " in a row, train.max_bad_steps = ", t.max_bad_steps, ")");
      STRATA_CHECK(bad_steps_ < t.max_bad_steps, "training diverged: ", bad_steps_, " steps in a row (to step ",
                   step, ") had a non-finite loss or gradient (train.max_bad_steps = ", t.max_bad_steps,
                   "); the last checkpoint is from before them");
    } else {
      bad_steps_ = 0;
    }
    if (apply && !device_step()) {
      const double clip = t.grad_clip > 0 && norm > t.grad_clip ? t.grad_clip / (norm + 1e-6) : 1.0;
      optimizer_->step(lr, clip / scale);
    }
    step_ = step;
    const double elapsed = seconds_since(start);

    StepMetrics m;
    m.step = step;
    m.total_steps = t.steps;
    m.loss = loss;
    m.lr = lr;
    m.grad_norm = norm;
    m.step_ms = 1e3 * elapsed;
    run_seconds += elapsed;
    m.eta_s = run_seconds / static_cast<double>(step - summary.first_step + 1) * static_cast<double>(t.steps - step);
    m.tokens_per_s = tokens_per_step / elapsed;
    const double world = groups_ ? groups_->grid().world_size() : 1;
    m.mfu = peak > 0 ? flops_per_step / elapsed / (peak * world) : 0.0;
    m.memory_mb = resident_memory_mb();
    {
      constexpr double kMiB = 1024.0 * 1024.0;
      const MemoryByKind held = cpu_memory_by_kind();
      auto mib = [&](MemoryPlace where, MemoryKind kind) {
        return static_cast<double>(held.at(where, kind)) / kMiB;
      };
      m.params_mb = mib(MemoryPlace::device, MemoryKind::params);
      m.grads_mb = mib(MemoryPlace::device, MemoryKind::grads);
      m.optimizer_mb = mib(MemoryPlace::device, MemoryKind::optimizer);
      m.offload_mb = mib(MemoryPlace::host, MemoryKind::params) + mib(MemoryPlace::host, MemoryKind::grads) +
                     mib(MemoryPlace::host, MemoryKind::optimizer);
      m.peak_mb = static_cast<double>(cpu_memory_stats().peak_allocated_bytes) / kMiB;
#if STRATA_CUDA
      if (auto* gpu = dynamic_cast<CudaDevice*>(device_.get())) {
        // On a GPU: what the run's tensors hold there (the CPU's tallies see only the host, and
        // keep what offload put there in offload_mb); under ZeRO stages 2 and 3 the row shards (a
        // stage 3 value is whole only while a layer runs).
        double values = 0, grads = 0;
        auto bytes = [](const Tensor& x) {
          return x.defined() && x.device().is_cuda() ? static_cast<double>(x.nbytes()) : 0.0;
        };
        for (const auto& p : params.all()) {
          values += bytes(p->value) + bytes(p->zero.value);
          grads += bytes(p->grad) + bytes(p->main_grad) + bytes(p->zero.grad);
        }
        m.params_mb = values / kMiB;
        m.grads_mb = grads / kMiB;
        const bool host_optimizer = config_.parallel.offload.optimizer;
        m.optimizer_mb = host_optimizer ? 0.0 : static_cast<double>(optimizer_->state_bytes()) / kMiB;
        m.peak_mb = static_cast<double>(gpu->memory_stats().peak_allocated_bytes) / kMiB;
      }
#endif
    }
    m.loss_scale = scaler_.scale();
    m.skipped = !apply;
    summary.losses.push_back(loss);
    summary.skipped.push_back(!apply);
    m.moe = config_.model.moe.n_experts > 0;
    m.aux_loss = aux_loss;
    m.all_to_all_bytes = a2a_bytes_;
    if (m.moe) {
      // Every MoE layer's counts over the whole batch: each rank fills the layers its stage holds
      // (per MoE layer: load per expert, dropped, choices), summed over the ranks that split the
      // batch (dp x sp) and over the pipeline's stages.
      const int64_t experts = config_.model.moe.n_experts;
      std::vector<int64_t> moe_layers;
      for (int64_t layer = 0; layer < config_.model.n_layers; ++layer)
        if (is_moe_layer(config_.model, layer)) moe_layers.push_back(layer);
      const auto width = static_cast<size_t>(experts + 2);
      std::vector<double> counts(moe_layers.size() * width, 0.0);
      for (const auto& [layer, r] : routing) {
        const auto at = static_cast<size_t>(
            std::find(moe_layers.begin(), moe_layers.end(), layer) - moe_layers.begin()) * width;
        for (size_t e = 0; e < r.load.size(); ++e) counts[at + e] = static_cast<double>(r.load[e]);
        counts[at + width - 2] = static_cast<double>(r.dropped);
        for (int64_t c : r.chosen) counts[at + width - 1] += static_cast<double>(c);
      }
      Tensor totals = Tensor::from_vector(counts, {static_cast<int64_t>(counts.size())});
      if (groups_ && groups_->dp_sp().size() > 1) groups_->dp_sp().all_reduce(totals, ReduceOp::sum);
      if (pipeline_) groups_->pp().all_reduce(totals, ReduceOp::sum);
      const double* c = totals.data<double>();
      for (size_t i = 0; i < moe_layers.size(); ++i) {
        const double* row = c + i * width;
        if (row[width - 1] == 0) continue;
        m.expert_load[moe_layers[i]].assign(row, row + experts);
        m.drop_rate[moe_layers[i]] = row[width - 2] / row[width - 1];
      }
    }
    if (pipeline_) {
      Tensor mine = Tensor::from_vector(std::vector<double>{pipeline_->last_stats().bubble()}, {1});
      Tensor all = Tensor::empty({groups_->pp().size()}, DType::f64);
      groups_->pp().all_gather(mine, all);
      m.pipeline_bubble.assign(all.data<double>(), all.data<double>() + all.numel());
    }
    if (reducer_) {
      m.comm_exposed_ms = reducer_->last_stats().exposed_ms;
      m.comm_total_ms = reducer_->last_stats().reduce_ms;
    }
    // After the step's own measurements: evaluation runs forwards of its own (routing, pipeline).
    if (val_set_ && t.eval_every > 0 && (step % t.eval_every == 0 || step == t.steps)) {
      m.val_loss = evaluate();
      summary.last_val_loss = m.val_loss;
      if (!summary.best_val_loss || *m.val_loss < *summary.best_val_loss) summary.best_val_loss = m.val_loss;
    }
    if (metrics && (step % t.log_every == 0 || step == t.steps || m.val_loss)) {
      metrics->write(m);
      if (show) metrics->show(m);
    }
    // A signal on any rank stops every rank after the same step.
    double stop = preemption_requested() ? 1.0 : 0.0;
    if (groups_ && groups_->world().size() > 1) {
      Tensor flag = Tensor::from_vector(std::vector<double>{stop}, {1});
      groups_->world().all_reduce(flag, ReduceOp::max);
      stop = flag.data<double>()[0];
    }
    const bool checkpoint_due = config_.checkpoint.every > 0 && step % config_.checkpoint.every == 0;
    if (checkpoint_due || step == last || stop > 0) summary.last_checkpoint = save(step);
    if (stop > 0 && step < last) {
      summary.preempted = true;
      clear_preemption();
      if (is_rank0())
        log::warn("preempted: stopped after step ", step, " with checkpoint ", summary.last_checkpoint,
                  "; continue with --resume auto");
      break;
    }
  }
  if (show) metrics->finish_line();
  summary.last_step = step_;
  summary.seconds = run_seconds;
  summary.tokens = static_cast<int64_t>(summary.losses.size()) * t.global_batch * t.seq_len;
  return summary;
}

}  // namespace strata
