// One CPU fp32 training step of a model config (GPT-2 124M by default) beside cblas_sgemm on a
// square f32 product, in the same run. A step is what the trainer does for one micro-batch:
// zero the gradients, forward, backward, the global gradient norm (for clipping), AdamW.
//
// The reference is the f32 FLOP rate OpenBLAS reaches on this machine: one 2048^3 cblas_sgemm
// (2 * 2048^3 FLOPs) is timed after every training step, so load from other jobs on a shared
// machine falls on both sides alike. The step's FLOPs are count_model(config)
// .train_flops_per_token(seq_len) x tokens (6 per matmul weight including the head, plus causal
// attention), the count the trainer's MFU uses. Prints the per-phase times (median and minimum over
// the timed steps) and a table of tokens/s, achieved GFLOP/s, sgemm GFLOP/s and their ratio.
//
// A plain main(), not Google Benchmark: one step takes about a second, and the phases of one step
// are timed separately.
//
//   OMP_NUM_THREADS=2 build/scripts/bench/bench_train_step [--config configs/gpt2-124m.yaml]
//       [--micro-batch 4] [--seq-len 64] [--steps 10] [--warmup 2] [--gemm 2048]
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/philox.h"
#include "core/random.h"
#include "io/config.h"
#include "kernels/ops.h"
#include "model/flops.h"
#include "model/transformer.h"
#include "optim/adamw.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

double minimum(const std::vector<double>& x) {
  return *std::min_element(x.begin(), x.end());
}

struct Options {
  std::string config = "configs/gpt2-124m.yaml";
  int64_t micro_batch = 4;
  int64_t seq_len = 64;
  int steps = 10;
  int warmup = 2;
  int gemm = 2048;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "bench_train_step: option '%s' needs a value\n", key.c_str());
      std::exit(2);
    }
    const char* value = argv[++i];
    if (key == "--config")
      o.config = value;
    else if (key == "--micro-batch")
      o.micro_batch = std::atoll(value);
    else if (key == "--seq-len")
      o.seq_len = std::atoll(value);
    else if (key == "--steps")
      o.steps = std::atoi(value);
    else if (key == "--warmup")
      o.warmup = std::atoi(value);
    else if (key == "--gemm")
      o.gemm = std::atoi(value);
    else {
      std::fprintf(stderr,
                   "bench_train_step: unknown option '%s' (valid: --config --micro-batch "
                   "--seq-len --steps --warmup --gemm)\n",
                   key.c_str());
      std::exit(2);
    }
  }
  if (o.micro_batch < 1 || o.seq_len < 1 || o.steps < 1 || o.warmup < 0 || o.gemm < 1) {
    std::fprintf(stderr, "bench_train_step: sizes and counts must be positive\n");
    std::exit(2);
  }
  return o;
}

// The phases of one step, in milliseconds.
struct StepTimes {
  double zero_grads = 0, forward = 0, backward = 0, grad_norm = 0, adamw = 0, total = 0;
  double loss = 0;
};

// The trainer's step for one micro-batch (src/train/trainer.cpp): loss scale 1 (fp32), clipping
// to grad_clip by the global norm, then AdamW.
StepTimes train_step(strata::Transformer& model, strata::AdamW& optimizer,
                     const strata::Tensor& ids, const strata::Tensor& targets, double lr,
                     double grad_clip) {
  StepTimes t;
  const auto start = Clock::now();
  auto mark = start;
  auto lap = [&mark](double& into) {
    const auto now = Clock::now();
    into = std::chrono::duration<double, std::milli>(now - mark).count();
    mark = now;
  };
  model.params().zero_grads();
  lap(t.zero_grads);
  t.loss = model.forward(ids, targets);
  lap(t.forward);
  model.backward(1.0);
  lap(t.backward);
  const double norm = strata::grad_norm(model.params());
  lap(t.grad_norm);
  const double clip = grad_clip > 0 && norm > grad_clip ? grad_clip / (norm + 1e-6) : 1.0;
  optimizer.step(lr, clip);
  lap(t.adamw);
  t.total = ms_since(start);
  return t;
}

