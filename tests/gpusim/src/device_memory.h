// Simulated device memory: one reserved arena kept PROT_NONE. Each allocation gets whole pages,
// its data ends where its last page ends (rounded to 256 bytes, so alignment holds) and an
// unmapped page follows, so running past the end faults. While device work runs, a fault on a
// live allocation opens it (read/write) until the work returns to the host; any other fault in
// the arena is reported: a host read or write of device memory, or a kernel touching memory that
// is no allocation (freed, out of bounds). New allocations are filled with 0xff bytes (NaN as
// floats), so reading memory nothing wrote shows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace gpusim {

struct Allocation {
  uintptr_t region = 0;  // first page
  size_t region_bytes = 0;  // data pages (the guard page after them is not counted)
  uintptr_t data = 0;    // what cudaMalloc returned
  size_t bytes = 0;      // what was asked for
};

class DeviceMemory {
 public:
  explicit DeviceMemory(size_t capacity);
  size_t capacity() const { return capacity_; }
  size_t in_use() const { return in_use_; }

  void* allocate(size_t bytes);  // nullptr when the arena has no room
  // false when ptr is not the start of a live allocation.
  bool free(void* ptr);
  bool in_arena(const void* ptr) const;
  // The live allocation holding [ptr, ptr + bytes), or nullptr.
  const Allocation* find(const void* ptr, size_t bytes = 1) const;
  // The live allocation nearest below ptr, for messages about addresses that hit none.
  const Allocation* nearest_below(const void* ptr) const;

  // Device work begins and ends: while open, faults on live allocations open them.
  void begin_device_work();
  void end_device_work();
  bool device_work() const { return device_work_ > 0; }
  // Makes [ptr, ptr + bytes) of a live allocation accessible now (the fault handler's job, and
  // the executor's before system calls such as an MPI transfer that would not fault).
  bool open(const void* ptr);

  std::string describe(const void* ptr) const;

 private:
  char* base_ = nullptr;
  size_t capacity_ = 0;
  size_t page_ = 4096;
  size_t in_use_ = 0;
  std::map<uintptr_t, Allocation> live_;  // by region (first page)
  std::map<size_t, size_t> free_;         // offset -> bytes of free pages, coalesced
  std::vector<uintptr_t> opened_;         // data addresses opened during this device work
  int device_work_ = 0;
};

// Installs the SIGSEGV/SIGBUS handler that explains faults in the arena (and passes any other
// fault on to the handler that was there before).
void install_fault_handler(DeviceMemory* memory);

// The kernel running now (nullptr outside kernels), for fault messages.
extern const char* running_kernel;
// Set by the scheduler: writes a message into buf and returns true when addr is the guard page of
// a simulated thread's stack (a stack overflow).
extern bool (*describe_stack_fault)(const void* addr, char* buf, size_t size);

}  // namespace gpusim
