// One GPU: Strata's flash attention (forward, and forward + backward) at the shapes, the
// decode path at batch 1 against a long KV cache, and the device's own copy bandwidth, the
// physical limit the decode path is read against. One JSON object a line on stdout;
// scripts/bench/gpu_kernels.sh sets them beside PyTorch's scaled_dot_product_attention
// (scripts/bench/torch_attention.py) on the same shapes.
//
// Attention: bf16, causal, [batch, seq, heads, head_dim] with heads * head_dim = 2048 and
// batch * seq = 16384 tokens, seq 1024 and 4096, head_dim 64 and 128. FLOPs counted as
// FlashAttention's papers do: forward 4 b h s^2 d / 2 (two matrix products, half of them masked),
// backward 2.5 times the forward (five products against two).
// Decode: one query row of 32 heads (head_dim 128, 8 kv heads) against caches of 4096 and 32768
// positions; bytes = the cache's keys and values read once (the query and output are negligible).
// Copy: cudaMemcpyAsync of 1 GiB device to device; bytes = read + written.
//
// Each figure is the median over `repeats` timed runs of `iters` calls after warm-up, timed on the
// host around a device synchronisation (no per-call host waits inside a run).
//
// usage: bench_gpu_kernels [--tiny]   (--tiny: toy shapes, to prove the program on the simulated
// GPU)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/cuda/cuda_allocator.h"
#include "core/cuda/cuda_device.h"
#include "core/random.h"
#include "kernels/ops.h"

using namespace strata;

namespace {

struct Timing {
  int warmup = 3, iters = 10, repeats = 5;
};

// Milliseconds a call: the median over the repeats.
double time_ms(CudaDevice& device, const Timing& t, const std::function<void()>& call) {
  for (int i = 0; i < t.warmup; ++i) call();
  device.synchronize();
  std::vector<double> runs;
  for (int r = 0; r < t.repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < t.iters; ++i) call();
    device.synchronize();
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    runs.push_back(took.count() / t.iters);
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

Tensor random_on(CudaDevice& device, const Shape& shape, DType dtype, uint64_t stream) {
  Tensor host = Tensor::empty(shape, dtype);
  fill_uniform(host, 7, stream, -1, 1);
  Tensor t = Tensor::empty(shape, dtype, device);
  t.copy_from(host);
  return t;
}

void copy_bandwidth(CudaDevice& device, const Timing& t, int64_t bytes) {
  Tensor a = random_on(device, {bytes / 2}, DType::bf16, 1),
         b = Tensor::empty({bytes / 2}, DType::bf16, device);
  const double ms = time_ms(device, t, [&] { b.copy_from(a); });
  std::printf("{\"bench\": \"copy\", \"bytes\": %lld, \"ms\": %.6f, \"gb_per_s\": %.1f}\n",
              static_cast<long long>(bytes), ms, 2.0 * static_cast<double>(bytes) / (ms * 1e6));
}

void attention(CudaDevice& device, const Timing& t, int64_t batch, int64_t seq, int64_t heads,
               int64_t head_dim) {
  const Shape shape{batch, seq, heads, head_dim};
  Tensor q = random_on(device, shape, DType::bf16, 2), k = random_on(device, shape, DType::bf16, 3);
  Tensor v = random_on(device, shape, DType::bf16, 4),
         dout = random_on(device, shape, DType::bf16, 5);
  Tensor out = Tensor::empty(shape, DType::bf16, device),
         lse = Tensor::empty({batch, heads, seq}, DType::f32, device);
  Tensor dq = Tensor::empty(shape, DType::bf16, device),
         dk = Tensor::empty(shape, DType::bf16, device),
         dv = Tensor::empty(shape, DType::bf16, device);
  const ops::AttentionArgs args;  // causal, scale 1 / sqrt(head_dim)
  const double fwd_ms =
      time_ms(device, t, [&] { ops::attention_forward(q, k, v, args, out, lse); });
  const double both_ms = time_ms(device, t, [&] {
    ops::attention_forward(q, k, v, args, out, lse);
    ops::attention_backward(dout, q, k, v, out, lse, args, dq, dk, dv);
  });
  const double fwd_flop =
      4.0 * static_cast<double>(batch * heads * head_dim) * static_cast<double>(seq * seq) / 2;
  std::printf(
      "{\"bench\": \"attention\", \"batch\": %lld, \"seq\": %lld, \"heads\": %lld, \"head_dim\": "
      "%lld, "
      "\"fwd_ms\": %.6f, \"fwd_bwd_ms\": %.6f, \"fwd_tflops\": %.1f, \"fwd_bwd_tflops\": %.1f}\n",
      static_cast<long long>(batch), static_cast<long long>(seq), static_cast<long long>(heads),
      static_cast<long long>(head_dim), fwd_ms, both_ms, fwd_flop / (fwd_ms * 1e9),
      3.5 * fwd_flop / (both_ms * 1e9));
}

void decode(CudaDevice& device, const Timing& t, int64_t cache, int64_t heads, int64_t kv_heads,
            int64_t head_dim) {
  Tensor q = random_on(device, {1, 1, heads, head_dim}, DType::bf16, 6);
  Tensor k = random_on(device, {1, cache, kv_heads, head_dim}, DType::bf16, 7);
  Tensor v = random_on(device, {1, cache, kv_heads, head_dim}, DType::bf16, 8);
  Tensor out = Tensor::empty(q.shape(), DType::bf16, device);
  const double ms = time_ms(device, t, [&] { ops::attention_decode(q, k, v, cache - 1, out); });
  const double bytes = 2.0 * static_cast<double>(cache * kv_heads * head_dim) * 2;
  std::printf(
      "{\"bench\": \"decode\", \"cache\": %lld, \"heads\": %lld, \"kv_heads\": %lld, \"head_dim\": "
      "%lld, "
      "\"ms\": %.6f, \"bytes\": %.0f, \"gb_per_s\": %.1f}\n",
      static_cast<long long>(cache), static_cast<long long>(heads),
      static_cast<long long>(kv_heads), static_cast<long long>(head_dim), ms, bytes,
      bytes / (ms * 1e6));
}

}  // namespace

int main(int argc, char** argv) {
  const bool tiny = argc > 1 && std::strcmp(argv[1], "--tiny") == 0;
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "bench_gpu_kernels: no CUDA device\n");
    return 2;
  }
  try {
    CudaDevice device(0);
    Timing t;
    if (tiny) {
      t = Timing{1, 1, 1};
      copy_bandwidth(device, t, int64_t{1} << 16);
      attention(device, t, 1, 37, 2, 64);
      decode(device, t, 53, 4, 2, 128);
      return 0;
    }
    copy_bandwidth(device, t, int64_t{1} << 30);
    for (int64_t seq : {1024, 4096})
      for (int64_t head_dim : {64, 128})
        attention(device, t, 16384 / seq, seq, 2048 / head_dim, head_dim);
    for (int64_t cache : {4096, 32768}) decode(device, t, cache, 32, 8, 128);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
