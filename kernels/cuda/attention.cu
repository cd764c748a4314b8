// CUDA attention in the flash form (Dao et al., 2022, 2023), the semantics of
// kernels/cpu/attention.h.
//
// SIMT kernels (every dtype, any head_dim up to kAttentionMaxHeadDim): a block of kThreads works on
// one (batch, head, query tile) and sweeps the key tiles, with the tiles of q, k and v widened to
// f32 in shared memory. A tile of scores is computed one (query row, key) entry a thread, then one
// thread per query row folds its row into the online softmax, then one thread per (row, dim) of the
// output updates its accumulator; nothing crosses threads but shared memory and __syncthreads, so
// every order of the threads gives the same bits. The backward recomputes p from the saved lse and
// writes each gradient element from one thread (no atomics): D = rowsum(dout * out) first, then a
// kernel over key tiles that loops over the query rows of every head of the group for dk, dv, and
// one over query tiles that loops over the keys for dq.
//
// The tensor-core forward (bf16/f16, head_dim 64 or 128: forward_mma_kernel) uses mma.sync m16n8k16
// through kernels/cuda/mma.cuh.
#include <cmath>
#include <type_traits>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma.cuh"

namespace strata::cuda {
namespace {

constexpr float kNegInf = -INFINITY;

// The device-side copy of AttentionProblem, with the tile size.
struct Dims {
  int64_t batch, seq_q, seq_k, n_heads, n_kv_heads, head_dim, group;
  bool causal;
  int64_t q_offset, k_offset;
  float scale;
  int tile;  // rows of a query or key tile
  int ld;    // floats between the rows of a tile in shared memory
};

// Query row i sees exactly the key rows [0, visible_keys(i)) (kernels/cpu/attention.cpp).
__device__ __forceinline__ int64_t visible_keys(const Dims& p, int64_t i) {
  if (!p.causal) return p.seq_k;
  const int64_t n = p.q_offset + i - p.k_offset + 1;
  return n < 0 ? 0 : (n > p.seq_k ? p.seq_k : n);
}

// The first query row that sees key row j (every row when not causal).
__device__ __forceinline__ int64_t first_query_seeing(const Dims& p, int64_t j) {
  if (!p.causal) return 0;
  const int64_t i = p.k_offset + j - p.q_offset;
  return i < 0 ? 0 : (i > p.seq_q ? p.seq_q : i);
}

constexpr int kThreads = 256;
// Output elements (tile rows x head_dim) a thread owns: tile * head_dim <= 16 * 128 = 8 * 256.
constexpr int kPerThread = 8;

// Rows of a query or key tile: four f32 tiles of tile x (head_dim + 1) fit in 48 KiB.
int tile_rows(int64_t head_dim) {
  return head_dim <= 128 ? 16 : 8;
}

Dims dims_of(const AttentionProblem& p) {
  Dims d{};
  d.batch = p.batch;
  d.seq_q = p.seq_q;
  d.seq_k = p.seq_k;
  d.n_heads = p.n_heads;
  d.n_kv_heads = p.n_kv_heads;
  d.head_dim = p.head_dim;
  d.group = p.n_heads / p.n_kv_heads;
  d.causal = p.causal;
  d.q_offset = p.q_offset;
  d.k_offset = p.k_offset;
  d.scale = static_cast<float>(p.scale);
  d.tile = tile_rows(p.head_dim);
  d.ld =
      static_cast<int>(p.head_dim) + 1;  // odd stride: the rows of a tile start in different banks
  return d;
}

void check_head_dim(const char* op, const AttentionProblem& p) {
  STRATA_CHECK(p.head_dim <= kAttentionMaxHeadDim, op, ": head_dim=", p.head_dim, " exceeds ",
               kAttentionMaxHeadDim, ", the most the CUDA attention kernels take");
}

int64_t lo(int64_t a, int64_t b) {
  return a < b ? a : b;
}
__device__ __forceinline__ int64_t lo_d(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Shared floats of the kernels: four row tiles, two score tiles, four per-row values.
size_t shared_bytes(const Dims& d) {
  const size_t floats =
      4 * size_t(d.tile) * d.ld + 2 * size_t(d.tile) * (d.tile + 1) + 4 * size_t(d.tile);
  return floats * sizeof(float);
}

// dst[r * ld + c] = element c of row first + r of one head, for the tile's rows (zero from `end`
// on); row `row` of the head starts at src + row * row_stride (the interleaved [seq, heads,
// head_dim] layout).
template <typename T>
__device__ void load_tile(float* dst, const T* src, int64_t row_stride, int64_t first, int64_t end,
                          const Dims& p) {
  const int hd = static_cast<int>(p.head_dim), n = p.tile * hd;
  for (int e = static_cast<int>(threadIdx.x); e < n; e += static_cast<int>(blockDim.x)) {
    const int r = e / hd, c = e % hd;
    const int64_t row = first + r;
    dst[r * p.ld + c] = row < end ? to_float(src[row * row_stride + c]) : 0.0f;
  }
}

__device__ __forceinline__ float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// Calls f(r, row, dim) for each element of the tile x head_dim block this thread owns: element
// threadIdx.x + r kThreads, held in its accumulators [r] (tile * head_dim <= kPerThread kThreads).
template <typename F>
__device__ __forceinline__ void for_owned(const Dims& p, F&& f) {
  const int hd = static_cast<int>(p.head_dim), owned = p.tile * hd;
  for (int r = 0; r < kPerThread; ++r) {
    const int e = static_cast<int>(threadIdx.x) + r * kThreads;
    if (e >= owned) break;
    f(r, e / hd, e % hd);
  }
}

// Forward over the keys [split * chunk, (split + 1) * chunk) of split blockIdx.z % splits; batch
// entry blockIdx.z / splits, head blockIdx.y, query tile blockIdx.x. out and lse of split s start
// at s * (batch * seq_q * n_heads * head_dim) and s * (batch * n_heads * seq_q): with one split
// they are the op's own outputs, with several the partials attention_decode merges.
template <typename T, typename O>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* q, const T* k, const T* v, Dims p, int splits, int64_t chunk, O* out,
                   float* lse) {
  STRATA_DYNAMIC_SHARED(float, smem);
  const int tile = p.tile, ld = p.ld, hd = static_cast<int>(p.head_dim),
            t = static_cast<int>(threadIdx.x);
  float* q_s = smem;
  float* k_s = q_s + tile * ld;
  float* v_s = k_s + tile * ld;
  float* p_s = v_s + tile * ld;  // [tile][tile + 1]: scores, then their exponentials
  float* m_s = p_s + tile * (tile + 1);
  float* l_s = m_s + tile;
  float* rescale_s = l_s + tile;

  const int64_t split = blockIdx.z % splits, b = blockIdx.z / splits, h = blockIdx.y;
  const int64_t i0 = int64_t{blockIdx.x} * tile, i_end = lo_d(p.seq_q, i0 + tile);
  const int64_t q_stride = p.n_heads * p.head_dim, kv_stride = p.n_kv_heads * p.head_dim;
  const int64_t kv_base = (b * p.seq_k * p.n_kv_heads + h / p.group) * p.head_dim;
  load_tile(q_s, q + (b * p.seq_q * p.n_heads + h) * p.head_dim, q_stride, i0, i_end, p);
  if (t < tile) {
    m_s[t] = kNegInf;
    l_s[t] = 0.0f;
  }
  float acc[kPerThread] = {};

  // The last row of the tile sees the most keys; no row sees beyond them.
  const int64_t key_begin = split * chunk, key_stop = lo_d(p.seq_k, key_begin + chunk);
  const int64_t keys_end = lo_d(key_stop, visible_keys(p, i_end - 1));
  for (int64_t j0 = key_begin; j0 < keys_end; j0 += tile) {
    const int64_t j1 = lo_d(keys_end, j0 + tile);
    __syncthreads();  // every thread is done with the previous tile's k_s, v_s and p_s
    load_tile(k_s, k + kv_base, kv_stride, j0, j1, p);
    load_tile(v_s, v + kv_base, kv_stride, j0, j1, p);
    __syncthreads();
    for (int e = t; e < tile * tile; e += kThreads) {
      const int r = e / tile, c = e % tile;
      float s = kNegInf;
      if (i0 + r < i_end && j0 + c < lo_d(j1, visible_keys(p, i0 + r)))
        s = p.scale * dot(q_s + r * ld, k_s + c * ld, hd);
      p_s[r * (tile + 1) + c] = s;
    }
    __syncthreads();
    if (t < tile) {
      // m' = max(m, max_j s_j), l' = l e^(m - m') + sum_j e^(s_j - m'); a row that has seen no
      // key yet (m' = -inf) keeps l = 0 and its zero accumulator.
      float* row = p_s + t * (tile + 1);
      float top = kNegInf;
      for (int c = 0; c < tile; ++c) top = fmaxf(top, row[c]);
      const float m_old = m_s[t], m_new = fmaxf(m_old, top);
      float rescale = 1.0f, sum = 0.0f;
      if (m_new != kNegInf) {
        rescale = expf(m_old - m_new);  // 0 on the row's first visible tile
        for (int c = 0; c < tile; ++c) {
          const float e = row[c] == kNegInf ? 0.0f : expf(row[c] - m_new);
          row[c] = e;
          sum += e;
        }
      } else {
        for (int c = 0; c < tile; ++c) row[c] = 0.0f;
      }
      l_s[t] = l_s[t] * rescale + sum;
      m_s[t] = m_new;
      rescale_s[t] = rescale;
    }
    __syncthreads();
    for_owned(p, [&](int r, int i, int d) {
      const float* prow = p_s + i * (tile + 1);
      float a = acc[r] * rescale_s[i];
      for (int c = 0; c < tile; ++c) a += prow[c] * v_s[c * ld + d];
      acc[r] = a;
    });
  }
  __syncthreads();  // m_s and l_s are final

  O* out_s = out + split * (p.batch * p.seq_q * p.n_heads * p.head_dim);
  for_owned(p, [&](int r, int i, int d) {
    if (i0 + i >= i_end) return;
    const float l = l_s[i], inv_l = l > 0.0f ? 1.0f / l : 0.0f;
    out_s[((b * p.seq_q + i0 + i) * p.n_heads + h) * p.head_dim + d] =
        from_float<O>(acc[r] * inv_l);
  });
  if (t < tile && i0 + t < i_end) {
    const float l = l_s[t];
    lse[split * (p.batch * p.n_heads * p.seq_q) + (b * p.n_heads + h) * p.seq_q + i0 + t] =
        l > 0.0f ? m_s[t] + logf(l) : kNegInf;
  }
}

// delta[(b, h, i)] = dout_i . out_i, one thread per query row.
template <typename T>
__global__ void delta_kernel(const T* dout, const T* out, Dims p, float* delta) {
  const int64_t rows = p.batch * p.seq_q * p.n_heads;
  const int64_t row = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (row >= rows) return;
  const int64_t h = row % p.n_heads, i = (row / p.n_heads) % p.seq_q,
                b = row / (p.n_heads * p.seq_q);
  const T* a = dout + row * p.head_dim;
  const T* c = out + row * p.head_dim;
  float s = 0.0f;
  for (int64_t d = 0; d < p.head_dim; ++d) s += to_float(a[d]) * to_float(c[d]);
  delta[(b * p.n_heads + h) * p.seq_q + i] = s;
}

// The query rows' per-row statistics of a tile into shared memory: lse (-inf past the end, so
// those rows contribute nothing) and D.
__device__ void load_row_stats(const float* lse_bh, const float* delta_bh, int64_t i0,
                               int64_t i_end, int tile, float* lse_s, float* delta_s) {
  const int t = static_cast<int>(threadIdx.x);
  if (t < tile) {
    lse_s[t] = i0 + t < i_end ? lse_bh[i0 + t] : kNegInf;
    delta_s[t] = i0 + t < i_end ? delta_bh[i0 + t] : 0.0f;
  }
}

// p_ij = exp(scale q_i.k_j - lse_i) and scale ds_ij = scale p_ij (dout_i.v_j - D_i) of one
// (query tile, key tile) pair into p_s and ds_s ([tile][tile + 1]); 0 where row i does not see
// key j, past either end, and for rows that see no key at all (lse = -inf).
__device__ void gradient_tile(const Dims& p, const float* q_s, const float* do_s, const float* k_s,
                              const float* v_s, const float* lse_s, const float* delta_s,
                              int64_t i0, int64_t i_end, int64_t j0, int64_t j1, float* p_s,
                              float* ds_s) {
  const int tile = p.tile, ld = p.ld, hd = static_cast<int>(p.head_dim);
  for (int e = static_cast<int>(threadIdx.x); e < tile * tile; e += kThreads) {
    const int r = e / tile, c = e % tile;
    float pe = 0.0f, ds = 0.0f;
    const int64_t i = i0 + r;
    if (i < i_end && j0 + c < lo_d(j1, visible_keys(p, i)) && lse_s[r] != kNegInf) {
      pe = expf(p.scale * dot(q_s + r * ld, k_s + c * ld, hd) - lse_s[r]);
      const float dp = dot(do_s + r * ld, v_s + c * ld, hd);
      ds = p.scale * (pe * (dp - delta_s[r]));
    }
    p_s[r * (tile + 1) + c] = pe;
    ds_s[r * (tile + 1) + c] = ds;
  }
}

// The shared memory of the SIMT backward kernels: four row tiles (tile x ld), p and ds
// ([tile][tile + 1]) and two per-row values.
struct GradientShared {
  float *q, *dout, *k, *v, *p, *ds, *lse, *delta;
  __device__ GradientShared(float* smem, const Dims& d) {
    const int rows = d.tile * d.ld, scores = d.tile * (d.tile + 1);
    q = smem;
    dout = q + rows;
    k = dout + rows;
    v = k + rows;
    p = v + rows;
    ds = p + scores;
    lse = ds + scores;
    delta = lse + d.tile;
  }
};

// dk, dv of key tile blockIdx.x of kv head blockIdx.y, batch entry blockIdx.z: sums over the query
// rows of every head of the group, in the order (head, row), one thread per (key, dim).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_kv_kernel(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                       const float* delta, Dims p, T* dk, T* dv) {
  STRATA_DYNAMIC_SHARED(float, smem);
  const int tile = p.tile, ld = p.ld;
  const GradientShared sh(smem, p);
  float *q_s = sh.q, *do_s = sh.dout, *k_s = sh.k, *v_s = sh.v, *p_s = sh.p, *ds_s = sh.ds;
  float *lse_s = sh.lse, *delta_s = sh.delta;

