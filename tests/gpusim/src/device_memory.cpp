#include "device_memory.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "gpusim/kernel.h"

namespace gpusim {

const char* running_kernel = nullptr;
bool (*describe_stack_fault)(const void* addr, char* buf, size_t size) = nullptr;

namespace {

constexpr size_t kAlign = 256;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "gpusim: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

DeviceMemory::DeviceMemory(size_t capacity) {
  page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  capacity_ = round_up(capacity, page_);
  void* mem = mmap(nullptr, capacity_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) die("mmap of the simulated device memory failed");
  base_ = static_cast<char*>(mem);
  free_[0] = capacity_;
  opened_.reserve(1 << 16);
}

void* DeviceMemory::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t data_bytes = round_up(bytes, kAlign);
  const size_t region_bytes = round_up(data_bytes, page_);
  const size_t need = region_bytes + page_;  // and the guard page after
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    const size_t offset = it->first, length = it->second;
    free_.erase(it);
    if (length > need) free_[offset + need] = length - need;
    Allocation a;
    a.region = reinterpret_cast<uintptr_t>(base_ + offset);
    a.region_bytes = region_bytes;
    a.data = a.region + region_bytes - data_bytes;
    a.bytes = bytes;
    live_[a.region] = a;
    in_use_ += bytes;
    // Poison: memory nothing wrote reads as 0xff bytes (NaN in every float format).
    char* region = reinterpret_cast<char*>(a.region);
    if (mprotect(region, region_bytes, PROT_READ | PROT_WRITE) != 0) die("mprotect failed");
    std::memset(region, 0xff, region_bytes);
    if (!device_work() && mprotect(region, region_bytes, PROT_NONE) != 0) die("mprotect failed");
    if (device_work()) opened_.push_back(a.region);
    return reinterpret_cast<void*>(a.data);
  }
  return nullptr;
}

bool DeviceMemory::free(void* ptr) {
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  auto it = live_.upper_bound(p);
  if (it == live_.begin()) return false;
  --it;
  if (it->second.data != p) return false;
  const Allocation a = it->second;
  live_.erase(it);
  in_use_ -= a.bytes;
  char* region = reinterpret_cast<char*>(a.region);
  mprotect(region, a.region_bytes, PROT_NONE);
  madvise(region, a.region_bytes, MADV_DONTNEED);  // give the pages back; a new allocation re-poisons
  // Back into the free list with its guard page, merged with free neighbours.
  size_t offset = static_cast<size_t>(region - base_), length = a.region_bytes + page_;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && next->first == offset + length) {
    length += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      length += prev->second;
      free_.erase(prev);
    }
  }
  free_[offset] = length;
  return true;
}

bool DeviceMemory::in_arena(const void* ptr) const {
  const auto* p = static_cast<const char*>(ptr);
  return p >= base_ && p < base_ + capacity_;
}

