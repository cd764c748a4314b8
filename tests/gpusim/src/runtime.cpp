// The CUDA runtime API of the simulated GPU (cuda_runtime.h), over the Engine.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine.h"
#include "scheduler.h"

namespace gpusim {
namespace {

thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;

size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  return static_cast<size_t>(std::strtoull(v, nullptr, 10));
}

Schedule parse_schedule(const char* text) {
  Schedule s;
  if (!text || !*text) return s;
  std::string t(text);
  if (t == "ascending") {
    s.order = Order::ascending;
  } else if (t == "descending") {
    s.order = Order::descending;
  } else if (t.rfind("random", 0) == 0) {
    s.order = Order::random;
    if (t.size() > 7 && t[6] == ':') s.seed = std::strtoull(t.c_str() + 7, nullptr, 10);
  } else {
    std::fprintf(stderr, "gpusim: STRATA_GPUSIM_ORDER='%s' is not ascending, descending or random[:SEED]\n", text);
    std::exit(2);
  }
  return s;
}

// Returns `rc`, remembering it as the last error when it is one (as CUDA does).
cudaError_t result(cudaError_t rc) {
  if (rc != cudaSuccess) last_error = rc;
  return rc;
}

// Every call starts here: the lock, and the sticky fault of a failed kernel.
#define GPUSIM_ENTER()                                                  \
  Engine& engine = Engine::get();                                       \
  std::lock_guard<std::recursive_mutex> guard(engine.mutex);            \
  if (engine.faulted()) return result(cudaErrorLaunchFailure)

void complain(const char* call, const std::string& why) { std::fprintf(stderr, "gpusim: %s: %s\n", call, why.c_str()); }

bool is_host_allocation(Engine& e, const void* p, size_t bytes) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = e.host_allocations.upper_bound(a);
  if (it == e.host_allocations.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

enum class Side { host, device, bad };

// Where [p, p + bytes) lies: host memory, inside one live device allocation, or neither (a device
// range that runs out of its allocation, or touches freed memory).
Side side_of(Engine& e, const void* p, size_t bytes, const char* call, const char* which) {
  if (!e.memory.in_arena(p)) return Side::host;
  if (e.memory.find(p, bytes ? bytes : 1)) return Side::device;
  complain(call, std::string(which) + " range of " + std::to_string(bytes) + " bytes at " +
                     std::to_string(reinterpret_cast<uintptr_t>(p)) + " is not inside one live device allocation (" +
                     e.memory.describe(p) + ")");
  return Side::bad;
}

// The host-device traffic counters (control.h), for tests that bound what crosses.
void count_transfer(Engine& e, Side dst, Side src, size_t bytes) {
  if (src == Side::device && dst == Side::host) e.counters.bytes_to_host += bytes;
  if (src == Side::host && dst == Side::device) e.counters.bytes_to_device += bytes;
}

cudaError_t check_copy(Engine& e, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, const char* call,
                       Side* dst_side, Side* src_side) {
  *dst_side = side_of(e, dst, bytes, call, "destination");
  *src_side = side_of(e, src, bytes, call, "source");
  if (*dst_side == Side::bad || *src_side == Side::bad) return cudaErrorInvalidValue;
  Side want_dst = *dst_side, want_src = *src_side;
  switch (kind) {
    case cudaMemcpyHostToHost: want_dst = want_src = Side::host; break;
    case cudaMemcpyHostToDevice: want_dst = Side::device; want_src = Side::host; break;
    case cudaMemcpyDeviceToHost: want_dst = Side::host; want_src = Side::device; break;
    case cudaMemcpyDeviceToDevice: want_dst = want_src = Side::device; break;
    case cudaMemcpyDefault: break;
    default: return cudaErrorInvalidMemcpyDirection;
  }
  if (want_dst != *dst_side || want_src != *src_side) {
    complain(call, "the copy kind does not match the pointers (source on the " +
                       std::string(*src_side == Side::device ? "device" : "host") + ", destination on the " +
                       std::string(*dst_side == Side::device ? "device" : "host") + ")");
    return cudaErrorInvalidValue;
  }
  count_transfer(e, *dst_side, *src_side, bytes);
  return cudaSuccess;
}

Op copy_op(void* dst, const void* src, size_t bytes, Counters* counters) {
  Op op;
  op.kind = Op::Kind::device;
  op.run = [dst, src, bytes, counters] {
    std::memmove(dst, src, bytes);
    ++counters->copies;
  };
  return op;
}

struct EventHandle {
  std::shared_ptr<EventState> state;
};

EventHandle* event_of(cudaEvent_t e) { return reinterpret_cast<EventHandle*>(e); }

}  // namespace

// ---- the engine ----

Engine& Engine::get() {
  static Engine* engine = new Engine;  // never destroyed: tensors in static objects may outlive it
  return *engine;
}

Engine::Engine() : memory(env_size("STRATA_GPUSIM_MEMORY_MB", 16384) << 20) {
  legacy = std::make_shared<StreamState>();
  legacy->legacy = true;
  streams.push_back(legacy);
  schedule = parse_schedule(std::getenv("STRATA_GPUSIM_ORDER"));
  device_count = static_cast<int>(env_size("STRATA_GPUSIM_DEVICES", 1));
  install_fault_handler(&memory);
}

std::shared_ptr<StreamState> Engine::stream(cudaStream_t handle) {
  if (handle == nullptr || handle == cudaStreamLegacy) return legacy;
  for (const auto& s : streams)
    if (reinterpret_cast<cudaStream_t>(s.get()) == handle) return s;
  return nullptr;
}

uint64_t Engine::enqueue(const std::shared_ptr<StreamState>& s, Op op) {
  auto wait_for = [&](const std::shared_ptr<StreamState>& other) {
    if (other->submitted == other->completed) return;
    Op w;
    w.kind = Op::Kind::wait;
    w.wait_stream = other;
    w.wait_seq = other->submitted;
    w.seq = ++s->submitted;
    s->queue.push_back(std::move(w));
  };
  if (s->legacy) {
    for (const auto& other : streams)
      if (other != s && !(other->flags & cudaStreamNonBlocking)) wait_for(other);
  } else if (!(s->flags & cudaStreamNonBlocking)) {
    wait_for(legacy);
  }
  op.seq = ++s->submitted;
  s->queue.push_back(std::move(op));
  return s->submitted;
}

void Engine::drain(StreamState& s, uint64_t target) {
  if (s.completed >= target) return;
  if (s.draining) {
    set_fault("streams wait on each other's later work in a cycle (a deadlock on a real GPU)");
    return;
  }
  s.draining = true;
  while (s.completed < target && !s.queue.empty()) {
    Op op = std::move(s.queue.front());
    s.queue.pop_front();
    if (!faulted()) {
      switch (op.kind) {
        case Op::Kind::wait:
          drain(*op.wait_stream, op.wait_seq);
          break;
        case Op::Kind::record:
          if (op.event->stream.get() == &s && op.event->seq == op.seq) op.event->time_ms = now_ms();
          break;
        case Op::Kind::host:
          op.run();
          break;
        case Op::Kind::device:
          memory.begin_device_work();
          try {
            op.run();
          } catch (const KernelFault& f) {
            set_fault(f.what());
          }
          memory.end_device_work();
          break;
      }
    }
    ++s.completed;  // after a fault the rest of the queue is dropped, as a failed context does
  }
  s.draining = false;
}

void Engine::drain_all() {
  const auto live = streams;
  for (const auto& s : live) drain(*s, s->submitted);
}

void Engine::set_fault(const std::string& message) {
  if (!fault.empty()) return;
  fault = message;
  std::fprintf(stderr, "gpusim: %s\n", message.c_str());
}

double Engine::now_ms() const {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// ---- kernels ----

void launch_kernel(KernelLaunch launch, cudaStream_t stream) {
  Engine& engine = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(engine.mutex);
  if (current) device_fault("a kernel launched a kernel (dynamic parallelism is not simulated)");
  if (engine.faulted()) {
    last_error = cudaErrorLaunchFailure;
    return;
  }
  const dim3 b = launch.block, g = launch.grid;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  std::string bad;
  if (threads == 0 || g.x == 0 || g.y == 0 || g.z == 0)
    bad = "a zero-sized grid or block";
  else if (b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024)
    bad = "more than 1024 threads in a block (or a block dimension over its limit)";
  else if (g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
    bad = "a grid dimension over its limit";
  else if (uint64_t{g.x} * g.y * g.z > 0xffffffffull)
    bad = "more than 2^32 blocks (not simulated)";
  if (!bad.empty()) {
    complain("kernel launch", std::string("'") + launch.name + "' asks for " + bad);
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  auto opt_in = engine.max_dynamic_shared.find(launch.function);
  const size_t limit = opt_in != engine.max_dynamic_shared.end() ? static_cast<size_t>(opt_in->second) : 48 * 1024;
  if (launch.dynamic_shared_bytes > limit) {
    complain("kernel launch", std::string("'") + launch.name + "' asks for " +
                                  std::to_string(launch.dynamic_shared_bytes) + " bytes of dynamic shared memory, over its " +
                                  std::to_string(limit) + "-byte limit (raise it with cudaFuncSetAttribute)");
    last_error = cudaErrorInvalidValue;
    return;
  }
  auto s = engine.stream(stream);
  if (!s) {
    complain("kernel launch", std::string("'") + launch.name + "' on a stream that does not exist");
    last_error = cudaErrorInvalidResourceHandle;
    return;
  }
  Op op;
  op.kind = Op::Kind::device;
  const Schedule schedule = engine.schedule;
  Counters* counters = &engine.counters;
  op.run = [launch = std::move(launch), schedule, counters] { run_kernel(launch, schedule, *counters); };
  engine.enqueue(s, std::move(op));
}

// ---- control (gpusim/control.h) ----

void set_schedule(const Schedule& schedule) {
  Engine& e = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(e.mutex);
  e.schedule = schedule;
}

Schedule schedule() {
  Engine& e = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(e.mutex);
  return e.schedule;
}

std::string schedule_name(const Schedule& s) {
  switch (s.order) {
    case Order::ascending: return "ascending";
    case Order::descending: return "descending";
    default: return "random:" + std::to_string(s.seed);
  }
}

std::string last_fault() {
  Engine& e = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(e.mutex);
  return e.fault;
}

void clear_fault() {
  Engine& e = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(e.mutex);
  e.fault.clear();
  last_error = cudaSuccess;
}

Counters counters() {
  Engine& e = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(e.mutex);
  Counters c = e.counters;
  c.pending_ops = 0;
  for (const auto& s : e.streams) c.pending_ops += s->submitted - s->completed;
  c.device_bytes_in_use = e.memory.in_use();
  return c;
}

void drain_all() {
  Engine& e = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(e.mutex);
  e.drain_all();
}

}  // namespace gpusim

using gpusim::Engine;
using gpusim::Op;
using gpusim::Side;
using gpusim::StreamState;
using gpusim::complain;
using gpusim::result;

// ---- errors ----

cudaError_t cudaGetLastError() {
  Engine& engine = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(engine.mutex);
  if (engine.faulted()) return cudaErrorLaunchFailure;
  const cudaError_t e = gpusim::last_error;
  gpusim::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  Engine& engine = Engine::get();
  std::lock_guard<std::recursive_mutex> guard(engine.mutex);
  return engine.faulted() ? cudaErrorLaunchFailure : gpusim::last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorAssert: return "cudaErrorAssert";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: {
      // The sticky fault's own words, so that Strata's error messages carry them.
      static thread_local std::string text;
      text = "unspecified launch failure (simulated GPU: " + gpusim::last_fault() + ")";
      return text.c_str();
    }
    default: return cudaGetErrorName(error);
  }
}

// ---- devices ----

cudaError_t cudaGetDeviceCount(int* count) {
  GPUSIM_ENTER();
  *count = engine.device_count;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  GPUSIM_ENTER();
  if (device < 0 || device >= engine.device_count) return result(cudaErrorInvalidDevice);
  gpusim::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = gpusim::current_device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  GPUSIM_ENTER();
  if (device < 0 || device >= engine.device_count) return result(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "Strata simulated GPU (sm_90)");
  prop->totalGlobalMem = engine.memory.capacity();
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->sharedMemPerMultiprocessor = 228 * 1024;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  prop->l2CacheSize = 50 * 1024 * 1024;
  prop->memoryBusWidth = 5120;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  cudaDeviceProp p;
  const cudaError_t rc = cudaGetDeviceProperties(&p, device);
  if (rc != cudaSuccess) return rc;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrMemoryClockRate: *value = 2619000; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(p.sharedMemPerBlockOptin); break;
    default: return result(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  GPUSIM_ENTER();
  ++engine.counters.host_waits;
  engine.drain_all();
  return engine.faulted() ? result(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  GPUSIM_ENTER();
  *total_bytes = engine.memory.capacity();
  *free_bytes = engine.memory.capacity() - engine.memory.in_use();
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = CUDART_VERSION;
  return cudaSuccess;
}

// ---- memory ----

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  GPUSIM_ENTER();
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  *ptr = engine.memory.allocate(bytes);
  return *ptr ? cudaSuccess : result(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* ptr) {
  GPUSIM_ENTER();
  if (!ptr) return cudaSuccess;
  engine.drain_all();  // cudaFree synchronises the device
  if (!engine.memory.free(ptr)) {
    complain("cudaFree", "pointer is not the start of a live device allocation (" + engine.memory.describe(ptr) + ")");
    return result(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int) {
  GPUSIM_ENTER();
  const size_t rounded = (bytes + 4095) / 4096 * 4096;
  void* p = std::aligned_alloc(4096, rounded ? rounded : 4096);
  if (!p) return result(cudaErrorMemoryAllocation);
  std::memset(p, 0xff, rounded);  // page-locked memory nothing wrote reads as NaN
  engine.host_allocations[reinterpret_cast<uintptr_t>(p)] = rounded ? rounded : 4096;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return cudaHostAlloc(ptr, bytes, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void* ptr) {
  GPUSIM_ENTER();
  if (!ptr) return cudaSuccess;
  engine.drain_all();
  auto it = engine.host_allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == engine.host_allocations.end()) {
    complain("cudaFreeHost", "pointer was not returned by cudaHostAlloc/cudaMallocHost");
    return result(cudaErrorInvalidValue);
  }
  engine.host_allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* ptr) {
  GPUSIM_ENTER();
  std::memset(attributes, 0, sizeof *attributes);
  if (engine.memory.find(ptr)) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else if (gpusim::is_host_allocation(engine, ptr, 1)) {
    attributes->type = cudaMemoryTypeHost;
    attributes->hostPointer = const_cast<void*>(ptr);
    attributes->devicePointer = const_cast<void*>(ptr);
  } else {
    attributes->type = cudaMemoryTypeUnregistered;
    attributes->hostPointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

// CUDA's synchronisation rules for the blocking copy: device to host returns when the copy is
// done; from pinned host memory it is synchronous too; from pageable host memory the source is
// staged before returning but the copy into device memory may still be in flight; device to device
// does not wait at all; host to host is immediate.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind) {
  GPUSIM_ENTER();
  Side dst_side, src_side;
  if (cudaError_t rc = gpusim::check_copy(engine, dst, src, bytes, kind, "cudaMemcpy", &dst_side, &src_side))
    return result(rc);
  if (bytes == 0) return cudaSuccess;
  if (dst_side == Side::host && src_side == Side::host) {
    engine.drain(*engine.legacy, engine.legacy->submitted);
    std::memmove(dst, src, bytes);
    return cudaSuccess;
  }
  if (src_side == Side::host && !gpusim::is_host_allocation(engine, src, bytes)) {
    auto staged = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + bytes);
    Op op;
    op.kind = Op::Kind::device;
    gpusim::Counters* counters = &engine.counters;
    op.run = [dst, staged, counters] {
      std::memcpy(dst, staged->data(), staged->size());
      ++counters->copies;
    };
    engine.enqueue(engine.legacy, std::move(op));
    return cudaSuccess;
  }
  const uint64_t seq = engine.enqueue(engine.legacy, gpusim::copy_op(dst, src, bytes, &engine.counters));
  if (!(dst_side == Side::device && src_side == Side::device)) {
    ++engine.counters.host_waits;
    engine.drain(*engine.legacy, seq);
  }
  return engine.faulted() ? result(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t stream) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s) return result(cudaErrorInvalidResourceHandle);
  Side dst_side, src_side;
  if (cudaError_t rc = gpusim::check_copy(engine, dst, src, bytes, kind, "cudaMemcpyAsync", &dst_side, &src_side))
    return result(rc);
  if (bytes == 0) return cudaSuccess;
  // The copy reads its source and writes its destination when the stream runs it, host memory
  // included: a host buffer changed or freed before then is a bug this shows.
  engine.enqueue(s, gpusim::copy_op(dst, src, bytes, &engine.counters));
  return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                              size_t height, enum cudaMemcpyKind kind, cudaStream_t stream) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s) return result(cudaErrorInvalidResourceHandle);
  if (width > dst_pitch || width > src_pitch) return result(cudaErrorInvalidValue);
  if (height == 0 || width == 0) return cudaSuccess;
  Side dst_side, src_side;
  const size_t dst_span = dst_pitch * (height - 1) + width, src_span = src_pitch * (height - 1) + width;
  if (cudaError_t rc = gpusim::check_copy(engine, dst, src, 0, kind, "cudaMemcpy2DAsync", &dst_side, &src_side))
    return result(rc);
  if (gpusim::side_of(engine, dst, dst_span, "cudaMemcpy2DAsync", "destination") == Side::bad ||
      gpusim::side_of(engine, src, src_span, "cudaMemcpy2DAsync", "source") == Side::bad)
    return result(cudaErrorInvalidValue);
  gpusim::count_transfer(engine, dst_side, src_side, width * height);
  Op op;
  op.kind = Op::Kind::device;
  gpusim::Counters* counters = &engine.counters;
  op.run = [=] {
    for (size_t r = 0; r < height; ++r)
      std::memmove(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, width);
    ++counters->copies;
  };
  engine.enqueue(s, std::move(op));
  return cudaSuccess;
}

namespace {
cudaError_t memset_on(Engine& engine, const std::shared_ptr<StreamState>& s, void* ptr, int value, size_t bytes,
                      const char* call) {
  if (bytes == 0) return cudaSuccess;
  if (gpusim::side_of(engine, ptr, bytes, call, "destination") != Side::device) {
    complain(call, "the destination is not device memory");
    return result(cudaErrorInvalidValue);
  }
  Op op;
  op.kind = Op::Kind::device;
  gpusim::Counters* counters = &engine.counters;
  op.run = [ptr, value, bytes, counters] {
    std::memset(ptr, value, bytes);
    ++counters->copies;
  };
  engine.enqueue(s, std::move(op));
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  GPUSIM_ENTER();
  return memset_on(engine, engine.legacy, ptr, value, bytes, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s) return result(cudaErrorInvalidResourceHandle);
  return memset_on(engine, s, ptr, value, bytes, "cudaMemsetAsync");
}

// ---- streams and events ----

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  GPUSIM_ENTER();
  auto s = std::make_shared<StreamState>();
  s->flags = flags;
  engine.streams.push_back(s);
  *stream = reinterpret_cast<cudaStream_t>(s.get());
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int flags, int) {
  return cudaStreamCreateWithFlags(stream, flags);
}

cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  *least = 0;
  *greatest = -5;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s || s->legacy) return result(cudaErrorInvalidResourceHandle);
  engine.drain(*s, s->submitted);  // CUDA finishes a destroyed stream's work
  std::erase(engine.streams, s);
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s) return result(cudaErrorInvalidResourceHandle);
  ++engine.counters.host_waits;
  engine.drain(*s, s->submitted);
  return engine.faulted() ? result(cudaErrorLaunchFailure) : cudaSuccess;
}