  const int64_t b = blockIdx.z, kv_h = blockIdx.y;
  const int64_t j0 = int64_t{blockIdx.x} * tile, j1 = lo_d(p.seq_k, j0 + tile);
  const int64_t q_stride = p.n_heads * p.head_dim, kv_stride = p.n_kv_heads * p.head_dim;
  const int64_t kv_base = (b * p.seq_k * p.n_kv_heads + kv_h) * p.head_dim;
  load_tile(k_s, k + kv_base, kv_stride, j0, j1, p);
  load_tile(v_s, v + kv_base, kv_stride, j0, j1, p);
  float acc_dk[kPerThread] = {}, acc_dv[kPerThread] = {};

  const int64_t first = first_query_seeing(p, j0);  // no earlier row sees a key of the tile
  for (int64_t g = 0; g < p.group; ++g) {
    const int64_t h = kv_h * p.group + g;
    const int64_t q_base = (b * p.seq_q * p.n_heads + h) * p.head_dim;
    const int64_t stats = (b * p.n_heads + h) * p.seq_q;
    for (int64_t i0 = first; i0 < p.seq_q; i0 += tile) {
      const int64_t i_end = lo_d(p.seq_q, i0 + tile);
      __syncthreads();  // every thread is done with the previous rows' q_s, do_s, p_s and ds_s
      load_tile(q_s, q + q_base, q_stride, i0, i_end, p);
      load_tile(do_s, dout + q_base, q_stride, i0, i_end, p);
      load_row_stats(lse + stats, delta + stats, i0, i_end, tile, lse_s, delta_s);
      __syncthreads();
      gradient_tile(p, q_s, do_s, k_s, v_s, lse_s, delta_s, i0, i_end, j0, j1, p_s, ds_s);
      __syncthreads();
      for_owned(p, [&](int r, int j, int d) {
        float a_dk = acc_dk[r], a_dv = acc_dv[r];
        for (int c = 0; c < tile; ++c) {
          a_dv += p_s[c * (tile + 1) + j] * do_s[c * ld + d];
          a_dk += ds_s[c * (tile + 1) + j] * q_s[c * ld + d];
        }
        acc_dk[r] = a_dk;
        acc_dv[r] = a_dv;
      });
    }
  }

