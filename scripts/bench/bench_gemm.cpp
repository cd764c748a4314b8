// CPU f32 gemm: Strata's ops::gemm beside cblas_sgemm called directly on the same buffers, for
// each shape of the table; prints Google Benchmark's rows and then a table of GFLOP/s and the
// ratio ours / OpenBLAS. Shapes are m x k x n: c[m, n] = a[m, k] @ b[k, n], row-major, no
// transposes, alpha = 1, beta = 0; one product is 2 m k n floating-point operations.
//
// Both sides run on OpenBLAS's own threads (OPENBLAS_NUM_THREADS, or all cores), the same count
// for both; times are wall-clock (UseRealTime), since the work happens on those threads.
#include <benchmark/benchmark.h>
#include <cblas.h>

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

// Prints the usual rows (without colour codes, so logs and docs stay plain text), and remembers
// each run's GFLOP/s (the median when repeated) for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(OO_Tabular) {}
  std::map<std::string, double> gflops;  // by run name
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs)
      if (run.run_type == Run::RT_Iteration || run.aggregate_name == "median")
        gflops[run.run_name.function_name] = run.counters.at("GFLOP").value;
    ConsoleReporter::ReportRuns(runs);
  }
};

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

  std::printf("\n%-20s %14s %14s %10s\n", "m x k x n", "strata GFLOP/s", "OpenBLAS GFLOP/s",
              "ratio");
  for (const Shape3& s : kShapes) {
    const auto ours = reporter.gflops.find("gemm_f32/strata/" + shape_name(s));
    const auto ref = reporter.gflops.find("gemm_f32/openblas/" + shape_name(s));
    if (ours == reporter.gflops.end() || ref == reporter.gflops.end()) continue;  // filtered out
    std::printf("%-20s %14.1f %16.1f %9.1f%%\n", shape_name(s).c_str(), ours->second, ref->second,
                100.0 * ours->second / ref->second);
  }
  return 0;
}
