// The mixture-of-experts routing kernels on the CPU: router softmax and top-k, capacity, the
// gather of token rows into per-expert blocks and its inverse, and the router's backward.
// src/model/moe.h has the math; kernels/ops.h (the moe_* ops) the shapes and conventions.
//
// Shapes: rows tokens, E experts, k choices a token, d features. A token-choice c = r * k + j is
// kept when row[c] >= 0, its row in the packed expert blocks. Sums run in f64 and round once to T.
#pragma once

#include <cstdint>

namespace strata::cpu {

// scores [rows, E] -> probs [rows, E], lse [rows], expert [rows, k], gate [rows, k].
template <typename T>
void moe_route(const T* scores, int64_t rows, int64_t E, int64_t k, double* probs, double* lse,
               int32_t* expert, double* gate);

// expert [rows, k] -> row [rows, k], counts [2, E] (chosen, then load). Expert e's block starts
// at e * rows_per_expert, or with rows_per_expert = 0 after the load of the experts before e.
void moe_capacity(const int32_t* expert, int64_t rows, int64_t k, int64_t E, int64_t capacity,
                  int64_t rows_per_expert, int32_t* row, int64_t* counts);

// losses [2] = {E sum_e f_e P_e, mean_r lse_r^2}, f_e = chosen_e / (rows k), P_e = mean_r p_re.
void moe_routing_losses(const double* probs, const double* lse, const int64_t* counts, int64_t rows,
                        int64_t E, int64_t k, double* losses);

// sum[0, 2E) += counts (as f64), sum[2E, 2E + 2) += losses.
void moe_routing_accumulate(const int64_t* counts, const double* losses, int64_t E, double* sum);

// packed[row[c]] = x[c / k] for every kept c.
template <typename T>
void moe_dispatch(const T* x, const int32_t* row, int64_t rows, int64_t k, int64_t d, T* packed);

// y[r] = sum_j gate[r k + j] out[row[r k + j]] over the kept choices (0 when none is kept).
template <typename T>
void moe_combine(const T* out, const int32_t* row, const double* gate, int64_t rows, int64_t k,
                 int64_t d, T* y);

// dout[row[c]] = gate[c] dy[c / k]; dgate[c] = dy[c / k] . out[row[c]] (0 for a dropped c).
template <typename T>
void moe_combine_backward(const T* dy, const T* out, const int32_t* row, const double* gate,
                          int64_t rows, int64_t k, int64_t d, T* dout, double* dgate);

// dx[r] = sum_j din[row[r k + j]] over kept choices, plus add[r] when add is not null.
template <typename T>
void moe_dispatch_backward(const T* din, const int32_t* row, const T* add, int64_t rows, int64_t k,
                           int64_t d, T* dx);

// The router scores' gradient from the gates' (dgate), the load-balancing loss (coefficient
// aux_coef) and the z-loss (z_coef), all times loss_scale: dscores [rows, E].
template <typename T>
void moe_router_backward(const double* probs, const double* lse, const int32_t* expert,
                         const double* gate, const double* dgate, const int64_t* counts,
                         int64_t rows, int64_t E, int64_t k, double loss_scale, double aux_coef,
                         double z_coef, T* dscores);

}  // namespace strata::cpu