  for_owned(p, [&](int r, int j, int d) {
    if (j0 + j >= j1) return;
    const int64_t at = kv_base + (j0 + j) * kv_stride + d;
    dk[at] = from_float<T>(acc_dk[r]);
    dv[at] = from_float<T>(acc_dv[r]);
  });
}

// dq of query tile blockIdx.x of head blockIdx.y, batch entry blockIdx.z: sums over the visible
// keys in order, one thread per (row, dim).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_q_kernel(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                      const float* delta, Dims p, T* dq) {
  STRATA_DYNAMIC_SHARED(float, smem);
  const int tile = p.tile, ld = p.ld;
  const GradientShared sh(smem, p);
  float *q_s = sh.q, *do_s = sh.dout, *k_s = sh.k, *v_s = sh.v, *p_s = sh.p, *ds_s = sh.ds;
  float *lse_s = sh.lse, *delta_s = sh.delta;

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t i0 = int64_t{blockIdx.x} * tile, i_end = lo_d(p.seq_q, i0 + tile);
  const int64_t q_stride = p.n_heads * p.head_dim, kv_stride = p.n_kv_heads * p.head_dim;
  const int64_t q_base = (b * p.seq_q * p.n_heads + h) * p.head_dim;
  const int64_t kv_base = (b * p.seq_k * p.n_kv_heads + h / p.group) * p.head_dim;
  const int64_t stats = (b * p.n_heads + h) * p.seq_q;
  load_tile(q_s, q + q_base, q_stride, i0, i_end, p);
  load_tile(do_s, dout + q_base, q_stride, i0, i_end, p);
  load_row_stats(lse + stats, delta + stats, i0, i_end, tile, lse_s, delta_s);
  float acc[kPerThread] = {};

  const int64_t keys_end = visible_keys(p, i_end - 1);
  for (int64_t j0 = 0; j0 < keys_end; j0 += tile) {
    const int64_t j1 = lo_d(keys_end, j0 + tile);
    __syncthreads();  // every thread is done with the previous tile's k_s and ds_s
    load_tile(k_s, k + kv_base, kv_stride, j0, j1, p);
    load_tile(v_s, v + kv_base, kv_stride, j0, j1, p);
    __syncthreads();
    gradient_tile(p, q_s, do_s, k_s, v_s, lse_s, delta_s, i0, i_end, j0, j1, p_s, ds_s);
    __syncthreads();
    for_owned(p, [&](int r, int i, int d) {
      float a = acc[r];
      for (int c = 0; c < tile; ++c) a += ds_s[i * (tile + 1) + c] * k_s[c * ld + d];
      acc[r] = a;
    });
  }

  for_owned(p, [&](int r, int i, int d) {
    if (i0 + i < i_end) dq[q_base + (i0 + i) * q_stride + d] = from_float<T>(acc[r]);
  });
}

// The log-sum-exp merge of `parts` partial results of one row, one thread per (b, i, h) row:
// part s of the row is (out_s + s * out_step, lse_s + s * lse_step). Returns the merged lse and
// writes the merged row to `out`; a row no part saw gets out = 0, lse = -inf.
template <typename In, typename O>
__device__ float merge_row(const In* out_parts, const float* lse_parts, int parts, int64_t out_step,
                           int64_t lse_step, int64_t head_dim, O* out) {
  float top = kNegInf;
  for (int s = 0; s < parts; ++s) top = fmaxf(top, lse_parts[s * lse_step]);
  if (top == kNegInf) {
    for (int64_t d = 0; d < head_dim; ++d) out[d] = from_float<O>(0.0f);
    return kNegInf;
  }
  float total = 0.0f;
  for (int s = 0; s < parts; ++s) total += expf(lse_parts[s * lse_step] - top);
  const float merged = top + logf(total);
  for (int64_t d = 0; d < head_dim; ++d) {
    float x = 0.0f;
    for (int s = 0; s < parts; ++s)
      x += expf(lse_parts[s * lse_step] - merged) * to_float(out_parts[s * out_step + d]);
    out[d] = from_float<O>(x);
  }
  return merged;
}

