#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/vector_math.h"

namespace strata::cpu {
namespace {

// The key rows query row i sees are exactly [0, visible_keys(i)): the causal condition
// k_offset + j <= q_offset + i is j < q_offset + i - k_offset + 1.
int64_t visible_keys(const AttentionMask& mask, int64_t seq_k, int64_t i) {
  if (!mask.causal) return seq_k;
  return std::clamp<int64_t>(mask.q_offset + i - mask.k_offset + 1, 0, seq_k);
}

// The first query row that sees key row j (every row when not causal).
int64_t first_query_seeing(const AttentionMask& mask, int64_t seq_q, int64_t j) {
  if (!mask.causal) return 0;
  return std::clamp<int64_t>(mask.k_offset + j - mask.q_offset, 0, seq_q);
}

// sum_d a_d b_d with element d added into partial sum d % kLanes and the partial sums added in
// order at the end: independent accumulators vectorize (one running sum waits on every add), and
// the order of the additions is fixed, whatever the vector width or the thread count.
template <typename C>
C dot(const C* a, const C* b, int64_t n) {
  constexpr int64_t kLanes = 8;
  const int64_t body = n / kLanes * kLanes;
  C lane[kLanes] = {};
  for (int64_t d = 0; d < body; d += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] += a[d + l] * b[d + l];
  for (int64_t d = body; d < n; ++d) lane[d - body] += a[d] * b[d];
  C s = 0;
  for (int64_t l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

// dst[r * head_dim + d] = src[r * stride + d] in the compute type: one head's rows, gathered out
// of the interleaved [seq, heads, head_dim] layout into a dense tile.
template <typename T>
void load_rows(const T* src, int64_t stride, int64_t rows, int64_t head_dim, compute_t<T>* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < head_dim; ++d) dst[r * head_dim + d] = load(src[r * stride + d]);
}

template <typename T>
void load_row(const T* src, int64_t head_dim, compute_t<T>* dst) {
  load_rows(src, head_dim, 1, head_dim, dst);
}

template <typename T>
void store_rows(const compute_t<T>* src, int64_t rows, int64_t head_dim, int64_t stride, T* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < head_dim; ++d) dst[r * stride + d] = store<T>(src[r * head_dim + d]);
}

size_t count(int64_t n) {
  return static_cast<size_t>(n);
}

}  // namespace

// One work item = one query tile [i0, i1) of one (batch, head). For each key tile [j0, j1) and each
// row i of the query tile, with s_j = scale q_i.k_j over the visible j of the tile:
//   m' = max(m, max_j s_j),  l' = l e^(m - m') + sum_j e^(s_j - m'),
//   acc' = acc e^(m - m') + sum_j e^(s_j - m') v_j,
// and at the end out_i = acc / l, lse_i = m + log l (l = 0, no key seen: out = 0, lse = -inf).
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const AttentionShape& shape,
                       const AttentionMask& mask, const AttentionTiles& tiles, T* out,
                       compute_t<T>* lse) {
  using C = compute_t<T>;
  const int64_t seq_q = shape.seq_q, seq_k = shape.seq_k, n_heads = shape.n_heads;
  const int64_t head_dim = shape.head_dim, group = n_heads / shape.n_kv_heads;
  const int64_t q_row = n_heads * head_dim;            // elements between positions of q, out
  const int64_t kv_row = shape.n_kv_heads * head_dim;  // elements between positions of k, v
  const int64_t tile_q = tiles.q, tile_k = tiles.k;
  const int64_t q_tiles = (seq_q + tile_q - 1) / tile_q;
  const int64_t n_items = shape.batch * n_heads * q_tiles;
  const int64_t work = shape.batch * n_heads * seq_q * seq_k * head_dim;
  const C scale = static_cast<C>(mask.scale);
  constexpr C neg_inf = -std::numeric_limits<C>::infinity();

#pragma omp parallel if (work >= kParallelMin)
  {
    std::vector<C> q_tile(count(tile_q * head_dim));
    std::vector<C> k_tile(count(tile_k * head_dim)), v_tile(count(tile_k * head_dim));
    std::vector<C> s(count(tile_k));               // one row's scores in the key tile
    std::vector<C> m(count(tile_q));               // running max per query row
    std::vector<C> l(count(tile_q));               // running sum of e^(s - m) per row
    std::vector<C> acc(count(tile_q * head_dim));  // running sum of e^(s - m) v per row
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t b = item / (n_heads * q_tiles);
      const int64_t h = (item / q_tiles) % n_heads;
      const int64_t i0 = (item % q_tiles) * tile_q, i1 = std::min(seq_q, i0 + tile_q);
      const int64_t kv_h = h / group;
      const T* k_b = k + (b * seq_k * shape.n_kv_heads + kv_h) * head_dim;  // row j: + j * kv_row
      const T* v_b = v + (b * seq_k * shape.n_kv_heads + kv_h) * head_dim;
      load_rows(q + ((b * seq_q + i0) * n_heads + h) * head_dim, q_row, i1 - i0, head_dim,
                q_tile.data());
      std::fill(m.begin(), m.end(), neg_inf);
      std::fill(l.begin(), l.end(), C(0));
      std::fill(acc.begin(), acc.end(), C(0));

      // The last row of the tile sees the most keys; no row sees beyond them.
      const int64_t keys_end = visible_keys(mask, seq_k, i1 - 1);
      for (int64_t j0 = 0; j0 < keys_end; j0 += tile_k) {
        const int64_t j1 = std::min(keys_end, j0 + tile_k);
        load_rows(k_b + j0 * kv_row, kv_row, j1 - j0, head_dim, k_tile.data());
        load_rows(v_b + j0 * kv_row, kv_row, j1 - j0, head_dim, v_tile.data());
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t r = i - i0, n = std::min(j1, visible_keys(mask, seq_k, i)) - j0;
          if (n <= 0) continue;
          const C* q_i = q_tile.data() + r * head_dim;
          C tile_max = neg_inf;
          for (int64_t j = 0; j < n; ++j) {
            s[count(j)] = scale * dot(q_i, k_tile.data() + j * head_dim, head_dim);
            tile_max = std::max(tile_max, s[count(j)]);
          }
          const C m_new = std::max(m[count(r)], tile_max);
          const C rescale = exp_c(m[count(r)] - m_new);  // 0 on the row's first visible tile
          C* acc_r = acc.data() + r * head_dim;
          C l_r = l[count(r)] * rescale;
          for (int64_t d = 0; d < head_dim; ++d) acc_r[d] *= rescale;
          for (int64_t j = 0; j < n; ++j) s[count(j)] = exp_c(s[count(j)] - m_new);  // p_j
          for (int64_t j = 0; j < n; ++j) {
            const C p = s[count(j)];
            l_r += p;
            const C* v_j = v_tile.data() + j * head_dim;
            for (int64_t d = 0; d < head_dim; ++d) acc_r[d] += p * v_j[d];
          }
          m[count(r)] = m_new;
          l[count(r)] = l_r;
        }
      }

      for (int64_t i = i0; i < i1; ++i) {
        const int64_t r = i - i0;
        const bool seen = l[count(r)] > C(0);
        const C inv_l = seen ? C(1) / l[count(r)] : C(0);
        C* acc_r = acc.data() + r * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) acc_r[d] *= inv_l;
        lse[(b * n_heads + h) * seq_q + i] = seen ? m[count(r)] + std::log(l[count(r)]) : neg_inf;
      }
      store_rows(acc.data(), i1 - i0, head_dim, q_row,
                 out + ((b * seq_q + i0) * n_heads + h) * head_dim);
    }
  }
}

