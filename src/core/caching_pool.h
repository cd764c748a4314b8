// The bookkeeping of a caching allocator, apart from the memory it caches: freed blocks are kept
// by size and handed out again instead of calling the (slow, synchronising) backing allocator,
// e.g. cudaMalloc/cudaFree or cudaHostAlloc/cudaFreeHost. Pure logic over two callbacks, so it is
// tested on any machine; the CUDA allocators in src/core/cuda/ wrap it.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

namespace strata {

struct PoolStats {
  size_t allocated_bytes = 0;       // handed out and not yet returned (rounded sizes)
  size_t reserved_bytes = 0;        // obtained from the backing allocator (in use + cached)
  size_t peak_allocated_bytes = 0;  // high-water mark of allocated_bytes
  size_t backing_allocations = 0;   // calls to the backing allocator (cache misses)
  size_t backing_frees = 0;
};

class CachingPool {
 public:
  // `backing_allocate(bytes)` returns memory or nullptr when out of memory; `backing_free` returns
  // it. `name` goes into error messages ("cuda:0", "pinned host"). `large_round`: the granularity
  // of blocks of 1 MiB and more (2 MiB suits cudaMalloc, whose pages are 2 MiB; host memory is
  // better served finer, so that a 2.25 MiB weight does not hold 4 MiB).
  CachingPool(std::string name, std::function<void*(size_t)> backing_allocate,
              std::function<void(void*)> backing_free, size_t large_round = kDefaultLargeRound);
  static constexpr size_t kDefaultLargeRound = size_t{2} << 20;
  ~CachingPool();  // returns every cached block; blocks still in use are a caller bug, reported
  CachingPool(const CachingPool&) = delete;
  CachingPool& operator=(const CachingPool&) = delete;

  // Sizes are rounded up: to 512 bytes below 1 MiB, to large_round above, so blocks of nearby
  // sizes are interchangeable. A cached block is reused when it is at least the rounded size and
  // at most twice it (a 1 GiB block is not spent on a 2 MiB request, nor 900 KiB on 1 KiB). On a backing
  // failure the cache is emptied and the request retried once; a second failure throws an Error
  // naming the pool, the request and the pool's usage.
  void* allocate(size_t bytes);
  void deallocate(void* ptr);
  // Gives every cached (unused) block back to the backing allocator.
  void release_cached();
  PoolStats stats() const;
  // Starts a new high-water mark from what is in use now (to measure one phase's peak).
  void reset_peak();

  static size_t round_size(size_t bytes, size_t large_round = kDefaultLargeRound);

 private:
  void* take_cached(size_t rounded);  // under mutex_
  void release_cached_locked();

  std::string name_;
  size_t large_round_;
  std::function<void*(size_t)> backing_allocate_;
  std::function<void(void*)> backing_free_;
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> cached_;         // size -> free block
  std::unordered_map<void*, size_t> in_use_;    // block -> size
  PoolStats stats_;
};

}  // namespace strata
