// The simulated GPU's kernel interface: how a launch reaches the scheduler, and the per-thread
// state and warp/block primitives that gpusim/device.h builds CUDA's intrinsics on.
//
// A kernel launch is a closure queued on a stream. When the stream runs (see cuda_runtime.h), the
// closure runs once per simulated thread: blocks one after another in a permuted order, and the
// threads of a block as fibers that switch only at barriers and warp collectives, in an order that
// changes after every __syncthreads (gpusim/control.h chooses the orders).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace gpusim {

struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned linear = 0;  // thread index within the block (x fastest)
  unsigned lane = 0;    // linear % 32
  unsigned warp = 0;    // linear / 32
  char* dynamic_shared = nullptr;
  size_t dynamic_shared_bytes = 0;
};

// The simulated thread running now; nullptr in host code. Device execution is serialised (one
// kernel, one thread at a time), so this is one pointer for the process.
extern ThreadState* current;

struct KernelLaunch {
  const char* name = "";
  const void* function = nullptr;  // identity of the kernel, for cudaFuncSetAttribute's limits
  dim3 grid, block;
  size_t dynamic_shared_bytes = 0;
  std::function<void()> body;  // the kernel with its arguments bound (copied at launch, as CUDA does)
};

// Validates the configuration as a real sm_90 device would (threads per block, grid limits,
// dynamic shared memory against the kernel's opt-in limit) and queues the launch. A bad
// configuration is reported through cudaGetLastError, like a real launch.
void launch_kernel(KernelLaunch launch, cudaStream_t stream);

// The calling thread's ThreadState; a fatal error (with `what` named) from host code.
ThreadState& device_thread(const char* what);

// ---- block and warp primitives (device code only) ----

// __syncthreads and its reducing forms: every live thread of the block must arrive. Returns the
// number of threads (count), or whether any (or) / all (and) passed a nonzero predicate.
enum class BarrierReduce { none, count, any, all };
int block_barrier(int predicate, BarrierReduce reduce);

// One exchange among the lanes of `mask` (which must hold the calling lane): each lane deposits
// `in`, and when all have arrived `combine(in, out, mask)` fills every participating lane's `out`
// (both arrays are indexed by lane; entries of lanes outside the mask are null). Lanes of the mask
// that have exited, or that arrive at a different collective, are an error (a hang on a real GPU).
using Combine = void (*)(const void* const* in, void* const* out, unsigned mask);
void warp_collective(const char* what, unsigned mask, const void* in, void* out, Combine combine);

// Lanes of the caller's warp that have not exited.
unsigned active_lanes();

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32, emulated from the PTX ISA's
// fragment layout: a warp computes D[16x8] = A[16x16] B[16x8] + C with f32 accumulation, each
// lane holding a[4] (8 16-bit values of A), b[2] (4 of B), c[4] and d[4] (f32) as documented.
void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c);
void mma_m16n8k16_f16(float* d, const uint32_t* a, const uint32_t* b, const float* c);
// ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lane i of each group of 8 gives the
// address of row i of one 8x8 matrix of 16-bit values; every lane receives its fragment of each.
void ldmatrix(uint32_t* out, int matrices, bool transpose, const void* row_address);

// cp.async: the copy is taken from global memory now but lands in shared memory only when the
// thread waits for its group (cp.async.wait_group / wait_all), so reading before the wait sees
// the old contents, as it may on a real GPU.
void cp_async(void* shared_dst, const void* global_src, int bytes, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending_groups_allowed);

// __trap() / a failed device check: ends the kernel with a fault naming the thread.
[[noreturn]] void device_fault(const char* message);

}  // namespace gpusim