// One work item = one (batch, kv head): it owns dk, dv of that kv head and dq of the query heads
// in its group, so no two items write the same element (GQA's sum over the group happens inside
// the item). Keys are swept one tile at a time so the tile's k, v and their gradient rows stay in
// cache while the query rows of every head in the group stream past; scores are recomputed from
// the saved lse, p = exp(s - lse), instead of being stored. Gradients accumulate in the compute
// type over the whole item and are rounded to T once at the end. Only tiles.k is used.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const compute_t<T>* lse, const AttentionShape& shape,
                        const AttentionMask& mask, const AttentionTiles& tiles, T* dq, T* dk,
                        T* dv) {
  using C = compute_t<T>;
  const int64_t seq_q = shape.seq_q, seq_k = shape.seq_k, n_heads = shape.n_heads;
  const int64_t n_kv_heads = shape.n_kv_heads, head_dim = shape.head_dim;
  const int64_t group = n_heads / n_kv_heads;
  const int64_t q_row = n_heads * head_dim, kv_row = n_kv_heads * head_dim;
  const int64_t tile_k = tiles.k;
  const int64_t n_items = shape.batch * n_kv_heads;
  const int64_t work = shape.batch * n_heads * seq_q * seq_k * head_dim;
  const C scale = static_cast<C>(mask.scale);
  constexpr C neg_inf = -std::numeric_limits<C>::infinity();

#pragma omp parallel if (work >= kParallelMin)
  {
    std::vector<C> k_tile(count(tile_k * head_dim)), v_tile(count(tile_k * head_dim));
    std::vector<C> q_i(count(head_dim)), dout_i(count(head_dim)), out_i(count(head_dim));
    std::vector<C> dk_acc(count(seq_k * head_dim)), dv_acc(count(seq_k * head_dim));
    std::vector<C> dq_acc(count(group * seq_q * head_dim));  // [group, seq_q, head_dim]
    std::vector<C> delta(count(group * seq_q));              // D_i = dout_i . out_i per head
    std::vector<C> p(count(tile_k)), dp(count(tile_k));      // one query row's p_j, dout_i.v_j
#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t b = item / n_kv_heads, kv_h = item % n_kv_heads;
      const int64_t kv_base = (b * seq_k * n_kv_heads + kv_h) * head_dim;  // row j: + j * kv_row
      std::fill(dk_acc.begin(), dk_acc.end(), C(0));
      std::fill(dv_acc.begin(), dv_acc.end(), C(0));
      std::fill(dq_acc.begin(), dq_acc.end(), C(0));
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = kv_h * group + g;
        for (int64_t i = 0; i < seq_q; ++i) {
          const int64_t at = (b * seq_q + i) * q_row + h * head_dim;
          load_row(dout + at, head_dim, dout_i.data());
          load_row(out + at, head_dim, out_i.data());
          delta[count(g * seq_q + i)] = dot(dout_i.data(), out_i.data(), head_dim);
        }
      }

      for (int64_t j0 = 0; j0 < seq_k; j0 += tile_k) {
        const int64_t j1 = std::min(seq_k, j0 + tile_k);
        load_rows(k + kv_base + j0 * kv_row, kv_row, j1 - j0, head_dim, k_tile.data());
        load_rows(v + kv_base + j0 * kv_row, kv_row, j1 - j0, head_dim, v_tile.data());
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = kv_h * group + g;
          const compute_t<T>* lse_bh = lse + (b * n_heads + h) * seq_q;
          for (int64_t i = first_query_seeing(mask, seq_q, j0); i < seq_q; ++i) {
            const C lse_i = lse_bh[i];
            if (lse_i == neg_inf) continue;  // a row that sees no key has no gradient
            const int64_t n = std::min(j1, visible_keys(mask, seq_k, i)) - j0;
            const int64_t at = (b * seq_q + i) * q_row + h * head_dim;
            load_row(q + at, head_dim, q_i.data());
            load_row(dout + at, head_dim, dout_i.data());
            C* dq_i = dq_acc.data() + (g * seq_q + i) * head_dim;
            const C delta_i = delta[count(g * seq_q + i)];
            // p_j = exp(scale q_i.k_j - lse_i) and dp_j = dout_i.v_j for the tile's keys first,
            // so the exponentials run as one vector loop.
            for (int64_t j = 0; j < n; ++j) {
              p[count(j)] = scale * dot(q_i.data(), k_tile.data() + j * head_dim, head_dim) - lse_i;
              dp[count(j)] = dot(dout_i.data(), v_tile.data() + j * head_dim, head_dim);
            }
            for (int64_t j = 0; j < n; ++j) p[count(j)] = exp_c(p[count(j)]);
            for (int64_t j = 0; j < n; ++j) {
              const C* k_j = k_tile.data() + j * head_dim;
              C* dk_j = dk_acc.data() + (j0 + j) * head_dim;
              C* dv_j = dv_acc.data() + (j0 + j) * head_dim;
              const C p_j = p[count(j)];
              const C ds = p_j * (dp[count(j)] - delta_i);
              const C scaled_ds = scale * ds;
              for (int64_t d = 0; d < head_dim; ++d) {
                dv_j[d] += p_j * dout_i[count(d)];
                dk_j[d] += scaled_ds * q_i[count(d)];
                dq_i[d] += scaled_ds * k_j[d];
              }
            }
          }
        }
      }

      store_rows(dk_acc.data(), seq_k, head_dim, kv_row, dk + kv_base);
      store_rows(dv_acc.data(), seq_k, head_dim, kv_row, dv + kv_base);
      for (int64_t g = 0; g < group; ++g)
        store_rows(dq_acc.data() + g * seq_q * head_dim, seq_q, head_dim, q_row,
                   dq + (b * seq_q * n_heads + kv_h * group + g) * head_dim);
    }
  }
}