// ops::attention_merge: row (b, i, h) of out with that of out_b, in place.
template <typename T>
__global__ void merge_kernel(T* out, float* lse, const T* out_b, const float* lse_b, int64_t batch,
                             int64_t seq_q, int64_t n_heads, int64_t head_dim) {
  const int64_t row = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (row >= batch * seq_q * n_heads) return;
  const int64_t h = row % n_heads, i = (row / n_heads) % seq_q, b = row / (n_heads * seq_q);
  const int64_t at = (b * n_heads + h) * seq_q + i;
  T* out_row = out + row * head_dim;
  const float lse_a = lse[at], lse_bi = lse_b[at];
  const float top = fmaxf(lse_a, lse_bi);
  if (top == kNegInf) {
    for (int64_t d = 0; d < head_dim; ++d) out_row[d] = from_float<T>(0.0f);
    return;
  }
  // logaddexp around the larger side, so exp never overflows; e^-inf = 0.
  const float merged = top + logf(expf(lse_a - top) + expf(lse_bi - top));
  const float w_a = expf(lse_a - merged), w_b = expf(lse_bi - merged);
  const T* b_row = out_b + row * head_dim;
  for (int64_t d = 0; d < head_dim; ++d)
    out_row[d] = from_float<T>(w_a * to_float(out_row[d]) + w_b * to_float(b_row[d]));
  lse[at] = merged;
}

// attention_decode's merge: the `splits` f32 partials of row (b, i, h) into out.
template <typename T>
__global__ void decode_merge_kernel(const float* part_out, const float* part_lse, Dims p,
                                    int splits, T* out) {
  const int64_t row = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (row >= p.batch * p.seq_q * p.n_heads) return;
  const int64_t h = row % p.n_heads, i = (row / p.n_heads) % p.seq_q,
                b = row / (p.n_heads * p.seq_q);
  merge_row(part_out + row * p.head_dim, part_lse + (b * p.n_heads + h) * p.seq_q + i, splits,
            p.batch * p.seq_q * p.n_heads * p.head_dim, p.batch * p.n_heads * p.seq_q, p.head_dim,
            out + row * p.head_dim);
}

// ---- tensor cores (bf16/f16, head_dim 64 or 128) ----

constexpr int kMmaWarps = 4;
constexpr int kMmaThreads = 32 * kMmaWarps;
constexpr int kMmaRows = 16 * kMmaWarps;  // rows a block owns: 16 a warp, one mma row tile
constexpr int kMmaKeys = 64;              // keys of a shared K/V tile of the forward and of dq
constexpr int kMmaGradRows = 16;          // query rows of a shared tile of the dk/dv kernel

// Rows [first, first + rows) of one head (zero from `end` on) into shared memory with `ld`
// elements between rows, 16 bytes a thread at a time.
template <typename T, int kHeadDim>
__device__ void load_rows16(T* dst, int ld, const T* src, int64_t row_stride, int64_t first,
                            int64_t end, int rows) {
  constexpr int kPerRow = kHeadDim / kVec<T>;
  Vec<T> zero;
  for (int e = 0; e < kVec<T>; ++e) zero.v[e] = from_float<T>(0.0f);
  for (int e = static_cast<int>(threadIdx.x); e < rows * kPerRow;
       e += static_cast<int>(blockDim.x)) {
    const int r = e / kPerRow, c = (e % kPerRow) * kVec<T>;
    store_vec(dst + r * ld + c,
              first + r < end ? load_vec(src + (first + r) * row_stride + c) : zero);
  }
}

// As load_rows16 through cp.async: the rows land at the caller's cp_async_wait (zero-filled from
// `end` on, reading nothing there).
template <typename T, int kHeadDim>
__device__ void load_rows16_async(T* dst, int ld, const T* src, int64_t row_stride, int64_t first,
                                  int64_t end, int rows) {
  constexpr int kPerRow = kHeadDim / kVec<T>;
  for (int e = static_cast<int>(threadIdx.x); e < rows * kPerRow;
       e += static_cast<int>(blockDim.x)) {
    const int r = e / kPerRow, c = (e % kPerRow) * kVec<T>;
    const bool in = first + r < end;
    cp_async16(dst + r * ld + c, in ? src + (first + r) * row_stride + c : src, in);
  }
}

// The warp's A fragments of 16 rows x kCols of a row-major shared matrix (row 0 at `a`).
template <int kCols, typename T>
__device__ __forceinline__ void load_a(uint32_t (*frag)[4], const T* a, int lda) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int kk = 0; kk < kCols / 16; ++kk)
    ldmatrix_x4<false>(frag[kk],
                       a + (lane % 8 + (lane / 8) % 2 * 8) * lda + kk * 16 + lane / 16 * 8);
}

// acc [16 x kN] += A B^T: A as fragments of 16 x kK, B the kN x kK row-major shared matrix at b
// (its rows are the columns of the product: keys against queries, or the reverse).
template <typename T, int kK, int kN>
__device__ __forceinline__ void mma_abt(float (*acc)[4], const uint32_t (*a)[4], const T* b,
                                        int ldb) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int kk = 0; kk < kK / 16; ++kk)
    for (int nt = 0; nt < kN / 8; nt += 2) {
      uint32_t bf[4];  // B fragments of the column tiles nt and nt + 1
      ldmatrix_x4<false>(
          bf, b + (nt * 8 + lane % 8 + lane / 16 * 8) * ldb + kk * 16 + (lane / 8) % 2 * 8);
      mma_m16n8k16<T>(acc[nt], a[kk], bf, acc[nt]);
      mma_m16n8k16<T>(acc[nt + 1], a[kk], bf + 2, acc[nt + 1]);
    }
}

// acc [16 x kN] += P B: P [16 x kK] given as the f32 accumulators of an earlier product (their
// layout is the A fragment's once tiles 2kk and 2kk + 1 are paired and rounded to T), B the
// kK x kN row-major shared matrix at b, read transposed.
template <typename T, int kK, int kN>
__device__ __forceinline__ void mma_pb(float (*acc)[4], const float (*pm)[4], const T* b, int ldb) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int kk = 0; kk < kK / 16; ++kk) {
    const uint32_t pa[4] = {pack2<T>(pm[2 * kk][0], pm[2 * kk][1]),
                            pack2<T>(pm[2 * kk][2], pm[2 * kk][3]),
                            pack2<T>(pm[2 * kk + 1][0], pm[2 * kk + 1][1]),
                            pack2<T>(pm[2 * kk + 1][2], pm[2 * kk + 1][3])};
    for (int nt = 0; nt < kN / 8; nt += 2) {
      uint32_t bf[4];
      ldmatrix_x4<true>(
          bf, b + (kk * 16 + lane % 8 + (lane / 8) % 2 * 8) * ldb + nt * 8 + lane / 16 * 8);
      mma_m16n8k16<T>(acc[nt], pa, bf, acc[nt]);
      mma_m16n8k16<T>(acc[nt + 1], pa, bf + 2, acc[nt + 1]);
    }
  }
}

