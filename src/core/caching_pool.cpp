#include "core/caching_pool.h"

#include <algorithm>

#include "core/error.h"
#include "core/log.h"

namespace strata {

namespace {
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeThreshold = size_t{1} << 20;
}  // namespace

CachingPool::CachingPool(std::string name, std::function<void*(size_t)> backing_allocate,
                         std::function<void(void*)> backing_free, size_t large_round)
    : name_(std::move(name)),
      large_round_(large_round),
      backing_allocate_(std::move(backing_allocate)),
      backing_free_(std::move(backing_free)) {}

CachingPool::~CachingPool() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!in_use_.empty())
    log::warn("memory pool ", name_, " destroyed with ", in_use_.size(), " blocks (",
              stats_.allocated_bytes, " bytes) still in use; they are leaked");
  release_cached_locked();
}

size_t CachingPool::round_size(size_t bytes, size_t large_round) {
  if (bytes == 0) bytes = 1;
  size_t unit = bytes < kLargeThreshold ? kSmallRound : large_round;
  return (bytes + unit - 1) / unit * unit;
}

void* CachingPool::take_cached(size_t rounded) {
  auto it = cached_.lower_bound(rounded);
  if (it == cached_.end()) return nullptr;
  // A block serves a request of at least half its size (a 1 KiB request does not take a cached
  // 900 KiB block; small blocks are never split, so that would hold the difference), and small
  // requests never take large blocks.
  if (it->first > 2 * rounded) return nullptr;
  if (rounded < kLargeThreshold && it->first >= kLargeThreshold) return nullptr;
  void* ptr = it->second;
  in_use_[ptr] = it->first;
  stats_.allocated_bytes += it->first;
  cached_.erase(it);
  return ptr;
}

void* CachingPool::allocate(size_t bytes) {
  const size_t rounded = round_size(bytes, large_round_);
  std::lock_guard<std::mutex> lock(mutex_);
  void* ptr = take_cached(rounded);
  if (!ptr) {
    ptr = backing_allocate_(rounded);
    if (!ptr) {
      release_cached_locked();
      ptr = backing_allocate_(rounded);
    }
    STRATA_CHECK(ptr != nullptr, "out of memory in ", name_, ": could not allocate ", bytes,
                 " bytes (", rounded, " rounded); ", stats_.allocated_bytes,
                 " bytes in use, peak ", stats_.peak_allocated_bytes);
    ++stats_.backing_allocations;
    stats_.reserved_bytes += rounded;
    in_use_[ptr] = rounded;
    stats_.allocated_bytes += rounded;
  }
  stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
  return ptr;
}

void CachingPool::deallocate(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = in_use_.find(ptr);
  STRATA_CHECK(it != in_use_.end(), "memory pool ", name_, ": deallocate of ", ptr,
               ", which this pool did not hand out (or was already returned)");
  stats_.allocated_bytes -= it->second;
  cached_.emplace(it->second, ptr);
  in_use_.erase(it);
}

void CachingPool::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CachingPool::release_cached_locked() {
  for (auto& [size, ptr] : cached_) {
    backing_free_(ptr);
    stats_.reserved_bytes -= size;
    ++stats_.backing_frees;
  }
  cached_.clear();
}

void CachingPool::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_allocated_bytes = stats_.allocated_bytes;
}

PoolStats CachingPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace strata
