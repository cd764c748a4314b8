// all_reduce: Strata's MpiCommunicator beside bare MPI_Allreduce on the same buffer.
//
//   mpirun -np 2 bench_allreduce [--mib 64] [--iters 20] [--warmup 3]
//
// A plain main timed with MPI_Wtime rather than Google Benchmark: Google Benchmark picks its
// iteration counts per process, and ranks that disagree on how many collectives to run deadlock.
// Here every rank runs the same fixed schedule. The variants run interleaved (their order rotating
// each iteration) so load from elsewhere on the machine falls on all of them alike. One sample is
// the slowest rank's time for one call (barrier before, MPI_MAX of the times after); the table
// gives the median and the minimum, algorithm bandwidth (bytes / time, at the median) and bus
// bandwidth (algbw * 2(p-1)/p, as nccl-tests report it), and the ratios to the bare call of the
// medians (ratio) and of the minima (min_ratio: steadier on a machine shared with other work).
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/mpi_session.h"

using namespace strata;

namespace {

struct Options {
  double mib = 64;
  int iters = 20;
  int warmup = 3;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--mib")
      o.mib = std::atof(argv[i + 1]);
    else if (flag == "--iters")
      o.iters = std::atoi(argv[i + 1]);
    else if (flag == "--warmup")
      o.warmup = std::atoi(argv[i + 1]);
    else
      STRATA_FAIL("unknown option ", flag, " (valid: --mib, --iters, --warmup)");
  }
  STRATA_CHECK(o.mib > 0 && o.iters > 0 && o.warmup >= 0, "bad options");
  return o;
}

struct Variant {
  std::string name;
  std::function<void()> run;
  std::vector<double> seconds;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The slowest rank's time for one call.
double time_one(const std::function<void()>& run) {
  STRATA_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  const double start = MPI_Wtime();
  run();
  double elapsed = MPI_Wtime() - start;
  STRATA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &elapsed, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return elapsed;
}

// Every element after an all_reduce of (rank + 1) is p(p+1)/2: a check that both variants reduce.
void check_sum(Communicator& world, Tensor& x, const std::function<void()>& run, const char* name) {
  float* data = x.data<float>();
  std::fill(data, data + x.numel(), static_cast<float>(world.rank() + 1));
  run();
  const float want = static_cast<float>(world.size() * (world.size() + 1) / 2);
  for (int64_t i = 0; i < x.numel(); i += 4099)
    STRATA_CHECK(data[i] == want, name, ": element ", i, " is ", data[i], ", want ", want);
}

}  // namespace

int main(int argc, char** argv) {
  MpiSession session(&argc, &argv);
  return run_or_abort([&] {
    const Options options = parse(argc, argv);
    MpiCommunicator world("world", MPI_COMM_WORLD);
    const int p = world.size();
    const int64_t n = static_cast<int64_t>(options.mib * 1024 * 1024 / sizeof(float));
    Tensor x = Tensor::empty({n}, DType::f32);
    float* data = x.data<float>();

    std::vector<Variant> variants = {
        {"MPI_Allreduce (bare)",
         [&] {
           STRATA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_FLOAT,
                                          MPI_SUM, MPI_COMM_WORLD));
         },
         {}},
        {"MpiCommunicator::all_reduce", [&] { world.all_reduce(x); }, {}},
        {"  ... size check off",
         [&] {
           world.set_check_sizes(false);
           world.all_reduce(x);
           world.set_check_sizes(true);
         },
         {}},
        {"MpiCommunicator::all_reduce_async+wait", [&] { world.all_reduce_async(x).wait(); }, {}},
    };
    for (Variant& v : variants) check_sum(world, x, v.run, v.name.c_str());

    // Small values: 2^(variants * iterations) growth stays far from f32's range.
    std::fill(data, data + n, 1e-6f);
    const size_t k = variants.size();
    for (int it = -options.warmup; it < options.iters; ++it) {
      for (size_t j = 0; j < k; ++j) {
        Variant& v = variants[(j + static_cast<size_t>(it + options.warmup)) % k];
        const double seconds = time_one(v.run);
        if (it >= 0) v.seconds.push_back(seconds);
      }
      std::fill(data, data + n, 1e-6f);  // outside the timed region
    }

    if (world.rank() == 0) {
      char host[256] = "?";
      gethostname(host, sizeof(host) - 1);
      char library[MPI_MAX_LIBRARY_VERSION_STRING] = "";
      int length = 0;
      MPI_Get_library_version(library, &length);
      const char* newline = std::strchr(library, '\n');
      const std::string mpi_version(
          library, newline ? static_cast<size_t>(newline - library) : std::strlen(library));
      const double bytes = static_cast<double>(n) * sizeof(float);
      std::printf(
          "# all_reduce f32 sum, %.0f MiB (%lld elements), %d ranks, %d iterations "
          "(+%d warm-up), host %s, %ld cores\n# %s, %s\n",
          options.mib, static_cast<long long>(n), p, options.iters, options.warmup, host,
          sysconf(_SC_NPROCESSORS_ONLN), mpi_version.c_str(), session.thread_level_name().c_str());
      std::printf("%-40s %10s %10s %12s %12s %8s %10s\n", "variant", "median_ms", "min_ms",
                  "algbw_GB/s", "busbw_GB/s", "ratio", "min_ratio");
      const double bare = median(variants[0].seconds);
      const double bare_best =
          *std::min_element(variants[0].seconds.begin(), variants[0].seconds.end());
      for (const Variant& v : variants) {
        const double med = median(v.seconds);
        const double best = *std::min_element(v.seconds.begin(), v.seconds.end());
        const double algbw = bytes / med / 1e9;
        const double busbw = p > 1 ? algbw * 2.0 * (p - 1) / p : 0.0;
        std::printf("%-40s %10.2f %10.2f %12.2f %12.2f %8.3f %10.3f\n", v.name.c_str(), med * 1e3,
                    best * 1e3, algbw, busbw, med / bare, best / bare_best);
      }
    }
    return 0;
  });
}
