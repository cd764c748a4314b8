// Warp-level tensor-core primitives for 16-bit inputs with f32 accumulation: mma.sync m16n8k16 and
// ldmatrix (and cp.async, which feeds them), as inline PTX for nvcc and as the simulated GPU's
// emulation (gpusim/kernel.h, which follows the PTX ISA's fragment layouts) for the host build. The
// fragments, per lane (g = lane / 4, t = lane % 4):
//   A [16x16] row-major: a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
//                        a[3] = A[g+8][2t+8, 2t+9]   (two 16-bit values, the lower column in bits
//                        0-15)
//   B [16x8] "col":      b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]
//   C, D [16x8] f32:     c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] = C[g+8][2t, 2t+1]
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace strata::cuda {

// d = a b + c for one warp; T = __nv_bfloat16 or __half names the input format.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float* d, const uint32_t* a, const uint32_t* b,
                                             const float* c) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>,
                "mma_m16n8k16 takes bf16 or f16");
#if STRATA_GPUSIM
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    ::gpusim::mma_m16n8k16_bf16(d, a, b, c);
  else
    ::gpusim::mma_m16n8k16_f16(d, a, b, c);
#else
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
          "f"(c[2]), "f"(c[3]));
#endif
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lane 8m + r gives the (16-byte aligned) shared
// address of row r of matrix m; out[m] is the lane's fragment of matrix m, {M[g][2t], M[g][2t+1]}
// plain or {M[2t][g], M[2t+1][g]} transposed.
template <bool kTranspose>
__device__ __forceinline__ void ldmatrix_x4(uint32_t* out, const void* row) {
#if STRATA_GPUSIM
  ::gpusim::ldmatrix(out, 4, kTranspose, row);
#else
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  if constexpr (kTranspose)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(out[0]), "=r"(out[1]), "=r"(out[2]), "=r"(out[3])
                 : "r"(address));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(out[0]), "=r"(out[1]), "=r"(out[2]), "=r"(out[3])
                 : "r"(address));
#endif
}

// Two f32 values rounded to T and packed as one register of an A fragment (lo in bits 0-15).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return uint32_t{__bfloat16_as_ushort(__float2bfloat16_rn(lo))} |
           (uint32_t{__bfloat16_as_ushort(__float2bfloat16_rn(hi))} << 16);
  else
    return uint32_t{__half_as_ushort(__float2half_rn(lo))} |
           (uint32_t{__half_as_ushort(__float2half_rn(hi))} << 16);
}

// cp.async of 16 bytes from global to shared memory, or 16 zero bytes when !valid (src-size 0:
// nothing is read from `src`, which must still be a global address). The copy lands only by
// cp_async_wait; a __syncthreads after the wait makes the block's copies visible to all.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
#if STRATA_GPUSIM
  ::gpusim::cp_async(dst, src, 16, valid ? 16 : 0);
#else
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(src),
               "r"(valid ? 16 : 0));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if STRATA_GPUSIM
  ::gpusim::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most kPending of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if STRATA_GPUSIM
  ::gpusim::cp_async_wait(kPending);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

}  // namespace strata::cuda
