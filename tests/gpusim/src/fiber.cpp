#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace gpusim {
namespace {

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "gpusim: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

}  // namespace

#if defined(__x86_64__)

// switch_context(save, load): pushes the callee-saved registers and the x87/SSE control words on
// the current stack, stores the stack pointer in *save, loads `load` and pops the same frame from
// it. A new fiber's stack is laid out as if it had been switched away from just before entering
// fiber_trampoline, which calls r13(r12).
extern "C" void gpusim_switch_context(void** save, void* load);
extern "C" void gpusim_fiber_trampoline();
asm(R"(
  .text
  .globl gpusim_switch_context
  .type gpusim_switch_context, @function
gpusim_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  fnstcw (%rsp)
  stmxcsr 8(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  fldcw (%rsp)
  ldmxcsr 8(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gpusim_switch_context, .-gpusim_switch_context

  .globl gpusim_fiber_trampoline
  .type gpusim_fiber_trampoline, @function
gpusim_fiber_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size gpusim_fiber_trampoline, .-gpusim_fiber_trampoline
)");

#endif

Fiber::Fiber(size_t stack_bytes) {
  page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  bytes_ = (stack_bytes + page_ - 1) / page_ * page_;
  void* mem = mmap(nullptr, bytes_ + page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (mem == MAP_FAILED) die("mmap of a fiber stack failed");
  stack_ = static_cast<char*>(mem);
  if (mprotect(stack_, page_, PROT_NONE) != 0) die("mprotect of a fiber guard page failed");
}

Fiber::~Fiber() { munmap(stack_, bytes_ + page_); }

#if defined(__x86_64__)

void Fiber::reset(Entry entry, void* arg) {
  // Return-address slot at top - 24 (8 mod 16), so the trampoline's call sees a 16-aligned stack.
  auto top = reinterpret_cast<uintptr_t>(stack_ + page_ + bytes_) & ~uintptr_t{15};
  auto* ret_slot = reinterpret_cast<uint64_t*>(top - 24);
  ret_slot[0] = reinterpret_cast<uint64_t>(&gpusim_fiber_trampoline);
  uint64_t* frame = ret_slot - 8;  // fp control block (2 words), r15, r14, r13, r12, rbx, rbp
  uint16_t fpu_cw = 0;
  uint32_t mxcsr = 0;
  asm volatile("fnstcw %0" : "=m"(fpu_cw));
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  frame[0] = fpu_cw;
  frame[1] = mxcsr;
  frame[2] = 0;                                     // r15
  frame[3] = 0;                                     // r14
  frame[4] = reinterpret_cast<uint64_t>(entry);     // r13
  frame[5] = reinterpret_cast<uint64_t>(arg);       // r12
  frame[6] = 0;                                     // rbx
  frame[7] = 0;                                     // rbp
  sp_ = frame;
}

void Fiber::resume() { gpusim_switch_context(&scheduler_sp_, sp_); }

void Fiber::yield_to_scheduler() { gpusim_switch_context(&sp_, scheduler_sp_); }

#else

namespace {
void ucontext_entry(unsigned hi_entry, unsigned lo_entry, unsigned hi_arg, unsigned lo_arg) {
  auto entry = reinterpret_cast<Fiber::Entry>((uintptr_t{hi_entry} << 32) | lo_entry);
  auto* arg = reinterpret_cast<void*>((uintptr_t{hi_arg} << 32) | lo_arg);
  entry(arg);
  std::abort();  // entries never return
}
}  // namespace

void Fiber::reset(Entry entry, void* arg) {
  if (getcontext(&context_) != 0) die("getcontext failed");
  context_.uc_stack.ss_sp = stack_ + page_;
  context_.uc_stack.ss_size = bytes_;
  context_.uc_link = nullptr;
  auto e = reinterpret_cast<uintptr_t>(entry);
  auto a = reinterpret_cast<uintptr_t>(arg);
  makecontext(&context_, reinterpret_cast<void (*)()>(&ucontext_entry), 4, unsigned(e >> 32),
              unsigned(e), unsigned(a >> 32), unsigned(a));
}

void Fiber::resume() { swapcontext(&scheduler_, &context_); }

void Fiber::yield_to_scheduler() { swapcontext(&context_, &scheduler_); }

#endif

}  // namespace gpusim