// Work observed as finished must have run, so a query runs it: a polling loop terminates, and
// what it then reads is really there. A real query never waits, so it is not counted as a wait.
template <typename Sync>
static cudaError_t as_query(Sync&& sync) {
  GPUSIM_ENTER();
  const uint64_t waits = engine.counters.host_waits;
  const cudaError_t rc = sync();
  engine.counters.host_waits = waits;
  return rc;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  return as_query([stream] { return cudaStreamSynchronize(stream); });
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s || !event) return result(cudaErrorInvalidResourceHandle);
  auto& e = gpusim::event_of(event)->state;
  if (!e->stream) return cudaSuccess;  // never recorded: nothing to wait for
  Op op;
  op.kind = Op::Kind::wait;
  op.wait_stream = e->stream;
  op.wait_seq = e->seq;
  engine.enqueue(s, std::move(op));
  return cudaSuccess;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s) return result(cudaErrorInvalidResourceHandle);
  Op op;
  op.kind = Op::Kind::host;
  op.run = [fn, user_data] { fn(user_data); };
  engine.enqueue(s, std::move(op));
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  GPUSIM_ENTER();
  auto* h = new gpusim::EventHandle{std::make_shared<gpusim::EventState>()};
  h->state->flags = flags;
  *event = reinterpret_cast<cudaEvent_t>(h);
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  GPUSIM_ENTER();
  if (!event) return result(cudaErrorInvalidResourceHandle);
  delete gpusim::event_of(event);  // queued records keep the state alive
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  GPUSIM_ENTER();
  auto s = engine.stream(stream);
  if (!s || !event) return result(cudaErrorInvalidResourceHandle);
  auto& e = gpusim::event_of(event)->state;
  Op op;
  op.kind = Op::Kind::record;
  op.event = e;
  e->stream = s;
  e->seq = engine.enqueue(s, std::move(op));
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  GPUSIM_ENTER();
  if (!event) return result(cudaErrorInvalidResourceHandle);
  auto& e = gpusim::event_of(event)->state;
  ++engine.counters.host_waits;
  if (e->stream) engine.drain(*e->stream, e->seq);
  return engine.faulted() ? result(cudaErrorLaunchFailure) : cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  return as_query([event] { return cudaEventSynchronize(event); });
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  GPUSIM_ENTER();
  if (!start || !end) return result(cudaErrorInvalidResourceHandle);
  auto& a = gpusim::event_of(start)->state;
  auto& b = gpusim::event_of(end)->state;
  if ((a->flags | b->flags) & cudaEventDisableTiming) return result(cudaErrorInvalidResourceHandle);
  if (!a->stream || !b->stream) return result(cudaErrorInvalidResourceHandle);
  if (a->stream->completed < a->seq || b->stream->completed < b->seq) return result(cudaErrorNotReady);
  *ms = static_cast<float>(b->time_ms - a->time_ms);
  return cudaSuccess;
}

// ---- kernels ----

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  GPUSIM_ENTER();
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > 227 * 1024) return result(cudaErrorInvalidValue);
    engine.max_dynamic_shared[func] = value;
  }
  return cudaSuccess;
}
