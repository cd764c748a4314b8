// The matrix products of one GPT-2 124M training step (micro-batch 4 x 64 tokens = 256 rows,
// d_model 768, vocabulary 50257), each timed alone through cblas_sgemm on OpenBLAS's threads,
// beside the 2048^3 product the step benchmark takes as its reference, and beside two ways of
// splitting a product over the OpenMP threads by hand (each thread one single-threaded
// cblas_sgemm on its part of n, or of m). Shows whether the step's 256-row products run at the
// square product's rate on this machine, and whether threading them ourselves would help.
//
//   OMP_NUM_THREADS=2 build/scripts/bench/bench_step_gemms [repetitions, default 7]
// Prints per product: the median milliseconds and GFLOP/s of each way.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

struct Product {
  const char* name;
  bool trans_a, trans_b;
  int m, n, k;  // c[m, n] (+)= op(a)[m, k] op(b)[k, n], row-major
  float beta;   // weight gradients accumulate (beta 1), as in the model
};

// c[m0:m1, n0:n1] of the product.
void run_part(const Product& p, const float* a, const float* b, float* c, int m0, int m1, int n0,
              int n1) {
  const int lda = p.trans_a ? p.m : p.k, ldb = p.trans_b ? p.k : p.n, ldc = p.n;
  const float* a_part = p.trans_a ? a + m0 : a + static_cast<size_t>(m0) * lda;
  const float* b_part = p.trans_b ? b + static_cast<size_t>(n0) * ldb : b + n0;
  cblas_sgemm(CblasRowMajor, p.trans_a ? CblasTrans : CblasNoTrans,
              p.trans_b ? CblasTrans : CblasNoTrans, m1 - m0, n1 - n0, p.k, 1.0f, a_part, lda,
              b_part, ldb, p.beta, c + static_cast<size_t>(m0) * ldc + n0, ldc);
}

enum class Way { openblas, split_n, split_m };

void run(Way way, const Product& p, const float* a, const float* b, float* c) {
  if (way == Way::openblas) return run_part(p, a, b, c, 0, p.m, 0, p.n);
#pragma omp parallel
  {
    // Inside a parallel region OpenBLAS's OpenMP build runs each call on the calling thread.
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int extent = way == Way::split_n ? p.n : p.m;
    const int share = (extent / threads + 15) / 16 * 16;  // whole 16-column/row panels
    const int lo = std::min(extent, t * share), hi = std::min(extent, (t + 1) * share);
    if (hi > lo) {
      if (way == Way::split_n)
        run_part(p, a, b, c, 0, p.m, lo, hi);
      else
        run_part(p, a, b, c, lo, hi, 0, p.n);
    }
  }
}

double median_ms(Way way, const Product& p, const float* a, const float* b, float* c, int reps) {
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {  // the first run warms up and is not counted
    const auto start = std::chrono::steady_clock::now();
    run(way, p, a, b, c);
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (r > 0) ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 7;
  const int t = 256, d = 768, v = 50257;
  // Forward x @ W^T, input gradient dy @ W, weight gradient dy^T @ x, for each linear and the head.
  const std::vector<Product> products = {
      {"fwd qkv", false, true, t, 3 * d, d, 0},     {"fwd attn-out", false, true, t, d, d, 0},
      {"fwd mlp-up", false, true, t, 4 * d, d, 0},  {"fwd mlp-down", false, true, t, d, 4 * d, 0},
      {"fwd head", false, true, t, v, d, 0},        {"dx qkv", false, false, t, d, 3 * d, 0},
      {"dx attn-out", false, false, t, d, d, 0},    {"dx mlp-up", false, false, t, d, 4 * d, 0},
      {"dx mlp-down", false, false, t, 4 * d, d, 0}, {"dx head", false, false, t, d, v, 0},
      {"dw qkv", true, false, 3 * d, d, t, 1},      {"dw attn-out", true, false, d, d, t, 1},
      {"dw mlp-up", true, false, 4 * d, d, t, 1},   {"dw mlp-down", true, false, d, 4 * d, t, 1},
      {"dw head", true, false, v, d, t, 1},         {"square 2048", false, false, 2048, 2048, 2048, 0},
  };
  std::printf("threads: OpenMP %d; median of %d repetitions\n", omp_get_max_threads(), reps);
  std::printf("%-13s %6s %6s %6s | %18s | %18s | %18s\n", "product", "m", "n", "k",
              "openblas ms GF/s", "split-n ms GF/s", "split-m ms GF/s");
  for (const Product& p : products) {
    std::vector<float> a(static_cast<size_t>(p.m) * p.k, 0.01f), b(static_cast<size_t>(p.k) * p.n, 0.02f),
        c(static_cast<size_t>(p.m) * p.n, 0.0f);
    const double gflop = 2.0 * p.m * p.n * p.k / 1e9;
    std::printf("%-13s %6d %6d %6d", p.name, p.m, p.n, p.k);
    for (Way way : {Way::openblas, Way::split_n, Way::split_m}) {
      const double ms = median_ms(way, p, a.data(), b.data(), c.data(), reps);
      std::printf(" | %8.3f %8.1f", ms, gflop / ms * 1e3);
    }
    std::printf("\n");
  }
}
