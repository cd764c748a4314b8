// Sequence parallelism, measured: `mpirun -np SP` splits each sequence over SP ranks (zigzag
// chunks, ring attention). For sequence lengths 2k, 8k and 32k it runs one forward and backward
// of a small Llama-style model (one sequence per step) and reports, per rank:
//   - the peak of host memory in use during forward + backward above what was in use before it
//     (parameters, gradients: the activations, with the attention's saved q, k, v, out, lse and
//     the logits), from the host pool's high-water mark;
//   - the ring's transfers: how many, their bytes, the time the ring waited for them (on the
//     slowest rank), and what the same transfers cost alone (a blocking send_recv of one K/V block,
//     median of 5, times their number). A wait longer than the transfers alone is the ranks
//     arriving at a ring step at different times, not the transfer.
// Run it at SP = 1, 2 and 4 and compare the memory column: it should fall close to 1/SP.
//
//   OMP_NUM_THREADS=1 mpirun -np SP build/scripts/bench/bench_ring [--layers 2] [--d-model 128]
//       [--max-seq 32768]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "comm/mpi_session.h"
#include "comm/process_groups.h"
#include "core/allocator.h"
#include "model/transformer.h"
#include "parallel/ring_attention.h"

using namespace strata;

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession session(&argc, &argv);
  int64_t layers = 2, d_model = 128, max_seq = 32768;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const long long value = std::atoll(argv[i + 1]);
    if (key == "--layers")
      layers = value;
    else if (key == "--d-model")
      d_model = value;
    else if (key == "--max-seq")
      max_seq = value;
    else {
      std::fprintf(stderr, "bench_ring: unknown option '%s'\n", key.c_str());
      return 2;
    }
  }
  const int sp = session.world_size(), rank = session.world_rank();
  ProcessGrid grid(sp, rank, GridSizes{1, 1, sp, 1, 1});
  ProcessGroups groups(grid, Backend::mpi);

  ModelConfig config;
  config.arch = "llama";
  config.vocab_size = 256;
  config.n_layers = layers;
  config.d_model = d_model;
  config.n_heads = 4;
  config.n_kv_heads = 2;
  config.d_ff = 4 * d_model;
  config.max_seq_len = max_seq;
  RingStats stats;
  SequenceParallel seq_par;
  if (sp > 1) seq_par = {&groups.sp(), rank, sp, &stats};
  Transformer model(config, DType::f32, {}, {}, seq_par);
  model.params().initialize(1);

  if (rank == 0) {
    std::printf("sequence parallelism: sp %d, %lld layers of d_model %lld (4 heads, 2 kv heads), "
                "vocab 256, f32, 1 sequence a step\n",
                sp, static_cast<long long>(layers), static_cast<long long>(d_model));
    std::printf("%7s %12s %12s %10s %12s %12s %14s\n", "seq", "peak MiB", "step ms", "transfers",
                "MiB moved", "waited ms", "alone total ms");
  }
  for (int64_t seq = 2048; seq <= max_seq; seq *= 4) {
    Tensor ids = Tensor::empty({1, seq}, DType::i32), targets = Tensor::empty({1, seq}, DType::i32);
    for (int64_t j = 0; j < seq; ++j) {
      ids.data<int32_t>()[j] = static_cast<int32_t>((j * 7) % 256);
      targets.data<int32_t>()[j] = static_cast<int32_t>((j * 5 + 1) % 256);
    }
    Tensor local_ids = sp > 1 ? zigzag_local(ids, rank, sp) : ids;
    Tensor local_targets = sp > 1 ? zigzag_local(targets, rank, sp) : targets;
    model.params().zero_grads();
    stats = RingStats{};
    groups.world().barrier();
    const int64_t before = static_cast<int64_t>(cpu_memory_stats().allocated_bytes);
    cpu_memory_reset_peak();
    const auto start = Clock::now();
    model.forward(local_ids, local_targets);
    model.backward(1.0);
    const double step_ms = ms_since(start);
    const double peak_mib =
        static_cast<double>(static_cast<int64_t>(cpu_memory_stats().peak_allocated_bytes) - before) /
        (1 << 20);

    // One K/V block alone: [4, 1, c, n_kv_heads, head_dim] f32 both ways, blocking.
    double alone_ms = 0;
    if (sp > 1) {
      const int64_t c = seq / (2 * sp), hd = d_model / 4;
      Tensor send = Tensor::zeros({4, 1, c, 2, hd}, DType::f32), recv = Tensor::empty(send.shape(), DType::f32);
      std::vector<double> times;
      for (int r = 0; r < 5; ++r) {
        groups.sp().barrier();
        const auto t0 = Clock::now();
        groups.sp().send_recv(send, (rank + 1) % sp, recv, (rank + sp - 1) % sp);
        times.push_back(ms_since(t0));
      }
      std::sort(times.begin(), times.end());
      alone_ms = times[2];
    }
    // The largest peak and waited time over the ranks (the slowest rank sets the pace).
    Tensor worst = Tensor::from_vector(std::vector<double>{peak_mib, step_ms, stats.wait_ms, alone_ms}, {4});
    groups.world().all_reduce(worst, ReduceOp::max);
    const double* w = worst.data<double>();
    if (rank == 0)
      std::printf("%7lld %12.1f %12.1f %10lld %12.1f %12.2f %14.2f\n", static_cast<long long>(seq),
                  w[0], w[1], static_cast<long long>(stats.transfers),
                  static_cast<double>(stats.bytes) / (1 << 20), w[2],
                  static_cast<double>(stats.transfers) * w[3]);
  }
  return 0;
}
