#include "comm/mpi_session.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "core/error.h"

namespace strata {

namespace {
bool mpi_running() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  STRATA_MPI_CHECK(MPI_Initialized(&initialized));
  if (initialized) {
    STRATA_MPI_CHECK(MPI_Query_thread(&thread_level_));
  } else {
    STRATA_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level_));
    owns_ = true;
  }
  STRATA_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  STRATA_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  if (thread_level_ < MPI_THREAD_FUNNELED) {
    abort_all_ranks(detail::concat("the MPI library grants only ", thread_level_name(),
                                   "; Strata needs at least MPI_THREAD_FUNNELED"));
  }
}

MpiSession::~MpiSession() {
  if (owns_ && mpi_running()) MPI_Finalize();
}

std::string MpiSession::thread_level_name() const {
  switch (thread_level_) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
    default:
      return detail::concat("thread level ", thread_level_);
  }
}

void abort_all_ranks(const std::string& message, int exit_code) noexcept {
  int rank = -1, world = -1;
  const bool running = mpi_running();
  if (running) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
  }
  char host[256] = "unknown host";
  gethostname(host, sizeof(host) - 1);
  if (running) {
    std::fprintf(stderr, "strata: fatal on rank %d of %d (host %s): %s\n", rank, world, host,
                 message.c_str());
  } else {
    std::fprintf(stderr, "strata: fatal (host %s, before or after MPI): %s\n", host,
                 message.c_str());
  }
  std::fflush(stderr);
  if (running) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

int run_or_abort(const std::function<int()>& body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    abort_all_ranks(e.what());
  } catch (...) {
    abort_all_ranks("an exception that is not a std::exception");
  }
}

}  // namespace strata
