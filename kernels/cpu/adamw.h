// AdamW (Loshchilov & Hutter, "Decoupled weight decay regularization") on the CPU, fused into one
// pass over the parameters: the update the optimizer, ZeRO shards and host offload all run.
#pragma once

#include <cstdint>

namespace strata::cpu {

struct AdamWCoefficients {
  double lr, beta1, beta2, eps, weight_decay;
  double bias_correction1;  // 1 - beta1^step
  double bias_correction2;  // 1 - beta2^step
  double grad_scale;
};

// For each of the n elements, in P's precision:
//   g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   param -= lr * (m / bc1 / (sqrt(v / bc2) + eps) + weight_decay * param).
// P (param, m, v) = float or double; G (grad) = P, bf16 or f16 (widened on load).
template <typename P, typename G>
void adamw(P* param, const G* grad, P* m, P* v, int64_t n, const AdamWCoefficients& c);

}  // namespace strata::cpu