const Allocation* DeviceMemory::find(const void* ptr, size_t bytes) const {
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  auto it = live_.upper_bound(p);
  if (it == live_.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  if (p < a.data || p + bytes > a.data + a.bytes) return nullptr;
  return &a;
}

const Allocation* DeviceMemory::nearest_below(const void* ptr) const {
  auto it = live_.upper_bound(reinterpret_cast<uintptr_t>(ptr));
  if (it == live_.begin()) return nullptr;
  return &std::prev(it)->second;
}

void DeviceMemory::begin_device_work() { ++device_work_; }

void DeviceMemory::end_device_work() {
  if (--device_work_ > 0) return;
  for (uintptr_t region : opened_) {
    auto it = live_.find(region);
    if (it != live_.end()) mprotect(reinterpret_cast<void*>(region), it->second.region_bytes, PROT_NONE);
  }
  opened_.clear();
}

bool DeviceMemory::open(const void* ptr) {
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  auto it = live_.upper_bound(p);
  if (it == live_.begin()) return false;
  --it;
  const Allocation& a = it->second;
  // From the page holding the first data byte to the end of the data pages: the slack before the
  // data (in earlier pages) stays closed, so running below the start of a buffer faults too.
  const uintptr_t first_page = a.data & ~(uintptr_t{page_} - 1);
  if (p < first_page || p >= a.region + a.region_bytes) return false;
  if (mprotect(reinterpret_cast<void*>(a.region), a.region_bytes, PROT_READ | PROT_WRITE) != 0) return false;
  if (opened_.size() < opened_.capacity()) opened_.push_back(a.region);
  return true;
}

std::string DeviceMemory::describe(const void* ptr) const {
  char buf[256];
  const auto p = reinterpret_cast<uintptr_t>(ptr);
  if (const Allocation* a = nearest_below(ptr)) {
    if (p >= a->data && p < a->data + a->bytes)
      std::snprintf(buf, sizeof buf, "byte %zu of a %zu-byte allocation at %p", size_t(p - a->data), a->bytes,
                    reinterpret_cast<void*>(a->data));
    else if (p >= a->data)
      std::snprintf(buf, sizeof buf, "%zu bytes past the end of a %zu-byte allocation at %p",
                    size_t(p - a->data - a->bytes), a->bytes, reinterpret_cast<void*>(a->data));
    else
      std::snprintf(buf, sizeof buf, "%zu bytes before a %zu-byte allocation at %p", size_t(a->data - p), a->bytes,
                    reinterpret_cast<void*>(a->data));
  } else {
    std::snprintf(buf, sizeof buf, "no allocation below it");
  }
  return buf;
}

// ---- the fault handler ----

namespace {

DeviceMemory* fault_memory = nullptr;
struct sigaction previous_segv {}, previous_bus {};

void write_stderr(const char* text) {
  size_t n = std::strlen(text);
  while (n > 0) {
    ssize_t w = ::write(2, text, n);
    if (w <= 0) break;
    text += w;
    n -= static_cast<size_t>(w);
  }
}

[[noreturn]] void report_and_abort(const char* message) {
  write_stderr(message);
  signal(SIGABRT, SIG_DFL);
  abort();
}

void chain(int sig, siginfo_t* info, void* context) {
  const struct sigaction& prev = sig == SIGBUS ? previous_bus : previous_segv;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) prev.sa_sigaction(sig, info, context);
    return;
  }
  if (prev.sa_handler == SIG_IGN) return;
  if (prev.sa_handler == SIG_DFL || prev.sa_handler == nullptr) {
    signal(sig, SIG_DFL);  // the faulting instruction runs again and the default action ends us
    return;
  }
  prev.sa_handler(sig);
}

void on_fault(int sig, siginfo_t* info, void* context) {
  const void* addr = info->si_addr;
  char message[1024];
  if (fault_memory && fault_memory->in_arena(addr)) {
    if (fault_memory->device_work() && fault_memory->open(addr)) return;  // retried, now accessible
    const std::string where = fault_memory->describe(addr);
    if (ThreadState* t = current) {
      std::snprintf(message, sizeof message,
                    "gpusim: kernel '%s', block (%u, %u, %u) thread (%u, %u, %u), accessed device address %p (%s), "
                    "which is no live allocation: out of bounds or freed\n",
                    running_kernel ? running_kernel : "?", t->block_idx.x, t->block_idx.y, t->block_idx.z,
                    t->thread_idx.x, t->thread_idx.y, t->thread_idx.z, addr, where.c_str());
    } else if (fault_memory->device_work()) {
      std::snprintf(message, sizeof message,
                    "gpusim: a device copy accessed device address %p (%s), which is no live allocation\n", addr,
                    where.c_str());
    } else {
      std::snprintf(message, sizeof message,
                    "gpusim: host code touched simulated device memory at %p (%s); only kernels and "
                    "cudaMemcpy/cudaMemset may read or write device memory: copy it to the host first\n",
                    addr, where.c_str());
    }
    report_and_abort(message);
  }
  if (describe_stack_fault && describe_stack_fault(addr, message, sizeof message)) report_and_abort(message);
  chain(sig, info, context);
}

}  // namespace

void install_fault_handler(DeviceMemory* memory) {
  fault_memory = memory;
  // An alternate stack, so that a simulated thread overflowing its stack can still be reported.
  static char* alt = nullptr;
  if (!alt) {
    const size_t size = 1 << 16;
    alt = static_cast<char*>(std::malloc(size));
    stack_t ss{};
    ss.ss_sp = alt;
    ss.ss_size = size;
    sigaltstack(&ss, nullptr);
  }
  struct sigaction action {};
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, &previous_segv);
  sigaction(SIGBUS, &action, &previous_bus);
}

}  // namespace gpusim
