#include "comm/watchdog.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace strata {

namespace {

using Clock = std::chrono::steady_clock;

struct State {
  std::mutex mutex;
  std::condition_variable wake;
  std::thread thread;
  bool running = false;
  double timeout_s = 0;
  fs::path dir;
  int rank = 0, world = 1;
  std::atomic<int64_t> step{0};
  // The operation the main thread is in (nullptr: none) and since when.
  const std::string* what = nullptr;
  Clock::time_point since;
  int depth = 0;
  // Abort hooks by id (their own mutex: a communicator comes and goes while the thread runs).
  std::mutex hooks_mutex;
  std::map<int, std::function<void()>> hooks;
  int next_hook = 0;
};

State& state() {
  static State* s = new State;  // never destroyed: the thread may outlive static destruction
  return *s;
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// "step 7; in all_reduce on group 'dp' (rank 0 of 2 ranks) for 12 s" or "step 7; computing".
std::string describe(State& s) {
  std::ostringstream line;
  line << "step " << s.step.load();
  if (s.what)
    line << "; in " << *s.what << " for " << static_cast<long long>(seconds(Clock::now() - s.since)) << " s";
  else
    line << "; not communicating";
  return line.str();
}

void write_state(State& s, const std::string& line) {
  std::ofstream out(s.dir / ("rank-" + std::to_string(s.rank) + ".txt"), std::ios::trunc);
  out << line << "\n";
}

void run(State& s) {
  std::unique_lock<std::mutex> lock(s.mutex);
  auto last_write = Clock::now() - std::chrono::seconds(10);
  while (s.running) {
    s.wake.wait_for(lock, std::chrono::milliseconds(250));
    if (!s.running) break;
    const auto now = Clock::now();
    if (now - last_write >= std::chrono::seconds(2)) {
      const std::string line = describe(s);
      lock.unlock();  // the file write must not hold up the main thread's scopes
      write_state(s, line);
      lock.lock();
      last_write = now;
      if (!s.running) break;
    }
    if (!s.what || seconds(now - s.since) < s.timeout_s) continue;
    // Timed out: give the other ranks a moment to record where they are, then report them.
    const std::string mine = *s.what;
    write_state(s, describe(s));
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    lock.lock();
    std::string others;
    for (int r = 0; r < s.world; ++r) {
      if (r == s.rank) continue;
      std::ifstream in(s.dir / ("rank-" + std::to_string(r) + ".txt"));
      std::string line;
      if (!std::getline(in, line)) line = "no state recorded";
      const std::string op = mine.substr(0, mine.find(" (rank"));
      if (line.find("in " + op) != std::string::npos) continue;  // waiting in the same operation
      others += (others.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " (" + line + ")";
    }
    std::fprintf(stderr,
                 "strata: error (rank %d of %d): %s has not finished after %.0f s (parallel.timeout_s), at step "
                 "%lld; ranks that had not arrived: %s\n",
                 s.rank, s.world, mine.c_str(), s.timeout_s, static_cast<long long>(s.step.load()),
                 others.empty() ? "none recorded (a rank that died writes nothing)" : others.c_str());
    std::fflush(stderr);
    // The NCCL communicators: their kernels would keep waiting for the peer on the GPU.
    int aborted = 0;
    {
      std::lock_guard<std::mutex> hooks_lock(s.hooks_mutex);
      for (auto& [id, hook] : s.hooks) {
        hook();
        ++aborted;
      }
    }
    if (aborted > 0) {
      std::fprintf(stderr, "strata: rank %d aborted its %d NCCL communicator%s (ncclCommAbort)\n",
                   s.rank, aborted, aborted == 1 ? "" : "s");
      std::fflush(stderr);
    }
    std::_Exit(3);
  }
}

}  // namespace

void Watchdog::start(double timeout_s, const std::string& state_dir, int rank, int world) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.running || timeout_s <= 0) return;
  s.timeout_s = timeout_s;
  s.dir = fs::path(state_dir) / ".ranks";
  s.rank = rank;
  s.world = world;
  std::error_code ec;
  fs::create_directories(s.dir, ec);
  s.running = true;
  s.thread = std::thread([&s] { run(s); });
}

void Watchdog::stop() {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    if (!s.running) return;
    s.running = false;
  }
  s.wake.notify_all();
  s.thread.join();
}

void Watchdog::set_step(int64_t step) { state().step = step; }

int Watchdog::add_abort_hook(std::function<void()> hook) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.hooks_mutex);
  const int id = s.next_hook++;
  s.hooks.emplace(id, std::move(hook));
  return id;
}

void Watchdog::remove_abort_hook(int id) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.hooks_mutex);
  s.hooks.erase(id);
}

WatchdogScope::WatchdogScope(const std::string& what) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.depth++ == 0) {
    s.what = &what;
    s.since = Clock::now();
  }
}

WatchdogScope::~WatchdogScope() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (--s.depth == 0) s.what = nullptr;
}

}  // namespace strata
