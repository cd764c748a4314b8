// The trainer with train.device = cuda against the same run on the CPU: bf16 and fp16 (dynamic
// loss scaling) curves, and a planted overflow that the device-side step decision skips.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/cuda/cuda_allocator.h"
#include "io/config.h"
#include "kernels/ops.h"
#include "synthetic_corpus.h"
#include "train/trainer.h"

#if STRATA_GPUSIM
#include "gpusim/control.h"
#endif

using namespace strata;
namespace fs = std::filesystem;

namespace {

struct Corpus {
  fs::path dir = fs::temp_directory_path() / ("strata_cuda_trainer_" + std::to_string(::getpid()));
  Corpus() {
    fs::remove_all(dir);
    fs::create_directories(dir);
    strata::testing::write_synthetic_corpus(dir);
  }
  ~Corpus() { fs::remove_all(dir); }
};

Config run_config(const Corpus& corpus, const std::string& name, const std::string& device,
                  const std::string& precision) {
  Config c = parse_config(R"(
model: { arch: llama, vocab_size: 97, n_layers: 2, d_model: 32, n_heads: 2, n_kv_heads: 1,
         d_ff: 64, max_seq_len: 32 }
train: { seq_len: 16, micro_batch: 2, global_batch: 4, steps: 10, log_every: 5, eval_every: 0,
         grad_clip: 1.0 }
optim: { lr: 1.0e-2, min_lr: 1.0e-3, warmup_steps: 2 }
checkpoint: { every: 0, keep: 0 }
)",
                          "test");
  c.train.device = device;
  c.train.precision = precision;
  c.data.train = (corpus.dir / "train.h5").string();
  c.data.val = (corpus.dir / "val.h5").string();
  c.train.out_dir = (corpus.dir / name).string();
  return c;
}

TrainOptions quiet() {
  TrainOptions o;
  o.show_progress = false;
  return o;
}

TEST(TrainerOnCuda, Bf16AndFp16RunsFollowTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Corpus corpus;
  for (const std::string precision : {"bf16", "fp16"}) {
    Trainer cpu(run_config(corpus, "cpu_" + precision, "cpu", precision), quiet());
    Trainer gpu(run_config(corpus, "gpu_" + precision, "cuda", precision), quiet());
    EXPECT_TRUE(gpu.model().params().all().front()->value.device().is_cuda());
    const TrainSummary want = cpu.run(), got = gpu.run();
    ASSERT_EQ(got.losses.size(), want.losses.size());
    // 16-bit activations round at the same points on both backends but their sums run in other
    // orders; as in test_model_cuda.cpp, 2e-2 relative per loss keeps the curves together while
    // a wrong kernel or a wrong update is off by far more.
    for (size_t i = 0; i < want.losses.size(); ++i) {
      EXPECT_NEAR(got.losses[i], want.losses[i], 2e-2 * want.losses[i]) << precision << " step " << i + 1;
      EXPECT_EQ(got.skipped[i], want.skipped[i]) << precision << " step " << i + 1;
    }
    EXPECT_LT(got.losses.back(), got.losses.front()) << precision;
  }
}

// A mixture of experts (4 experts, top-2, capacity 1.0, auxiliary losses) in bf16: the routing,
// dispatch, combine and router gradients on the device follow the CPU's run.
TEST(TrainerOnCuda, MoeRunFollowsTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Corpus corpus;
  Config configs[2] = {run_config(corpus, "cpu_moe", "cpu", "bf16"), run_config(corpus, "gpu_moe", "cuda", "bf16")};
  for (Config& c : configs) {
    c.model.moe.n_experts = 4;
    c.model.moe.top_k = 2;
    c.model.moe.capacity_factor = 1.0;
    c.model.moe.aux_loss_coef = 0.01;
    c.model.moe.z_loss_coef = 0.001;
  }
  Trainer cpu(configs[0], quiet()), gpu(configs[1], quiet());
  EXPECT_TRUE(gpu.model().params().all().front()->value.device().is_cuda());
  const TrainSummary want = cpu.run(), got = gpu.run();
  ASSERT_EQ(got.losses.size(), want.losses.size());
  // As above: 2e-2 relative per loss (a token whose two best experts are within a bf16 rounding
  // of each other may route differently on the two backends; that moves a loss by far less).
  for (size_t i = 0; i < want.losses.size(); ++i)
    EXPECT_NEAR(got.losses[i], want.losses[i], 2e-2 * want.losses[i]) << "step " << i + 1;
  EXPECT_LT(got.losses.back(), got.losses.front());
}

#if STRATA_GPUSIM
// How often a training step on the device makes the host wait, counted by the simulated GPU as
// the difference between a 6-step and a 3-step run (start-up, evaluation and the final save
// cancel out): once, for the step's decision (loss, gradient norm, overflow flag) and, with MoE,
// the routing sums the metrics log, all in one read. Dense and MoE with a capacity (the fixed
// layout), each with gradient accumulation (2 micro-batches a step).
TEST(TrainerOnCuda, AStepWaitsForTheDeviceOnlyToReadItsResults) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Corpus corpus;
  for (const bool moe : {false, true}) {
    auto waits = [&](int64_t steps) {
      Config c = run_config(corpus, "waits_" + std::to_string(steps) + (moe ? "_moe" : ""), "cuda", "bf16");
      c.train.steps = steps;
      c.train.log_every = 100;
      if (moe) {
        c.model.moe.n_experts = 4;
        c.model.moe.top_k = 2;
        c.model.moe.capacity_factor = 1.0;
      }
      gpusim::drain_all();
      const uint64_t before = gpusim::counters().host_waits;
      {
        Trainer trainer(c, quiet());
        trainer.run();
      }
      return static_cast<int64_t>(gpusim::counters().host_waits - before);
    };
    const int64_t per_step = (waits(6) - waits(3)) / 3;
    EXPECT_EQ(per_step, 1) << (moe ? "MoE" : "dense") << ": host waits a step";
  }
}
#endif

TEST(TrainerOnCuda, Fp16SkipsAPlantedOverflowOnTheDevice) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU";
  const Corpus corpus;
  TrainOptions o = quiet();
  o.after_backward = [](int64_t step, ParameterRegistry& params) {
    if (step != 6) return;
    Tensor first = params.all().front()->accum().slice(0, 0, 1);  // the f32 main gradient, on the device
    ops::fill(first, INFINITY);
  };
  Trainer t(run_config(corpus, "overflow", "cuda", "fp16"), o);
  const TrainSummary s = t.run();
  for (size_t i = 0; i < s.skipped.size(); ++i) EXPECT_EQ(s.skipped[i], i == 5) << "step " << i + 1;
  for (double loss : s.losses) EXPECT_TRUE(std::isfinite(loss));
  // The skipped step left the parameters finite (the update was not made on the device).
  for (auto& p : t.model().params().all()) {
    const Tensor v = p->value.to_cpu();
    Tensor f = Tensor::empty(v.shape(), DType::f32);
    ops::cast(v, f);
    for (int64_t i = 0; i < f.numel(); ++i) ASSERT_TRUE(std::isfinite(f.data<float>()[i])) << p->name;
  }
}

}  // namespace
