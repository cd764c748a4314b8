// Rotary position embedding on the CPU (Su et al., RoFormer), in the "rotate half" pairing of
// Hugging Face Llama: element j of a head is paired with j + head_dim/2.
#pragma once

#include <cstdint>

namespace strata::cpu {

// x, y: [batch, seq, heads, head_dim] (head_dim even; y may alias x). For the row at position
// p = position_offset + s and pair j < h = head_dim/2, with angle a = p * theta^(-2j/head_dim):
//   y_j = x_j cos a - x_{j+h} sin a,   y_{j+h} = x_{j+h} cos a + x_j sin a.
// inverse = true rotates by -a: the transpose of the rotation, i.e. the backward pass.
// T = float, double, bf16 or f16; angles and products in f64, each output rounded once.
template <typename T>
void rope(const T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          int64_t position_offset, double theta, bool inverse, T* y);

}  // namespace strata::cpu
