// The tensor-core and matrix-load instructions, emulated lane by lane from the PTX ISA's fragment
// layouts (PTX ISA 9.7.14.5.8, "Matrix Fragments for mma.m16n8k16 with floating point type", and
// 9.7.14.5.15, ldmatrix). A wrong fragment index in a kernel gives a wrong product here, the same
// wrong product it would give on a GPU.
#include <cstdint>
#include <cstring>

#include "gpusim/kernel.h"

namespace gpusim {
namespace {

float bf16_bits_to_float(uint16_t bits) {
  const uint32_t u = uint32_t{bits} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu, u;
  if (exponent == 0x1f) {
    u = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent == 0) {
    if (mantissa == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exponent = 127 - 15 + 1;
      while (!(mantissa & 0x400u)) {
        mantissa <<= 1;
        --exponent;
      }
      u = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
  } else {
    u = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct MmaIn {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

uint16_t low(uint32_t r) { return static_cast<uint16_t>(r & 0xffffu); }
uint16_t high(uint32_t r) { return static_cast<uint16_t>(r >> 16); }

// D[16x8] = A[16x16] * B[16x8] + C. For lane l, group g = l / 4 and t = l % 4:
//   A: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1], a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]
//   B: b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C, D: c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1]
// (each 32-bit register holds two 16-bit values, the lower-indexed one in the low half).
template <float (*ToFloat)(uint16_t)>
void mma_combine(const void* const* in, void* const* out, unsigned) {
  float A[16][16], B[16][8], C[16][8];
  for (unsigned l = 0; l < 32; ++l) {
    const auto* f = static_cast<const MmaIn*>(in[l]);
    const unsigned g = l / 4, t = l % 4;
    for (unsigned half = 0; half < 2; ++half) {
      auto pick = [&](uint32_t r) { return ToFloat(half ? high(r) : low(r)); };
      A[g][2 * t + half] = pick(f->a[0]);
      A[g + 8][2 * t + half] = pick(f->a[1]);
      A[g][2 * t + 8 + half] = pick(f->a[2]);
      A[g + 8][2 * t + 8 + half] = pick(f->a[3]);
      B[2 * t + half][g] = pick(f->b[0]);
      B[2 * t + 8 + half][g] = pick(f->b[1]);
    }
    C[g][2 * t] = f->c[0];
    C[g][2 * t + 1] = f->c[1];
    C[g + 8][2 * t] = f->c[2];
    C[g + 8][2 * t + 1] = f->c[3];
  }
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l / 4, t = l % 4;
    auto dot = [&](unsigned row, unsigned col) {
      double s = C[row][col];  // products of 16-bit values are exact; the sum is rounded once
      for (unsigned k = 0; k < 16; ++k) s += double(A[row][k]) * double(B[k][col]);
      return static_cast<float>(s);
    };
    auto* d = static_cast<float*>(out[l]);
    d[0] = dot(g, 2 * t);
    d[1] = dot(g, 2 * t + 1);
    d[2] = dot(g + 8, 2 * t);
    d[3] = dot(g + 8, 2 * t + 1);
  }
}

void mma(const char* what, void (*combine)(const void* const*, void* const*, unsigned), float* d,
         const uint32_t* a, const uint32_t* b, const float* c) {
  ThreadState& ts = device_thread(what);
  if (ts.block_dim.x * ts.block_dim.y * ts.block_dim.z < (ts.warp + 1) * 32)
    device_fault("mma.sync needs a whole warp of 32 threads");
  MmaIn in;
  std::memcpy(in.a, a, sizeof in.a);
  std::memcpy(in.b, b, sizeof in.b);
  std::memcpy(in.c, c, sizeof in.c);
  float result[4];
  warp_collective(what, 0xffffffffu, &in, result, combine);
  std::memcpy(d, result, sizeof result);
}

struct LdmatrixIn {
  const void* address;
  int matrices;
  bool transpose;
};

// Matrix i (of 1, 2 or 4) has its row r at the address lane 8i + r gave. Lane l receives, for each
// matrix, row l/4 elements 2(l%4) and 2(l%4)+1; with .trans, column l/4 elements of rows 2(l%4)
// and 2(l%4)+1 (the fragment of the transposed matrix).
void ldmatrix_combine(const void* const* in, void* const* out, unsigned) {
  const auto* first = static_cast<const LdmatrixIn*>(in[0]);
  uint16_t m[4][8][8];
  for (int i = 0; i < first->matrices; ++i)
    for (int r = 0; r < 8; ++r) {
      const auto* lane_in = static_cast<const LdmatrixIn*>(in[i * 8 + r]);
      std::memcpy(m[i][r], lane_in->address, 16);
    }
  for (unsigned l = 0; l < 32; ++l) {
    const auto* mine = static_cast<const LdmatrixIn*>(in[l]);
    auto* regs = static_cast<uint32_t*>(out[l]);
    const unsigned row = l / 4, col = 2 * (l % 4);
    for (int i = 0; i < first->matrices; ++i) {
      uint16_t lo, hi;
      if (mine->transpose) {
        lo = m[i][col][row];
        hi = m[i][col + 1][row];
      } else {
        lo = m[i][row][col];
        hi = m[i][row][col + 1];
      }
      regs[i] = uint32_t{lo} | (uint32_t{hi} << 16);
    }
  }
}

}  // namespace

void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  mma("mma.sync.m16n8k16.bf16", &mma_combine<bf16_bits_to_float>, d, a, b, c);
}

void mma_m16n8k16_f16(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  mma("mma.sync.m16n8k16.f16", &mma_combine<f16_bits_to_float>, d, a, b, c);
}

void ldmatrix(uint32_t* out, int matrices, bool transpose, const void* row_address) {
  device_thread("ldmatrix");
  if (matrices != 1 && matrices != 2 && matrices != 4) device_fault("ldmatrix takes 1, 2 or 4 matrices");
  if (reinterpret_cast<uintptr_t>(row_address) % 16 && current->lane < static_cast<unsigned>(8 * matrices))
    device_fault("ldmatrix row address is not 16-byte aligned");
  LdmatrixIn in{row_address, matrices, transpose};
  uint32_t regs[4];
  warp_collective(transpose ? "ldmatrix.trans" : "ldmatrix", 0xffffffffu, &in, regs, &ldmatrix_combine);
  std::memcpy(out, regs, sizeof(uint32_t) * static_cast<size_t>(matrices));
}

}  // namespace gpusim