template <typename T>
void attention_merge(T* out, compute_t<T>* lse, const T* out_b, const compute_t<T>* lse_b,
                     int64_t batch, int64_t seq_q, int64_t n_heads, int64_t head_dim) {
  using C = compute_t<T>;
  constexpr C neg_inf = -std::numeric_limits<C>::infinity();
  const int64_t n_rows = batch * seq_q;  // one row = one position of one batch entry
#pragma omp parallel for schedule(static) if (n_rows * n_heads * head_dim >= kParallelMin)
  for (int64_t row = 0; row < n_rows; ++row) {
    const int64_t b = row / seq_q, i = row % seq_q;
    for (int64_t h = 0; h < n_heads; ++h) {
      T* out_i = out + (row * n_heads + h) * head_dim;
      const T* out_b_i = out_b + (row * n_heads + h) * head_dim;
      C& lse_a = lse[(b * n_heads + h) * seq_q + i];
      const C lse_bi = lse_b[(b * n_heads + h) * seq_q + i];
      // logaddexp around the larger side, so exp never overflows; -inf - finite = -inf, e^-inf = 0.
      const C top = std::max(lse_a, lse_bi);
      if (top == neg_inf) {
        std::fill_n(out_i, head_dim, store<T>(C(0)));
        lse_a = neg_inf;
        continue;
      }
      const C merged = top + std::log(std::exp(lse_a - top) + std::exp(lse_bi - top));
      const C w_a = std::exp(lse_a - merged), w_b = std::exp(lse_bi - merged);
      for (int64_t d = 0; d < head_dim; ++d)
        out_i[d] = store<T>(w_a * load(out_i[d]) + w_b * load(out_b_i[d]));
      lse_a = merged;
    }
  }
}

