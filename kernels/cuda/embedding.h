// Launchers of the embedding kernels (kernels/cuda/embedding.cu), aware of a vocabulary shard as
// the CPU ones (kernels/cpu/embedding.h): raw device pointers, sizes and the stream. Table, out and
// dout are f32, bf16 or f16 (`dtype`); ids are i32 or i64 (`index_dtype`). The op front ends
// (kernels/ops_embedding.cpp) check the tensors first.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace strata::cuda {

// out[i, :] = table[ids[i] - vocab_start, :] when that row is in the shard, else 0.
// ids: [n]; table: [vocab_shard, d]; out: [n, d].
void embedding_forward(const void* ids, DType index_dtype, int64_t n, const void* table, DType dtype,
                       int64_t vocab_start, int64_t vocab_shard, int64_t d, void* out, cudaStream_t stream);

// Device scratch the backward needs for n ids: this many 64-bit words.
int64_t embedding_backward_scratch(int64_t n);
// dtable[ids[i] - vocab_start, :] += dout[i, :] for the ids in the shard, deterministically: the
// (row, position) pairs are sorted on the device, then each row adds its dout rows in position
// order, rounding to dtable's dtype after each addition as the CPU does, so both give the same bits.
// No float atomics. n < 2^32.
void embedding_backward(const void* dout, DType dtype, const void* ids, DType index_dtype, int64_t n,
                        int64_t vocab_start, int64_t vocab_shard, int64_t d, uint64_t* scratch, void* dtable,
                        cudaStream_t stream);

}  // namespace strata::cuda
