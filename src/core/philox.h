// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11). The value for element i of a stream depends only on (seed, stream, i), so any
// rank can produce any slice of a tensor's initial values without drawing the ones before it.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

#include "core/half.h"  // STRATA_HD

namespace strata::philox {

struct Block {
  uint32_t v[4];
};

// Ten rounds of the Philox4x32 bijection of counter under key.
STRATA_HD Block philox4x32(Block counter, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kMul0) * counter.v[0];
    uint64_t p1 = static_cast<uint64_t>(kMul1) * counter.v[2];
    Block next;
    next.v[0] = static_cast<uint32_t>(p1 >> 32) ^ counter.v[1] ^ key0;
    next.v[1] = static_cast<uint32_t>(p1);
    next.v[2] = static_cast<uint32_t>(p0 >> 32) ^ counter.v[3] ^ key1;
    next.v[3] = static_cast<uint32_t>(p0);
    counter = next;
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The four 32-bit words for element `index` of stream `stream` under `seed`.
STRATA_HD Block words(uint64_t seed, uint64_t stream, uint64_t index) {
  Block counter{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                 static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}};
  return philox4x32(counter, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1]: 24 random bits, never 0, so log() is always finite.
STRATA_HD float to_unit(uint32_t w) { return (static_cast<float>(w >> 8) + 1.0f) * (1.0f / 16777216.0f); }

STRATA_HD float uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return to_unit(words(seed, stream, index).v[0]);
}

// Standard normal by Box-Muller on the first two words of the element's block.
STRATA_HD float normal(uint64_t seed, uint64_t stream, uint64_t index) {
  Block b = words(seed, stream, index);
  float u1 = to_unit(b.v[0]);
  float u2 = to_unit(b.v[1]);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

// A stream key from a name (FNV-1a, 64-bit): parameters are keyed by their global name, so their
// initial values do not depend on the order in which they are created or on the layout.
constexpr uint64_t stream_key(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace strata::philox
