// CUDA's built-in vector types and dim3 for the simulated GPU, with the alignments CUDA gives them
// (a float4 or uint4 is 16-byte aligned, so a kernel's 16-byte vector loads keep their meaning).
#pragma once

#include <cstdint>

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return {x, y, z}; }
};

#define STRATA_GPUSIM_VECTOR2(name, type, align)                         \
  struct alignas(align) name {                                           \
    type x, y;                                                           \
  };                                                                     \
  inline name make_##name(type x, type y) { return name{x, y}; }
#define STRATA_GPUSIM_VECTOR4(name, type, align)                         \
  struct alignas(align) name {                                           \
    type x, y, z, w;                                                     \
  };                                                                     \
  inline name make_##name(type x, type y, type z, type w) { return name{x, y, z, w}; }

STRATA_GPUSIM_VECTOR2(float2, float, 8)
STRATA_GPUSIM_VECTOR4(float4, float, 16)
STRATA_GPUSIM_VECTOR2(int2, int, 8)
STRATA_GPUSIM_VECTOR4(int4, int, 16)
STRATA_GPUSIM_VECTOR2(uint2, unsigned int, 8)
STRATA_GPUSIM_VECTOR4(uint4, unsigned int, 16)
STRATA_GPUSIM_VECTOR2(double2, double, 16)
STRATA_GPUSIM_VECTOR2(longlong2, long long, 16)
STRATA_GPUSIM_VECTOR2(ushort2, unsigned short, 4)
STRATA_GPUSIM_VECTOR4(ushort4, unsigned short, 8)

#undef STRATA_GPUSIM_VECTOR2
#undef STRATA_GPUSIM_VECTOR4

inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }
