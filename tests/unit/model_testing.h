// Token batches for whole-model tests: ids and targets in [0, vocab) drawn from Philox.
#pragma once

#include "core/philox.h"
#include "core/tensor.h"

namespace strata::testing {

// ids, targets: [batch, seq] i32 from Philox(seed, stream 1 / 2, element index).
inline void make_token_batch(int64_t vocab_size, int64_t batch, int64_t seq, uint64_t seed,
                             Tensor& ids, Tensor& targets) {
  ids = Tensor::empty({batch, seq}, DType::i32);
  targets = Tensor::empty({batch, seq}, DType::i32);
  for (int64_t i = 0; i < batch * seq; ++i) {
    auto draw = [&](uint64_t stream) {
      return static_cast<int32_t>(philox::words(seed, stream, static_cast<uint64_t>(i)).v[0] %
                                  static_cast<uint32_t>(vocab_size));
    };
    ids.data<int32_t>()[i] = draw(1);
    targets.data<int32_t>()[i] = draw(2);
  }
}

}  // namespace strata::testing