// c = a @ b on n x n f32 operands with cblas_sgemm directly; milliseconds.
struct Sgemm {
  int n;
  strata::Tensor a, b, c;
  explicit Sgemm(int size)
      : n(size),
        a(strata::Tensor::empty({size, size}, strata::DType::f32)),
        b(strata::Tensor::empty({size, size}, strata::DType::f32)),
        c(strata::Tensor::zeros({size, size}, strata::DType::f32)) {
    strata::fill_uniform(a, 1, 1, -1.0, 1.0);
    strata::fill_uniform(b, 1, 2, -1.0, 1.0);
  }
  double run_ms() {
    const auto start = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data<float>(), n,
                b.data<float>(), n, 0.0f, c.data<float>(), n);
    return ms_since(start);
  }
  double flops() const { return 2.0 * n * n * static_cast<double>(n); }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace strata;
  const Options o = parse(argc, argv);
  const Config config = load_config(o.config);
  const ModelConfig& mc = config.model;
  if (o.seq_len > mc.max_seq_len) {
    std::fprintf(stderr, "bench_train_step: --seq-len %lld exceeds model.max_seq_len %lld\n",
                 static_cast<long long>(o.seq_len), static_cast<long long>(mc.max_seq_len));
    return 2;
  }

  Transformer model(mc, DType::f32);
  model.params().initialize(static_cast<uint64_t>(config.train.seed));
  AdamW optimizer(model.params(), AdamWHyper{config.optim.betas[0], config.optim.betas[1],
                                             config.optim.eps, config.optim.weight_decay});

  // Random token ids in [0, vocab): Philox(seed, stream, index), inputs and targets apart.
  const int64_t tokens = o.micro_batch * o.seq_len;
  Tensor ids = Tensor::empty({o.micro_batch, o.seq_len}, DType::i32);
  Tensor targets = Tensor::empty({o.micro_batch, o.seq_len}, DType::i32);
  const auto seed = static_cast<uint64_t>(config.train.seed);
  for (int64_t i = 0; i < tokens; ++i) {
    const auto index = static_cast<uint64_t>(i);
    ids.data<int32_t>()[i] = static_cast<int32_t>(philox::words(seed, 1, index).v[0] %
                                                  static_cast<uint32_t>(mc.vocab_size));
    targets.data<int32_t>()[i] = static_cast<int32_t>(philox::words(seed, 2, index).v[0] %
                                                      static_cast<uint32_t>(mc.vocab_size));
  }

  const ModelCounts counts = count_model(mc);
  const double step_flops = counts.train_flops_per_token(o.seq_len) * static_cast<double>(tokens);
  const double lr = config.optim.lr, grad_clip = config.train.grad_clip;
  Sgemm sgemm(o.gemm);

  std::printf("config %s: %s, %lld parameters, %lld layers, d_model %lld, vocab %lld\n",
              o.config.c_str(), mc.arch.c_str(), static_cast<long long>(counts.params),
              static_cast<long long>(mc.n_layers), static_cast<long long>(mc.d_model),
              static_cast<long long>(mc.vocab_size));
  std::printf(
      "micro_batch %lld x seq_len %lld = %lld tokens/step; %.1f MFLOP/token "
      "(count_model), %.1f GFLOP/step\n",
      static_cast<long long>(o.micro_batch), static_cast<long long>(o.seq_len),
      static_cast<long long>(tokens), 1e-6 * counts.train_flops_per_token(o.seq_len),
      1e-9 * step_flops);
  std::printf("threads: OpenMP %d, OpenBLAS %d (%s)\n", omp_get_max_threads(),
              openblas_get_num_threads(), openblas_get_config());
  std::printf("%d warm-up + %d timed steps, each followed by one %d^3 cblas_sgemm\n\n", o.warmup,
              o.steps, o.gemm);

  std::vector<StepTimes> steps;
  std::vector<double> gemm_ms;
  for (int i = 0; i < o.warmup + o.steps; ++i) {
    const StepTimes t = train_step(model, optimizer, ids, targets, lr, grad_clip);
    const double g = sgemm.run_ms();
    if (!std::isfinite(t.loss)) {
      std::fprintf(stderr, "bench_train_step: step %d gave loss %g\n", i + 1, t.loss);
      return 1;
    }
    if (i >= o.warmup) {
      steps.push_back(t);
      gemm_ms.push_back(g);
    }
  }

  auto column = [&](double StepTimes::*field) {
    std::vector<double> x;
    for (const StepTimes& t : steps) x.push_back(t.*field);
    return x;
  };
  // The phases outside forward and backward stream over every parameter: zero_grads writes the
  // f32 gradients (4 bytes per parameter), grad_norm reads them (4), AdamW reads param, grad, m, v
  // and writes param, m, v (28).
  const auto n_params = static_cast<double>(model.params().local_numel());
  const double total_median = median(column(&StepTimes::total));
  std::printf("%-12s %10s %10s %8s %10s %8s\n", "phase", "median ms", "min ms", "share",
              "traffic GB", "GB/s");
  struct Phase {
    const char* name;
    double StepTimes::*field;
    double bytes_per_param;  // 0: not a streaming phase
  };
  const Phase phases[] = {
      {"zero_grads", &StepTimes::zero_grads, 4}, {"forward", &StepTimes::forward, 0},
      {"backward", &StepTimes::backward, 0},     {"grad_norm", &StepTimes::grad_norm, 4},
      {"adamw", &StepTimes::adamw, 28},          {"step", &StepTimes::total, 0}};
  for (const Phase& ph : phases) {
    const std::vector<double> x = column(ph.field);
    std::printf("%-12s %10.1f %10.1f %7.1f%%", ph.name, median(x), minimum(x),
                100.0 * median(x) / total_median);
    if (ph.bytes_per_param > 0) {
      const double gb = 1e-9 * ph.bytes_per_param * n_params;
      std::printf(" %10.2f %8.1f", gb, gb / (1e-3 * median(x)));
    }
    std::printf("\n");
  }

  const double step_s = 1e-3 * total_median;
  const double best_step_s = 1e-3 * minimum(column(&StepTimes::total));
  const double gemm_gflops = 1e-6 * sgemm.flops() / median(gemm_ms);
  const double best_gemm_gflops = 1e-6 * sgemm.flops() / minimum(gemm_ms);
  const double step_gflops = 1e-9 * step_flops / step_s;
  const double best_step_gflops = 1e-9 * step_flops / best_step_s;
  std::printf("\n%-28s %12s %12s\n", "", "median", "best");
  std::printf("%-28s %12.0f %12.0f\n", "tokens/s", static_cast<double>(tokens) / step_s,
              static_cast<double>(tokens) / best_step_s);
  std::printf("%-28s %12.1f %12.1f\n", "step GFLOP/s (count_model)", step_gflops, best_step_gflops);
  std::printf("%-28s %12.1f %12.1f\n", "sgemm 2n^3 GFLOP/s", gemm_gflops, best_gemm_gflops);
  std::printf("%-28s %11.1f%% %11.1f%%   (target 75%%)\n", "ratio step / sgemm",
              100.0 * step_gflops / gemm_gflops, 100.0 * best_step_gflops / best_gemm_gflops);

  // The ceiling these optimizer phases leave: even if every FLOP of forward and backward ran at
  // the sgemm rate, the step would also spend the measured zero_grads + grad_norm + adamw time.
  const double flops_ms = 1e-6 * step_flops / gemm_gflops;
  const double streaming_ms = median(column(&StepTimes::zero_grads)) +
                              median(column(&StepTimes::grad_norm)) +
                              median(column(&StepTimes::adamw));
  std::printf(
      "ceiling: %.1f GFLOP at the sgemm rate = %.0f ms, + zero_grads/grad_norm/adamw "
      "%.0f ms -> ratio <= %.1f%%\n",
      1e-9 * step_flops, flops_ms, streaming_ms, 100.0 * flops_ms / (flops_ms + streaming_ms));
  std::printf("loss after the last step: %.4f\n", steps.back().loss);
  const strata::PoolStats mem = strata::cpu_memory_stats();
  std::printf("host memory pool: peak in use %.0f MiB, reserved %.0f MiB, %zu backing allocations\n",
              static_cast<double>(mem.peak_allocated_bytes) / (1 << 20),
              static_cast<double>(mem.reserved_bytes) / (1 << 20), mem.backing_allocations);
  return 0;
}