// Accumulator element e of column tile nt is at row g + 8 (e / 2), column 8 nt + 2 (lane % 4) + e
// % 2.
__device__ __forceinline__ int acc_col(int nt, int e) {
  return nt * 8 + 2 * (static_cast<int>(threadIdx.x) % 4) + e % 2;
}

// The SIMT forward's semantics with mma.sync (FlashAttention-2's warp layout): warp w of the block
// owns query rows 16w .. 16w + 15 of the block's 64, keeps its Q fragments in registers, and for
// each 64-key tile computes S = Q K^T [16x64] into accumulators, folds them into its rows' online
// softmax (the four lanes of a row combine by shuffles), and adds P V with P taken straight from
// the S accumulators. K and V tiles (cp.async) are shared by the warps; rows of shared memory are
// padded by 8 elements so the eight rows an ldmatrix reads start in different banks. P is rounded
// to T for the product (l sums it in f32), as FlashAttention does.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kMmaThreads)
    forward_mma_kernel(const T* q, const T* k, const T* v, Dims p, T* out, float* lse) {
  constexpr int kLd = kHeadDim + 8;
  constexpr int kSTiles = kMmaKeys / 8;  // 8-key column tiles of S
  constexpr int kOTiles = kHeadDim / 8;  // 8-dim column tiles of O
  STRATA_DYNAMIC_SHARED(T, smem);
  T* k_s = smem;  // also stages the Q tile before the loop
  T* v_s = smem + kMmaKeys * kLd;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, tq = lane % 4;

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t i0 = int64_t{blockIdx.x} * kMmaRows, i_end = lo_d(p.seq_q, i0 + kMmaRows);
  const int64_t q_stride = p.n_heads * kHeadDim, kv_stride = p.n_kv_heads * kHeadDim;
  const int64_t q_base = (b * p.seq_q * p.n_heads + h) * kHeadDim;
  const int64_t kv_base = (b * p.seq_k * p.n_kv_heads + h / p.group) * kHeadDim;

  load_rows16<T, kHeadDim>(k_s, kLd, q + q_base, q_stride, i0, i_end, kMmaRows);
  __syncthreads();
  uint32_t qa[kHeadDim / 16][4];
  load_a<kHeadDim>(qa, k_s + warp * 16 * kLd, kLd);

  // This lane's two rows (g and g + 8 of the warp's 16) and the keys each sees.
  const int64_t row[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
  int64_t seen[2];
  for (int r = 0; r < 2; ++r) seen[r] = row[r] < i_end ? visible_keys(p, row[r]) : 0;
  float o[kOTiles][4] = {};
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};  // l: this lane's share of the row sum

  const int64_t keys_end = visible_keys(p, i_end - 1);
  for (int64_t j0 = 0; j0 < keys_end; j0 += kMmaKeys) {
    // K and V as two cp.async groups, so V lands while S and the softmax are computed.
    __syncthreads();  // every warp is done with the previous tile (or the staged Q)
    load_rows16_async<T, kHeadDim>(k_s, kLd, k + kv_base, kv_stride, j0, keys_end, kMmaKeys);
    cp_async_commit();
    load_rows16_async<T, kHeadDim>(v_s, kLd, v + kv_base, kv_stride, j0, keys_end, kMmaKeys);
    cp_async_commit();
    cp_async_wait<1>();  // this thread's K copies
    __syncthreads();     // everyone's

    float s[kSTiles][4] = {};
    mma_abt<T, kHeadDim, kMmaKeys>(s, qa, k_s, kLd);

    // Scale and mask; the row maximum over the four lanes that hold a row.
    float top[2] = {kNegInf, kNegInf};
    for (int nt = 0; nt < kSTiles; ++nt)
      for (int e = 0; e < 4; ++e) {
        const float x = j0 + acc_col(nt, e) < seen[e / 2] ? p.scale * s[nt][e] : kNegInf;
        s[nt][e] = x;
        top[e / 2] = fmaxf(top[e / 2], x);
      }
    float rescale[2], sum[2] = {0.0f, 0.0f};
    for (int r = 0; r < 2; ++r) {
      top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 1));
      top[r] = fmaxf(top[r], __shfl_xor_sync(0xffffffffu, top[r], 2));
      const float m_new = fmaxf(m[r], top[r]);
      rescale[r] =
          m_new == kNegInf ? 1.0f : expf(m[r] - m_new);  // 0 on the row's first visible tile
      m[r] = m_new;
    }
    for (int nt = 0; nt < kSTiles; ++nt)
      for (int e = 0; e < 4; ++e) {
        const float x = s[nt][e] == kNegInf ? 0.0f : expf(s[nt][e] - m[e / 2]);
        s[nt][e] = x;
        sum[e / 2] += x;
      }
    for (int r = 0; r < 2; ++r) l[r] = l[r] * rescale[r] + sum[r];
    for (int ot = 0; ot < kOTiles; ++ot)
      for (int e = 0; e < 4; ++e) o[ot][e] *= rescale[e / 2];
    cp_async_wait<0>();  // this thread's V copies
    __syncthreads();     // everyone's
    mma_pb<T, kMmaKeys, kHeadDim>(o, s, v_s, kLd);
  }

  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= i_end) continue;
    const float inv_l = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    T* out_row = out + q_base + row[r] * q_stride;
    for (int ot = 0; ot < kOTiles; ++ot) {
      out_row[ot * 8 + 2 * tq] = from_float<T>(o[ot][2 * r] * inv_l);
      out_row[ot * 8 + 2 * tq + 1] = from_float<T>(o[ot][2 * r + 1] * inv_l);
    }
    if (tq == 0)
      lse[(b * p.n_heads + h) * p.seq_q + row[r]] = l[r] > 0.0f ? m[r] + logf(l[r]) : kNegInf;
  }
}

// Rows g and g + 8 of a warp's 16-row accumulator tile into `dst` (row r of the tile at
// dst + r * row_stride), for the rows before `rows`.
template <typename T, int kCols>
__device__ __forceinline__ void store_acc(T* dst, int64_t row_stride, int rows,
                                          const float (*acc)[4]) {
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4;
  for (int r = 0; r < 2; ++r) {
    if (g + 8 * r >= rows) continue;
    T* out_row = dst + (g + 8 * r) * row_stride;
    for (int nt = 0; nt < kCols / 8; ++nt) {
      out_row[acc_col(nt, 0)] = from_float<T>(acc[nt][2 * r]);
      out_row[acc_col(nt, 1)] = from_float<T>(acc[nt][2 * r + 1]);
    }
  }
}

