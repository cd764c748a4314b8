// What every kernel file in kernels/cuda includes: the CUDA (or simulated-GPU) device headers, the
// one launch helper, element conversions, 16-byte vector access and warp/block reductions.
//
// The same source builds twice: by nvcc for sm_90, and by the host compiler for the simulated GPU
// (STRATA_GPUSIM, tests/gpusim), where gpusim/device.h supplies CUDA's built-ins. Everything here
// is written against that common subset: explicit conversions for the 16-bit types, launches only
// through strata::cuda::launch (no <<<>>> elsewhere), dynamic shared memory only through
// STRATA_DYNAMIC_SHARED.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#if STRATA_GPUSIM
#include <tuple>

#include "gpusim/device.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/cuda/launch.h"

#if STRATA_GPUSIM
#define STRATA_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::gpusim::device_thread("dynamic shared memory").dynamic_shared)
#else
#define STRATA_DYNAMIC_SHARED(type, name)          \
  extern __shared__ __align__(16) char name##_raw[]; \
  type* name = reinterpret_cast<type*>(name##_raw)
#endif

namespace strata::cuda {

// ---- launches ----

// The one way Strata launches a kernel: kernel<<<grid, block, shared_bytes, stream>>>(args...) on a
// GPU, a queued closure on the simulated one. Arguments convert to the kernel's parameter types
// here, so both see the same values.
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
            cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch: argument count differs from the kernel's");
#if STRATA_GPUSIM
  ::gpusim::KernelLaunch l;
  l.name = name;
  l.function = reinterpret_cast<const void*>(kernel);
  l.grid = grid;
  l.block = block;
  l.dynamic_shared_bytes = shared_bytes;
  l.body = [kernel, bound = std::tuple<std::decay_t<Params>...>(static_cast<Params>(std::forward<Args>(args))...)] {
    std::apply(kernel, bound);
  };
  ::gpusim::launch_kernel(std::move(l), stream);
#else
  kernel<<<grid, block, shared_bytes, stream>>>(static_cast<Params>(std::forward<Args>(args))...);
#endif
  check_launch(name);
}

// Blocks of `threads` covering n items, one item a thread.
inline unsigned blocks_for(int64_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// Grid-stride kernels: kStrideThreads a block, one item a thread up to enough blocks to fill an
// H100/H200 (132 SMs) several times over, a grid-stride loop beyond that.
inline constexpr unsigned kStrideThreads = 256;
inline unsigned stride_grid(int64_t items) {
  constexpr unsigned most = 132 * 8;
  const unsigned b = blocks_for(items, kStrideThreads);
  return b < 1 ? 1 : (b > most ? most : b);
}

// ---- elements: every type computes in f32 ----

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// x rounded once to T (to nearest even), as the CPU's narrow() (kernels/cpu/element.h): for the
// 16-bit types through f32 rounded "to odd", which makes the two roundings one.
template <typename T>
__device__ __forceinline__ T from_double(double x) {
  float f = static_cast<float>(x);
  if (sizeof(T) == 4 || x != x || static_cast<double>(f) == x) return from_float<T>(f);
  unsigned u = __float_as_uint(f);
  if (fabs(static_cast<double>(f)) > fabs(x)) u -= 1;  // truncate toward zero
  return from_float<T>(__uint_as_float(u | 1u));
}

// The device element type of a storage dtype (f32, bf16, f16); F is called with a value of it.
template <typename F>
void with_floating(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(__nv_bfloat16{}); return;
    case DType::f16: f(__half{}); return;
    default: STRATA_FAIL(op, ": the CUDA backend takes f32, bf16 or f16, not ", dtype_name(dtype));
  }
}

// The device index type of an index dtype (i32, i64: token ids, targets); F is called with a value of it.
template <typename F>
void with_index(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::i32: f(int32_t{}); return;
    case DType::i64: f(int64_t{}); return;
    default: STRATA_FAIL(op, ": the CUDA backend takes i32 or i64 indices, not ", dtype_name(dtype));
  }
}

// ---- 16-byte vectors ----

// kVec<T> elements of T in 16 bytes, loaded and stored as one access.
template <typename T>
inline constexpr int kVec = static_cast<int>(16 / sizeof(T));

template <typename T>
struct alignas(16) Vec {
  T v[kVec<T>];
};

template <typename T>
__device__ __forceinline__ Vec<T> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T>*>(p);
}
template <typename T>
__device__ __forceinline__ void store_vec(T* p, const Vec<T>& v) {
  *reinterpret_cast<Vec<T>*>(p) = v;
}

// Whether every pointer is 16-byte aligned, so a kernel may take the vector path.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
template <typename... P>
bool all_aligned16(const P*... p) {
  return (aligned16(p) && ...);
}

// ---- reductions ----

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
template <typename T>
__device__ __forceinline__ T warp_max(T x) {
  for (int offset = 16; offset > 0; offset /= 2) {
    const T y = __shfl_xor_sync(0xffffffffu, x, offset);
    x = y > x ? y : x;
  }
  return x;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// `scratch` holds 32 values of shared memory; the block must not reuse it until all have read.
template <typename T>
__device__ __forceinline__ T block_sum(T x, T* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  x = warp_sum(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  T total = lane < warps ? scratch[lane] : T(0);
  total = warp_sum(total);
  __syncthreads();
  return total;
}
template <typename T>
__device__ __forceinline__ T block_max(T x, T* scratch, T lowest) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  x = warp_max(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  T best = lane < warps ? scratch[lane] : lowest;
  best = warp_max(best);
  __syncthreads();
  return best;
}

}  // namespace strata::cuda
