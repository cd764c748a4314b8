// The caching allocator's bookkeeping, over a fake backing allocator that counts its calls.
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "core/caching_pool.h"
#include "core/error.h"

using namespace strata;

namespace {
struct FakeBacking {
  size_t allocations = 0, frees = 0;
  size_t limit_bytes = SIZE_MAX;  // refuse (return nullptr) past this many live bytes
  size_t live_bytes = 0;
  std::map<void*, size_t> live;
  void* allocate(size_t bytes) {
    if (live_bytes + bytes > limit_bytes) return nullptr;
    ++allocations;
    void* p = std::malloc(bytes);
    live[p] = bytes;
    live_bytes += bytes;
    return p;
  }
  void free(void* p) {
    ++frees;
    live_bytes -= live.at(p);
    live.erase(p);
    std::free(p);
  }
};

CachingPool make_pool(FakeBacking& b) {
  return CachingPool("test", [&b](size_t n) { return b.allocate(n); }, [&b](void* p) { b.free(p); });
}
}  // namespace

TEST(CachingPool, RoundsSmallAndLargeSizes) {
  EXPECT_EQ(CachingPool::round_size(0), 512u);
  EXPECT_EQ(CachingPool::round_size(1), 512u);
  EXPECT_EQ(CachingPool::round_size(513), 1024u);
  EXPECT_EQ(CachingPool::round_size((1u << 20) + 1), 2u << 20);
  EXPECT_EQ(CachingPool::round_size(5u << 20), 6u << 20);
  // A finer large granularity (the host pool's 256 KiB): a 2.25 MiB weight is not rounded at all.
  EXPECT_EQ(CachingPool::round_size(9u << 18, 256u << 10), 9u << 18);
  EXPECT_EQ(CachingPool::round_size((9u << 18) + 1, 256u << 10), 10u << 18);
}

TEST(CachingPool, ReusesFreedBlocksWithoutCallingTheBackingAllocator) {
  FakeBacking b;
  {
    CachingPool pool = make_pool(b);
    void* a = pool.allocate(1000);
    pool.deallocate(a);
    void* c = pool.allocate(900);  // same rounded size (1024): the cached block comes back
    EXPECT_EQ(c, a);
    EXPECT_EQ(b.allocations, 1u);
    void* d = pool.allocate(1000);  // the block is in use: a new one
    EXPECT_NE(d, c);
    EXPECT_EQ(b.allocations, 2u);
    PoolStats s = pool.stats();
    EXPECT_EQ(s.allocated_bytes, 2048u);
    EXPECT_EQ(s.reserved_bytes, 2048u);
    pool.deallocate(c);
    pool.deallocate(d);
    EXPECT_EQ(pool.stats().allocated_bytes, 0u);
    EXPECT_EQ(pool.stats().peak_allocated_bytes, 2048u);
  }
  EXPECT_EQ(b.frees, 2u);  // the destructor returned both cached blocks
  EXPECT_TRUE(b.live.empty());
}

TEST(CachingPool, LargeRequestDoesNotTakeAMuchLargerBlock) {
  FakeBacking b;
  CachingPool pool = make_pool(b);
  void* big = pool.allocate(64u << 20);
  pool.deallocate(big);
  void* small_large = pool.allocate(4u << 20);  // 64 MiB > 2 x 4 MiB: not reused
  EXPECT_NE(small_large, big);
  void* similar = pool.allocate(40u << 20);  // 64 MiB <= 2 x 40 MiB: reused
  EXPECT_EQ(similar, big);
  pool.deallocate(small_large);
  pool.deallocate(similar);
}

TEST(CachingPool, EmptiesTheCacheAndRetriesWhenTheBackingIsFull) {
  FakeBacking b;
  b.limit_bytes = 4u << 20;
  CachingPool pool = make_pool(b);
  void* a = pool.allocate(3u << 20);  // 4 MiB rounded: the whole budget
  pool.deallocate(a);
  void* c = pool.allocate(1u << 10);  // small: cannot use the large cached block, backing full
  EXPECT_NE(c, nullptr);
  EXPECT_EQ(b.frees, 1u);  // the cached 4 MiB block was released to make room
  pool.deallocate(c);
}

TEST(CachingPool, OutOfMemoryAndForeignPointersNameThePool) {
  FakeBacking b;
  b.limit_bytes = 1u << 20;
  CachingPool pool = make_pool(b);
  try {
    pool.allocate(8u << 20);
    FAIL() << "allocation past the backing limit must throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("out of memory in test"), std::string::npos) << m;
    EXPECT_NE(m.find("8388608 bytes"), std::string::npos) << m;
  }
  int x = 0;
  EXPECT_THROW(pool.deallocate(&x), Error);
}

TEST(CachingPool, PeakRestartsFromWhatIsInUse) {
  FakeBacking b;
  CachingPool pool = make_pool(b);
  void* kept = pool.allocate(4096);
  void* big = pool.allocate(size_t{8} << 20);
  pool.deallocate(big);
  EXPECT_EQ(pool.stats().peak_allocated_bytes, 4096u + (size_t{8} << 20));
  pool.reset_peak();
  EXPECT_EQ(pool.stats().peak_allocated_bytes, 4096u);
  void* small = pool.allocate(1000);
  EXPECT_EQ(pool.stats().peak_allocated_bytes, 4096u + 1024u);
  pool.deallocate(small);
  pool.deallocate(kept);
}
