// Fibers: the simulated threads of a block. Each has its own stack (mmap'd, with a guard page
// below it so an overflow faults instead of corrupting a neighbour) and runs until it switches
// back to the scheduler that resumed it. On x86-64 a switch saves and restores the callee-saved
// registers and the floating-point control words by hand (no system call); elsewhere ucontext.
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace gpusim {

class Fiber {
 public:
  using Entry = void (*)(void* arg);
  explicit Fiber(size_t stack_bytes);
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Makes the next resume() start entry(arg) from the top of the stack, whatever the fiber was
  // doing (an abandoned fiber's frames are dropped, never unwound).
  void reset(Entry entry, void* arg);
  // Runs the fiber until it calls yield_to_scheduler(); from the scheduler's context only.
  void resume();
  // From inside the fiber: back to whoever resumed it.
  void yield_to_scheduler();

  // The stack's lowest usable address and its guard page, for fault messages.
  const char* stack_low() const { return stack_ + page_; }
  const char* guard_page() const { return stack_; }
  size_t stack_bytes() const { return bytes_; }

 private:
  char* stack_ = nullptr;  // guard page, then the stack
  size_t bytes_ = 0;
  size_t page_ = 0;
#if defined(__x86_64__)
  void* sp_ = nullptr;            // the fiber's saved stack pointer
  void* scheduler_sp_ = nullptr;  // the resumer's
#else
  ucontext_t context_{};
  ucontext_t scheduler_{};
#endif
};

}  // namespace gpusim