template <typename T>
void attention_decode(const T* q, const T* k, const T* v, const AttentionShape& shape,
                      const AttentionMask& mask, int64_t split, T* out) {
  using C = compute_t<T>;
  const int64_t seq_k = shape.seq_k,
                chunks = std::clamp<int64_t>(split, 1, std::max<int64_t>(seq_k, 1));
  const size_t n_out = count(shape.batch * shape.seq_q * shape.n_heads * shape.head_dim);
  const size_t n_lse = count(shape.batch * shape.n_heads * shape.seq_q);
  std::vector<C> lse(n_lse);
  if (chunks == 1) {
    attention_forward<T>(q, k, v, shape, mask, {}, out, lse.data());
    return;
  }
  // Chunk by chunk in the compute type, so the partials are not rounded to T before merging.
  const int64_t chunk = (seq_k + chunks - 1) / chunks, kv_row = shape.n_kv_heads * shape.head_dim;
  std::vector<C> q_c(n_out), acc(n_out), part(n_out), part_lse(n_lse), k_c, v_c;
  for (size_t i = 0; i < n_out; ++i) q_c[i] = load(q[i]);
  for (int64_t c0 = 0; c0 < seq_k; c0 += chunk) {
    const int64_t len = std::min(seq_k, c0 + chunk) - c0;
    k_c.resize(count(shape.batch * len * kv_row));
    v_c.resize(k_c.size());
    for (int64_t b = 0; b < shape.batch; ++b)  // rows c0 .. c0 + len of each batch entry
      for (int64_t e = 0; e < len * kv_row; ++e) {
        k_c[count(b * len * kv_row + e)] = load(k[(b * seq_k + c0) * kv_row + e]);
        v_c[count(b * len * kv_row + e)] = load(v[(b * seq_k + c0) * kv_row + e]);
      }
    AttentionShape part_shape = shape;
    part_shape.seq_k = len;
    AttentionMask part_mask = mask;
    part_mask.k_offset = mask.k_offset + c0;
    const bool first = c0 == 0;
    attention_forward<C>(q_c.data(), k_c.data(), v_c.data(), part_shape, part_mask, {},
                         first ? acc.data() : part.data(), first ? lse.data() : part_lse.data());
    if (!first)
      attention_merge<C>(acc.data(), lse.data(), part.data(), part_lse.data(), shape.batch,
                         shape.seq_q, shape.n_heads, shape.head_dim);
  }
  for (size_t i = 0; i < n_out; ++i) out[i] = store<T>(acc[i]);
}

// The macro arguments are types, which cannot be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define STRATA_INSTANTIATE_ATTENTION(T)                                                         \
  template void attention_forward<T>(const T*, const T*, const T*, const AttentionShape&,       \
                                     const AttentionMask&, const AttentionTiles&, T*,           \
                                     compute_t<T>*);                                            \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*,         \
                                      const compute_t<T>*, const AttentionShape&,               \
                                      const AttentionMask&, const AttentionTiles&, T*, T*, T*); \
  template void attention_merge<T>(T*, compute_t<T>*, const T*, const compute_t<T>*, int64_t,   \
                                   int64_t, int64_t, int64_t);                                  \
  template void attention_decode<T>(const T*, const T*, const T*, const AttentionShape&,        \
                                    const AttentionMask&, int64_t, T*);
STRATA_FOR_EACH_FLOATING(STRATA_INSTANTIATE_ATTENTION)
#undef STRATA_INSTANTIATE_ATTENTION
// NOLINTEND(bugprone-macro-parentheses)

}  // namespace strata::cpu
