// A small corpus with structure to learn, for the trainer and layout tests: mostly
// next = (7 * current + 3) mod 97, one token in eight random (Philox), written as the train.h5
// (20000 tokens) and val.h5 (2000 tokens) token datasets of `dir`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/philox.h"
#include "data/dataset.h"

namespace strata::testing {

inline void write_synthetic_corpus(const std::filesystem::path& dir) {
  for (const char* split : {"train", "val"}) {
    const int64_t n = split[0] == 't' ? 20000 : 2000;
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    int32_t current = 1;
    for (int64_t i = 0; i < n; ++i) {
      philox::Block w = philox::words(split[0], 0, static_cast<uint64_t>(i));
      current = (w.v[0] % 8 == 0) ? static_cast<int32_t>(w.v[1] % 97) : (7 * current + 3) % 97;
      tokens[static_cast<size_t>(i)] = current;
    }
    TokenDataset::write(dir / (std::string(split) + ".h5"), tokens, {97, 1, -1, "synthetic", "test"});
  }
}

}  // namespace strata::testing