// dk, dv with mma.sync: the block owns 64 keys of one kv head, warp w keys 16w .. 16w + 15. For
// every head of the group and every 16-row query tile from the first row that sees the block's
// keys: S^T = K Q^T and dP^T = V dO^T [16 keys x 16 rows], P^T = exp(scale S^T - lse), dS^T =
// scale P^T (dP^T - D), then dV += P^T dO and dK += dS^T Q. Each element has one owner and a
// fixed order of additions (no atomics). P and dS are rounded to T for their products.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kMmaThreads)
    backward_kv_mma_kernel(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                           const float* delta, Dims p, T* dk, T* dv) {
  constexpr int kLd = kHeadDim + 8;
  constexpr int kOTiles = kHeadDim / 8;
  constexpr int kSTiles = kMmaGradRows / 8;
  STRATA_DYNAMIC_SHARED(T, smem);
  T* k_s = smem;
  T* v_s = k_s + kMmaRows * kLd;
  T* q_s = v_s + kMmaRows * kLd;
  T* do_s = q_s + kMmaGradRows * kLd;
  float* lse_s = reinterpret_cast<float*>(do_s + kMmaGradRows * kLd);
  float* delta_s = lse_s + kMmaGradRows;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32,
            g = lane / 4;

  const int64_t b = blockIdx.z, kv_h = blockIdx.y;
  const int64_t j0 = int64_t{blockIdx.x} * kMmaRows, j_end = lo_d(p.seq_k, j0 + kMmaRows);
  const int64_t q_stride = p.n_heads * kHeadDim, kv_stride = p.n_kv_heads * kHeadDim;
  const int64_t kv_base = (b * p.seq_k * p.n_kv_heads + kv_h) * kHeadDim;
  load_rows16<T, kHeadDim>(k_s, kLd, k + kv_base, kv_stride, j0, j_end, kMmaRows);
  load_rows16<T, kHeadDim>(v_s, kLd, v + kv_base, kv_stride, j0, j_end, kMmaRows);
  __syncthreads();
  uint32_t ka[kHeadDim / 16][4], va[kHeadDim / 16][4];
  load_a<kHeadDim>(ka, k_s + warp * 16 * kLd, kLd);
  load_a<kHeadDim>(va, v_s + warp * 16 * kLd, kLd);
  const int64_t key[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};
  float dk_acc[kOTiles][4] = {}, dv_acc[kOTiles][4] = {};

  const int64_t first = first_query_seeing(p, j0);  // no earlier row sees a key of the block
  for (int64_t gi = 0; gi < p.group; ++gi) {
    const int64_t h = kv_h * p.group + gi;
    const int64_t q_base = (b * p.seq_q * p.n_heads + h) * kHeadDim;
    const int64_t stats = (b * p.n_heads + h) * p.seq_q;
    for (int64_t i0 = first; i0 < p.seq_q; i0 += kMmaGradRows) {
      const int64_t i_end = lo_d(p.seq_q, i0 + kMmaGradRows);
      __syncthreads();  // every warp is done with the previous rows' q_s and do_s
      load_rows16<T, kHeadDim>(q_s, kLd, q + q_base, q_stride, i0, i_end, kMmaGradRows);
      load_rows16<T, kHeadDim>(do_s, kLd, dout + q_base, q_stride, i0, i_end, kMmaGradRows);
      load_row_stats(lse + stats, delta + stats, i0, i_end, kMmaGradRows, lse_s, delta_s);
      __syncthreads();

      float s[kSTiles][4] = {}, dp[kSTiles][4] = {};
      mma_abt<T, kHeadDim, kMmaGradRows>(s, ka, q_s, kLd);
      mma_abt<T, kHeadDim, kMmaGradRows>(dp, va, do_s, kLd);
      for (int nt = 0; nt < kSTiles; ++nt)
        for (int e = 0; e < 4; ++e) {
          const int c = acc_col(nt, e);
          const int64_t j = key[e / 2];
          // Rows past the end have lse = -inf (load_row_stats), so they drop out here too.
          const bool live = lse_s[c] != kNegInf && j < j_end && j < visible_keys(p, i0 + c);
          const float pe = live ? expf(p.scale * s[nt][e] - lse_s[c]) : 0.0f;
          s[nt][e] = pe;
          dp[nt][e] = live ? p.scale * (pe * (dp[nt][e] - delta_s[c])) : 0.0f;
        }
      mma_pb<T, kMmaGradRows, kHeadDim>(dv_acc, s, do_s, kLd);
      mma_pb<T, kMmaGradRows, kHeadDim>(dk_acc, dp, q_s, kLd);
    }
  }

  const int rows = static_cast<int>(lo_d(16, j_end - (j0 + warp * 16)));
  store_acc<T, kHeadDim>(dk + kv_base + (j0 + warp * 16) * kv_stride, kv_stride, rows, dk_acc);
  store_acc<T, kHeadDim>(dv + kv_base + (j0 + warp * 16) * kv_stride, kv_stride, rows, dv_acc);
}

