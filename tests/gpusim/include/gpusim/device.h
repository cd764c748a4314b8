// What a .cu kernel source sees when the host compiler builds it for the simulated GPU: CUDA's
// qualifiers, built-in variables and intrinsics, implemented over gpusim/kernel.h.
//
// __shared__ becomes `static`: blocks run one at a time and the threads of a block share one
// instance, which is what shared memory is. Dynamic shared memory goes through
// STRATA_DYNAMIC_SHARED (kernels/cuda/common.cuh), which reads the block's buffer. Kernels should
// spell conversions out (__float2bfloat16_rn, __bfloat162float): the 16-bit types here have no
// implicit conversions or arithmetic, so code that compiles here means the same on a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "gpusim/kernel.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

#define threadIdx (::gpusim::current->thread_idx)
#define blockIdx (::gpusim::current->block_idx)
#define blockDim (::gpusim::current->block_dim)
#define gridDim (::gpusim::current->grid_dim)
constexpr int warpSize = 32;

// ---- barriers ----
inline void __syncthreads() { ::gpusim::block_barrier(0, ::gpusim::BarrierReduce::none); }
inline int __syncthreads_count(int p) { return ::gpusim::block_barrier(p, ::gpusim::BarrierReduce::count); }
inline int __syncthreads_or(int p) { return ::gpusim::block_barrier(p, ::gpusim::BarrierReduce::any); }
inline int __syncthreads_and(int p) { return ::gpusim::block_barrier(p, ::gpusim::BarrierReduce::all); }
inline void __threadfence() {}
inline void __threadfence_block() {}

// ---- warp collectives ----
namespace gpusim::detail {

struct ShuffleIn {
  uint64_t value;
  int source;  // the lane to read, or -1 for the caller's own value (out of the segment)
};

// A lane reading from a lane outside the mask gets undefined data on a GPU; here, all ones.
inline void shuffle_combine(const void* const* in, void* const* out, unsigned mask) {
  for (unsigned l = 0; l < 32; ++l) {
    if (!(mask & (1u << l))) continue;
    const auto* mine = static_cast<const ShuffleIn*>(in[l]);
    uint64_t v = ~uint64_t{0};
    if (mine->source < 0)
      v = mine->value;
    else if (mask & (1u << mine->source))
      v = static_cast<const ShuffleIn*>(in[mine->source])->value;
    *static_cast<uint64_t*>(out[l]) = v;
  }
}

template <typename T>
T shuffle(const char* what, unsigned mask, T var, int source) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move values of up to 8 bytes");
  ShuffleIn in{0, source};
  std::memcpy(&in.value, &var, sizeof(T));
  uint64_t out = 0;
  ::gpusim::warp_collective(what, mask, &in, &out, &shuffle_combine);
  T result;
  std::memcpy(&result, &out, sizeof(T));
  return result;
}

inline void check_width(int width) {
  if (width < 1 || width > 32 || (width & (width - 1))) ::gpusim::device_fault("shuffle width must be a power of two <= 32");
}

enum class Vote { ballot, any, all };
template <Vote kind>
void vote_combine(const void* const* in, void* const* out, unsigned mask) {
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask & (1u << l)) && *static_cast<const int*>(in[l])) ballot |= 1u << l;
  const unsigned result = kind == Vote::ballot ? ballot : kind == Vote::any ? (ballot != 0) : (ballot == mask);
  for (unsigned l = 0; l < 32; ++l)
    if (mask & (1u << l)) *static_cast<unsigned*>(out[l]) = result;
}

inline void nothing_combine(const void* const*, void* const*, unsigned) {}

}  // namespace gpusim::detail

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  ::gpusim::detail::check_width(width);
  const int lane = static_cast<int>(::gpusim::device_thread("__shfl_sync").lane);
  const int source = (lane & ~(width - 1)) + (src_lane & (width - 1));
  return ::gpusim::detail::shuffle("__shfl_sync", mask, var, source);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  ::gpusim::detail::check_width(width);
  const int lane = static_cast<int>(::gpusim::device_thread("__shfl_xor_sync").lane);
  const int source = lane ^ lane_mask;
  const bool inside = (source & ~(width - 1)) == (lane & ~(width - 1)) && source < 32;
  return ::gpusim::detail::shuffle("__shfl_xor_sync", mask, var, inside ? source : -1);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  ::gpusim::detail::check_width(width);
  const int lane = static_cast<int>(::gpusim::device_thread("__shfl_down_sync").lane);
  const bool inside = (lane & (width - 1)) + static_cast<int>(delta) < width;
  return ::gpusim::detail::shuffle("__shfl_down_sync", mask, var, inside ? lane + static_cast<int>(delta) : -1);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  ::gpusim::detail::check_width(width);
  const int lane = static_cast<int>(::gpusim::device_thread("__shfl_up_sync").lane);
  const bool inside = (lane & (width - 1)) >= static_cast<int>(delta);
  return ::gpusim::detail::shuffle("__shfl_up_sync", mask, var, inside ? lane - static_cast<int>(delta) : -1);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  unsigned out = 0;
  ::gpusim::warp_collective("__ballot_sync", mask, &predicate, &out,
                            &::gpusim::detail::vote_combine<::gpusim::detail::Vote::ballot>);
  return out;
}
inline int __any_sync(unsigned mask, int predicate) {
  unsigned out = 0;
  ::gpusim::warp_collective("__any_sync", mask, &predicate, &out,
                            &::gpusim::detail::vote_combine<::gpusim::detail::Vote::any>);
  return static_cast<int>(out);
}
inline int __all_sync(unsigned mask, int predicate) {
  unsigned out = 0;
  ::gpusim::warp_collective("__all_sync", mask, &predicate, &out,
                            &::gpusim::detail::vote_combine<::gpusim::detail::Vote::all>);
  return static_cast<int>(out);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::gpusim::warp_collective("__syncwarp", mask, nullptr, nullptr, &::gpusim::detail::nothing_combine);
}
inline unsigned __activemask() { return ::gpusim::active_lanes(); }

// ---- atomics (device execution is one thread at a time, so plain read-modify-write is atomic) ----
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
T atomicSub(T* address, T value) {
  const T old = *address;
  *address = old - value;
  return old;
}
template <typename T>
T atomicMax(T* address, T value) {
  const T old = *address;
  if (value > old) *address = value;
  return old;
}
template <typename T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}
template <typename T>
T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}
template <typename T>
T atomicOr(T* address, T value) {
  const T old = *address;
  *address = old | value;
  return old;
}
template <typename T>
T atomicAnd(T* address, T value) {
  const T old = *address;
  *address = old & value;
  return old;
}

// ---- math and bit intrinsics ----
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// Single IEEE operations, rounded to nearest even and never contracted into an FMA (the host
// compiler targets x86-64 without FMA, so plain operators already are).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double x) { return std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline unsigned __float_as_uint(float x) {
  unsigned i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline float __int_as_float(int i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline float __uint_as_float(unsigned i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
[[noreturn]] inline void __trap() { ::gpusim::device_fault("__trap()"); }

// CUDA declares min and max for the arithmetic types in device and host code.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
