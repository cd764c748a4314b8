// CPU f32 gemm: Strata's ops::gemm beside cblas_sgemm called directly on the same buffers, for
// each shape of the table; prints Google Benchmark's rows and then a table of GFLOP/s (median and
// best repetition) and the ratio ours / OpenBLAS. Shapes are m x k x n:
// c[m, n] = a[m, k] @ b[k, n], row-major, no transposes, alpha = 1, beta = 0; one product is
// 2 m k n floating-point operations.
//
// Both sides run on OpenBLAS's threads (OPENBLAS_NUM_THREADS; with OpenBLAS's OpenMP build, which
// CMake prefers, OMP_NUM_THREADS too), the same count for both; times are wall-clock
// (UseRealTime), since the work happens on those threads.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "core/random.h"
#include "kernels/ops.h"

namespace {

struct Shape3 {
  int64_t m, k, n;
};
// GPT-2 small's MLP up-projection for 4096 tokens (4096 x 768 x 3072) and a square reference.
const Shape3 kShapes[] = {{1024, 1024, 1024}, {4096, 768, 3072}};

std::string shape_name(const Shape3& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n);
}

// The operands of one shape, filled once and shared by both sides.
struct Operands {
  strata::Tensor a, b, c;
  explicit Operands(const Shape3& s)
      : a(strata::Tensor::empty({s.m, s.k}, strata::DType::f32)),
        b(strata::Tensor::empty({s.k, s.n}, strata::DType::f32)),
        c(strata::Tensor::zeros({s.m, s.n}, strata::DType::f32)) {
    strata::fill_uniform(a, 1, 1, -1.0, 1.0);
    strata::fill_uniform(b, 1, 2, -1.0, 1.0);
  }
};

void set_flops(benchmark::State& state, const Shape3& s) {
  // A rate counter: shown as "<GFLOP>/s", i.e. GFLOP/s.
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * static_cast<double>(s.m * s.k * s.n),
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void strata_gemm(benchmark::State& state, const Shape3& s) {
  Operands x(s);
  for (auto _ : state) {
    strata::ops::gemm(x.a, x.b, x.c);
    benchmark::DoNotOptimize(x.c.raw());
  }
  set_flops(state, s);
}

void openblas_gemm(benchmark::State& state, const Shape3& s) {
  Operands x(s);
  const int m = static_cast<int>(s.m), k = static_cast<int>(s.k), n = static_cast<int>(s.n);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, x.a.data<float>(), k,
                x.b.data<float>(), n, 0.0f, x.c.data<float>(), n);
    benchmark::DoNotOptimize(x.c.raw());
  }
  set_flops(state, s);
}

// Prints the usual rows (without colour codes, so logs and docs stay plain text), and keeps each
// repetition's GFLOP/s for the summary table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(OO_Tabular) {}
  std::map<std::string, std::vector<double>> gflops;  // by benchmark name, one per repetition
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs)
      if (run.run_type == Run::RT_Iteration)
        gflops[run.run_name.function_name].push_back(run.counters.at("GFLOP").value);
    ConsoleReporter::ReportRuns(runs);
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

double best(const std::vector<double>& v) {
  return *std::max_element(v.begin(), v.end());
}

}  // namespace

int main(int argc, char** argv) {
  for (const Shape3& s : kShapes) {
    benchmark::RegisterBenchmark(("gemm_f32/strata/" + shape_name(s)).c_str(), strata_gemm, s)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("gemm_f32/openblas/" + shape_name(s)).c_str(), openblas_gemm, s)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::AddCustomContext("openblas_threads", std::to_string(openblas_get_num_threads()));
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  // Median and best repetition of each side. On a machine shared with other jobs the best one
  // is the least disturbed; the median shows how much the disturbance moved it.
  std::printf("\n%-16s %5s %15s %17s %8s %13s %15s %8s\n", "m x k x n", "reps", "strata median",
              "OpenBLAS median", "ratio", "strata best", "OpenBLAS best", "ratio");
  for (const Shape3& s : kShapes) {
    const auto ours = reporter.gflops.find("gemm_f32/strata/" + shape_name(s));
    const auto ref = reporter.gflops.find("gemm_f32/openblas/" + shape_name(s));
    if (ours == reporter.gflops.end() || ref == reporter.gflops.end()) continue;  // filtered out
    const double om = median(ours->second), rm = median(ref->second);
    const double ob = best(ours->second), rb = best(ref->second);
    std::printf("%-16s %5zu %15.1f %17.1f %7.1f%% %13.1f %15.1f %7.1f%%\n", shape_name(s).c_str(),
                ours->second.size(), om, rm, 100.0 * om / rm, ob, rb, 100.0 * ob / rb);
  }
  return 0;
}