// dq with mma.sync: the block owns 64 query rows of one head, warp w rows 16w .. 16w + 15, with
// their Q and dO fragments in registers. For each 64-key tile: S = Q K^T, dP = dO V^T, P =
// exp(scale S - lse), dS = scale P (dP - D), dQ += dS K.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(kMmaThreads)
    backward_q_mma_kernel(const T* dout, const T* q, const T* k, const T* v, const float* lse,
                          const float* delta, Dims p, T* dq) {
  constexpr int kLd = kHeadDim + 8;
  constexpr int kOTiles = kHeadDim / 8;
  constexpr int kSTiles = kMmaKeys / 8;
  STRATA_DYNAMIC_SHARED(T, smem);
  T* k_s = smem;  // with v_s, stages the Q and dO tiles before the loop
  T* v_s = smem + kMmaKeys * kLd;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32,
            g = lane / 4;

  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t i0 = int64_t{blockIdx.x} * kMmaRows, i_end = lo_d(p.seq_q, i0 + kMmaRows);
  const int64_t q_stride = p.n_heads * kHeadDim, kv_stride = p.n_kv_heads * kHeadDim;
  const int64_t q_base = (b * p.seq_q * p.n_heads + h) * kHeadDim;
  const int64_t kv_base = (b * p.seq_k * p.n_kv_heads + h / p.group) * kHeadDim;
  const int64_t stats = (b * p.n_heads + h) * p.seq_q;

  load_rows16<T, kHeadDim>(k_s, kLd, q + q_base, q_stride, i0, i_end, kMmaRows);
  load_rows16<T, kHeadDim>(v_s, kLd, dout + q_base, q_stride, i0, i_end, kMmaRows);
  __syncthreads();
  uint32_t qa[kHeadDim / 16][4], doa[kHeadDim / 16][4];
  load_a<kHeadDim>(qa, k_s + warp * 16 * kLd, kLd);
  load_a<kHeadDim>(doa, v_s + warp * 16 * kLd, kLd);

  const int64_t row[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
  int64_t seen[2];
  float lse_r[2], delta_r[2];
  for (int r = 0; r < 2; ++r) {
    const bool in = row[r] < i_end;
    lse_r[r] = in ? lse[stats + row[r]] : kNegInf;
    delta_r[r] = in ? delta[stats + row[r]] : 0.0f;
    seen[r] = in && lse_r[r] != kNegInf ? visible_keys(p, row[r]) : 0;
  }
  float dq_acc[kOTiles][4] = {};

  const int64_t keys_end = visible_keys(p, i_end - 1);
  for (int64_t j0 = 0; j0 < keys_end; j0 += kMmaKeys) {
    __syncthreads();  // every warp is done with the previous tile (or the staged Q and dO)
    load_rows16<T, kHeadDim>(k_s, kLd, k + kv_base, kv_stride, j0, keys_end, kMmaKeys);
    load_rows16<T, kHeadDim>(v_s, kLd, v + kv_base, kv_stride, j0, keys_end, kMmaKeys);
    __syncthreads();
    float s[kSTiles][4] = {}, dp[kSTiles][4] = {};
    mma_abt<T, kHeadDim, kMmaKeys>(s, qa, k_s, kLd);
    mma_abt<T, kHeadDim, kMmaKeys>(dp, doa, v_s, kLd);
    for (int nt = 0; nt < kSTiles; ++nt)
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const bool live = j0 + acc_col(nt, e) < seen[r];
        const float pe = live ? expf(p.scale * s[nt][e] - lse_r[r]) : 0.0f;
        dp[nt][e] = live ? p.scale * (pe * (dp[nt][e] - delta_r[r])) : 0.0f;
      }
    mma_pb<T, kMmaKeys, kHeadDim>(dq_acc, dp, k_s, kLd);
  }

  const int rows = static_cast<int>(lo_d(16, i_end - (i0 + warp * 16)));
  if (rows > 0)
    store_acc<T, kHeadDim>(dq + q_base + (i0 + warp * 16) * q_stride, q_stride, rows, dq_acc);
}

template <typename T, int kHeadDim>
void launch_forward_mma(const void* q, const void* k, const void* v, const Dims& d, void* out,
                        float* lse, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((d.seq_q + kMmaRows - 1) / kMmaRows),
                  static_cast<unsigned>(d.n_heads), static_cast<unsigned>(d.batch));
  launch("attention_forward_mma", &forward_mma_kernel<T, kHeadDim>, grid, kMmaThreads,
         2 * kMmaKeys * (kHeadDim + 8) * sizeof(T), stream, static_cast<const T*>(q),
         static_cast<const T*>(k), static_cast<const T*>(v), d, static_cast<T*>(out), lse);
}

template <typename T, int kHeadDim>
void launch_backward_mma(const void* dout, const void* q, const void* k, const void* v,
                         const float* lse, const float* delta, const Dims& d, void* dq, void* dk,
                         void* dv, cudaStream_t stream) {
  constexpr size_t kLd = kHeadDim + 8;
  const auto *dout_t = static_cast<const T*>(dout), *q_t = static_cast<const T*>(q);
  const auto *k_t = static_cast<const T*>(k), *v_t = static_cast<const T*>(v);
  if (d.seq_k > 0)
    launch("attention_backward_kv_mma", &backward_kv_mma_kernel<T, kHeadDim>,
           dim3(static_cast<unsigned>((d.seq_k + kMmaRows - 1) / kMmaRows),
                static_cast<unsigned>(d.n_kv_heads), static_cast<unsigned>(d.batch)),
           kMmaThreads,
           (2 * kMmaRows + 2 * kMmaGradRows) * kLd * sizeof(T) + 2 * kMmaGradRows * sizeof(float),
           stream, dout_t, q_t, k_t, v_t, lse, delta, d, static_cast<T*>(dk), static_cast<T*>(dv));
  launch("attention_backward_q_mma", &backward_q_mma_kernel<T, kHeadDim>,
         dim3(static_cast<unsigned>((d.seq_q + kMmaRows - 1) / kMmaRows),
              static_cast<unsigned>(d.n_heads), static_cast<unsigned>(d.batch)),
         kMmaThreads, 2 * kMmaKeys * kLd * sizeof(T), stream, dout_t, q_t, k_t, v_t, lse, delta, d,
         static_cast<T*>(dq));
}

constexpr unsigned kRowThreads = 128;

template <typename T, typename O>
void launch_forward(const T* q, const T* k, const T* v, const Dims& d, int splits, int64_t chunk,
                    O* out, float* lse, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((d.seq_q + d.tile - 1) / d.tile),
                  static_cast<unsigned>(d.n_heads), static_cast<unsigned>(d.batch * splits));
  launch("attention_forward", &forward_kernel<T, O>, grid, kThreads, shared_bytes(d), stream, q, k,
         v, d, splits, chunk, out, lse);
}

bool empty(const AttentionProblem& p) {
  return p.batch == 0 || p.seq_q == 0 || p.n_heads == 0;
}

}  // namespace

void attention_forward_simt(const void* q, const void* k, const void* v, DType dtype,
                            const AttentionProblem& p, void* out, float* lse, cudaStream_t stream) {
  check_head_dim("attention_forward", p);
  if (empty(p)) return;
  with_floating(dtype, "attention_forward", [&](auto tag) {
    using T = decltype(tag);
    launch_forward(static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
                   dims_of(p), 1, p.seq_k, static_cast<T*>(out), lse, stream);
  });
}

bool attention_forward_has_mma(DType dtype, const AttentionProblem& p, const void* q, const void* k,
                               const void* v) {
  return (dtype == DType::bf16 || dtype == DType::f16) && (p.head_dim == 64 || p.head_dim == 128) &&
         all_aligned16(q, k, v);
}

void attention_forward_mma(const void* q, const void* k, const void* v, DType dtype,
                           const AttentionProblem& p, void* out, float* lse, cudaStream_t stream) {
  STRATA_CHECK(attention_forward_has_mma(dtype, p, q, k, v),
               "attention_forward_mma: takes bf16 or f16 with head_dim "
               "64 or 128 and 16-byte aligned q, k, v, not ",
               dtype_name(dtype), " with head_dim ", p.head_dim);
  if (empty(p)) return;
  const Dims d = dims_of(p);
  const bool wide = p.head_dim == 128;
  if (dtype == DType::bf16)
    (wide ? launch_forward_mma<__nv_bfloat16, 128>
          : launch_forward_mma<__nv_bfloat16, 64>)(q, k, v, d, out, lse, stream);
  else
    (wide ? launch_forward_mma<__half, 128> : launch_forward_mma<__half, 64>)(q, k, v, d, out, lse,
                                                                              stream);
}

