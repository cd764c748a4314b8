// The pipeline's bubble, measured: every rank of `mpirun -np P` is one stage of a model whose
// chunks cost the same (8 equal Llama-style layers, a 256-id vocabulary so the embedding and the
// head are small), and runs the forwards and backwards of one optimizer step per iteration through
// the pipeline engine (no optimizer: the bubble is a property of the forward/backward schedule).
//
// Per rank and step the engine reports its wall time and the time inside compute actions; the
// idle time (waiting on neighbours and transfers) over the compute time is what the schedule
// theory gives as the bubble: (p - 1) / m for GPipe and 1F1B, (p - 1) / (v m) for interleaved
// 1F1B with v chunks per rank (Narayanan et al. 2021). The table shows, per (schedule, m), the
// median over steps of the mean over ranks, beside the theory.
//
//   OMP_NUM_THREADS=1 mpirun -np 2 build/scripts/bench/bench_pipeline [--steps 5] [--layers 8]
//       [--d-model 256] [--seq-len 128] [--micro-batch 2]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "comm/mpi_session.h"
#include "comm/process_groups.h"
#include "core/random.h"
#include "parallel/pipeline.h"

using namespace strata;

namespace {

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  const size_t n = x.size();
  return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

struct Options {
  int steps = 5;
  int64_t layers = 8, d_model = 256, seq_len = 128, micro_batch = 2;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const long long value = std::atoll(argv[i + 1]);
    if (key == "--steps")
      o.steps = static_cast<int>(value);
    else if (key == "--layers")
      o.layers = value;
    else if (key == "--d-model")
      o.d_model = value;
    else if (key == "--seq-len")
      o.seq_len = value;
    else if (key == "--micro-batch")
      o.micro_batch = value;
    else {
      std::fprintf(stderr, "bench_pipeline: unknown option '%s'\n", key.c_str());
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession session(&argc, &argv);
  const Options o = parse(argc, argv);
  const int p = session.world_size(), rank = session.world_rank();
  ProcessGrid grid(p, rank, GridSizes{1, p, 1, 1, 1});
  ProcessGroups groups(grid, Backend::mpi);

  ModelConfig config;
  config.arch = "llama";
  config.vocab_size = 256;
  config.n_layers = o.layers;
  config.d_model = o.d_model;
  config.n_heads = 4;
  config.n_kv_heads = 4;
  config.d_ff = 4 * o.d_model;
  config.max_seq_len = o.seq_len;

  struct Case {
    PipelineSchedule kind;
    int virtual_stages;
  };
  std::vector<Case> cases = {{PipelineSchedule::gpipe, 1}, {PipelineSchedule::one_f_one_b, 1}};
  if (p > 1 && o.layers % (2 * p) == 0) cases.push_back({PipelineSchedule::interleaved, 2});
  if (rank == 0) {
    std::printf("pipeline bubble: %d stages, %lld layers of d_model %lld, micro-batch %lld x %lld "
                "tokens, %d timed steps after 1 warm-up\n",
                p, static_cast<long long>(o.layers), static_cast<long long>(o.d_model),
                static_cast<long long>(o.micro_batch), static_cast<long long>(o.seq_len), o.steps);
    std::printf("%-12s %3s %4s %10s %10s %14s %10s\n", "schedule", "v", "m", "step ms", "compute ms",
                "idle/compute", "theory");
  }
  for (const Case& c : cases) {
    Transformer model(config, DType::f32, {},
                      pipeline_chunks(config.n_layers, p, c.virtual_stages, rank, {}));
    model.params().initialize(1);
    PipelineEngine engine(model, c.kind, p, c.virtual_stages, &groups.pp(), &groups.pp_backward());
    for (int m : {4, 8, 16}) {
      if (m < p || (c.kind == PipelineSchedule::interleaved && m % p != 0)) continue;
      std::vector<Batch> micro(static_cast<size_t>(m));
      for (int i = 0; i < m; ++i) {
        Batch& b = micro[static_cast<size_t>(i)];
        b.input = Tensor::empty({o.micro_batch, o.seq_len}, DType::i32);
        b.target = Tensor::empty({o.micro_batch, o.seq_len}, DType::i32);
        for (int64_t j = 0; j < b.input.numel(); ++j) {
          b.input.data<int32_t>()[j] = static_cast<int32_t>((j * 7 + i * 13) % config.vocab_size);
          b.target.data<int32_t>()[j] = static_cast<int32_t>((j * 5 + i * 11 + 1) % config.vocab_size);
        }
      }
      std::vector<double> step_ms, compute_ms, ratio;
      for (int s = 0; s <= o.steps; ++s) {
        model.params().zero_grads();
        groups.world().barrier();
        engine.train_step(micro, 1.0 / m, Recompute::none);
        const PipelineStats& st = engine.last_stats();
        // Mean over ranks of step, compute and idle/compute.
        Tensor mine = Tensor::from_vector(
            std::vector<double>{st.step_ms, st.compute_ms, (st.step_ms - st.compute_ms) / st.compute_ms},
            {3});
        groups.world().all_reduce(mine, ReduceOp::avg);
        if (s == 0) continue;  // warm-up
        step_ms.push_back(mine.data<double>()[0]);
        compute_ms.push_back(mine.data<double>()[1]);
        ratio.push_back(mine.data<double>()[2]);
      }
      const double theory = static_cast<double>(p - 1) / (c.virtual_stages * m);
      if (rank == 0)
        std::printf("%-12s %3d %4d %10.1f %10.1f %13.1f%% %9.1f%%\n", pipeline_schedule_name(c.kind),
                    c.virtual_stages, m, median(step_ms), median(compute_ms), 100 * median(ratio),
                    100 * theory);
    }
  }
  return 0;
}
