// The MPI session of a process (init and finalize, RAII) and the way out when one rank fails:
// abort_all_ranks prints the message with rank and host, then takes every rank down (STYLE habit
// 15), so a job never hangs waiting on a dead peer.
#pragma once

#include <functional>
#include <string>

namespace strata {

class MpiSession {
 public:
  // MPI_Init_thread asking for MPI_THREAD_MULTIPLE (so a handle may be waited on from another
  // thread); accepts whatever the library grants down to MPI_THREAD_FUNNELED, which is all Strata
  // needs when every MPI call comes from the main thread, and refuses less (MPI_THREAD_SINGLE:
  // OpenMP threads would then be outside the library's contract). If MPI is already initialised
  // (by a host program), the session uses it and leaves finalising to its owner.
  MpiSession(int* argc, char*** argv);
  ~MpiSession();  // MPI_Finalize when this session initialised MPI
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  int thread_level() const { return thread_level_; }  // MPI_THREAD_* granted
  std::string thread_level_name() const;              // "MPI_THREAD_MULTIPLE", ...

 private:
  bool owns_ = false;
  int world_rank_ = 0;
  int world_size_ = 1;
  int thread_level_ = 0;
};

// Prints "strata: fatal on rank R of W (host H): message" to stderr, then MPI_Abort on
// MPI_COMM_WORLD when MPI is running (every rank exits), else std::_Exit. Never returns.
[[noreturn]] void abort_all_ranks(const std::string& message, int exit_code = 1) noexcept;

// Runs `body`; an exception escaping it goes to abort_all_ranks. For main() and rank-local work
// whose failure the other ranks could not otherwise learn about.
int run_or_abort(const std::function<int()>& body) noexcept;

}  // namespace strata