void attention_forward(const void* q, const void* k, const void* v, DType dtype,
                       const AttentionProblem& p, void* out, float* lse, cudaStream_t stream) {
  if (attention_forward_has_mma(dtype, p, q, k, v))
    attention_forward_mma(q, k, v, dtype, p, out, lse, stream);
  else
    attention_forward_simt(q, k, v, dtype, p, out, lse, stream);
}

int64_t attention_backward_scratch(const AttentionProblem& p) {
  return p.batch * p.n_heads * p.seq_q;
}

namespace {

// The delta kernel, then the tensor-core or the SIMT gradient kernels.
void backward(const void* dout, const void* q, const void* k, const void* v, const void* out,
              const float* lse, DType dtype, const AttentionProblem& p, float* delta, void* dq,
              void* dk, void* dv, bool tensor_cores, cudaStream_t stream) {
  check_head_dim("attention_backward", p);
  if (p.batch == 0 || p.n_heads == 0) return;
  const Dims d = dims_of(p);
  with_floating(dtype, "attention_backward", [&](auto tag) {
    using T = decltype(tag);
    const auto* dout_t = static_cast<const T*>(dout);
    const auto *q_t = static_cast<const T*>(q), *k_t = static_cast<const T*>(k),
               *v_t = static_cast<const T*>(v);
    if (p.seq_q > 0)
      launch("attention_delta", &delta_kernel<T>,
             blocks_for(p.batch * p.seq_q * p.n_heads, kRowThreads), kRowThreads, 0, stream, dout_t,
             static_cast<const T*>(out), d, delta);
    if constexpr (!std::is_same_v<T, float>) {
      if (tensor_cores) {
        (p.head_dim == 128
             ? launch_backward_mma<T, 128>
             : launch_backward_mma<T, 64>)(dout, q, k, v, lse, delta, d, dq, dk, dv, stream);
        return;
      }
    }
    if (p.seq_k > 0)
      launch("attention_backward_kv", &backward_kv_kernel<T>,
             dim3(static_cast<unsigned>((p.seq_k + d.tile - 1) / d.tile),
                  static_cast<unsigned>(p.n_kv_heads), static_cast<unsigned>(p.batch)),
             kThreads, shared_bytes(d), stream, dout_t, q_t, k_t, v_t, lse,
             static_cast<const float*>(delta), d, static_cast<T*>(dk), static_cast<T*>(dv));
    if (p.seq_q > 0)
      launch("attention_backward_q", &backward_q_kernel<T>,
             dim3(static_cast<unsigned>((p.seq_q + d.tile - 1) / d.tile),
                  static_cast<unsigned>(p.n_heads), static_cast<unsigned>(p.batch)),
             kThreads, shared_bytes(d), stream, dout_t, q_t, k_t, v_t, lse,
             static_cast<const float*>(delta), d, static_cast<T*>(dq));
  });
}

}  // namespace

void attention_backward(const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, DType dtype, const AttentionProblem& p,
                        float* delta, void* dq, void* dk, void* dv, cudaStream_t stream) {
  const bool tensor_cores =
      attention_forward_has_mma(dtype, p, q, k, v) && aligned16(dout) && !empty(p);
  backward(dout, q, k, v, out, lse, dtype, p, delta, dq, dk, dv, tensor_cores, stream);
}

void attention_backward_simt(const void* dout, const void* q, const void* k, const void* v,
                             const void* out, const float* lse, DType dtype,
                             const AttentionProblem& p, float* delta, void* dq, void* dk, void* dv,
                             cudaStream_t stream) {
  backward(dout, q, k, v, out, lse, dtype, p, delta, dq, dk, dv, false, stream);
}

void attention_merge(void* out, float* lse, const void* out_b, const float* lse_b, DType dtype,
                     int64_t batch, int64_t seq_q, int64_t n_heads, int64_t head_dim,
                     cudaStream_t stream) {
  const int64_t rows = batch * seq_q * n_heads;
  if (rows == 0) return;
  with_floating(dtype, "attention_merge", [&](auto tag) {
    using T = decltype(tag);
    launch("attention_merge", &merge_kernel<T>, blocks_for(rows, kRowThreads), kRowThreads, 0,
           stream, static_cast<T*>(out), lse, static_cast<const T*>(out_b), lse_b, batch, seq_q,
           n_heads, head_dim);
  });
}

int64_t attention_decode_split(const AttentionProblem& p, int64_t split) {
  const int64_t most = p.seq_k > 0 ? p.seq_k : 1;  // a chunk holds at least one key
  if (split <= 0) {
    // Enough blocks for two waves over an H100/H200's 132 SMs, chunks of at least 64 keys.
    const int64_t tile = tile_rows(p.head_dim);
    const int64_t blocks = p.batch * p.n_heads * ((p.seq_q + tile - 1) / tile);
    split = blocks > 0 ? (264 + blocks - 1) / blocks : 1;
    split = lo(split, (p.seq_k + 63) / 64);
  }
  split = lo(split, most);
  return split < 1 ? 1 : lo(split, 65535 / (p.batch > 0 ? p.batch : 1));
}

int64_t attention_decode_scratch(const AttentionProblem& p, int64_t split) {
  const int64_t s = attention_decode_split(p, split);
  return s * p.batch * p.seq_q * p.n_heads * (p.head_dim + 1);
}

void attention_decode(const void* q, const void* k, const void* v, DType dtype,
                      const AttentionProblem& p, int64_t split, float* scratch, void* out,
                      cudaStream_t stream) {
  check_head_dim("attention_decode", p);
  if (empty(p)) return;
  const int64_t splits = attention_decode_split(p, split);
  const int64_t chunk = (p.seq_k + splits - 1) / splits;
  const Dims d = dims_of(p);
  float* part_out = scratch;
  float* part_lse = scratch + splits * p.batch * p.seq_q * p.n_heads * p.head_dim;
  with_floating(dtype, "attention_decode", [&](auto tag) {
    using T = decltype(tag);
    launch_forward(static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), d,
                   static_cast<int>(splits), chunk, part_out, part_lse, stream);
    const int64_t rows = p.batch * p.seq_q * p.n_heads;
    launch("attention_decode_merge", &decode_merge_kernel<T>, blocks_for(rows, kRowThreads),
           kRowThreads, 0, stream, static_cast<const float*>(part_out),
           static_cast<const float*>(part_lse), d, static_cast<int>(splits), static_cast<T*>(out));
  });
}

}  // namespace strata::cuda
