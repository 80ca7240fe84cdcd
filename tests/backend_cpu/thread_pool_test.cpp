#include "mx8/backend/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace mx8::cpu {
namespace {

// Every index of [0, count) must be visited exactly once, in ranges no larger than the grain.
void check_cover(ThreadPool* pool, size_t count, size_t grain) {
  std::vector<std::atomic<int>> hits(count);
  std::atomic<bool> range_ok{true};
  parallel_for(pool, count, grain, [&](size_t b, size_t e) {
    if (b >= e || e > count || (pool && pool->threads() > 1 && count > grain && e - b > grain))
      range_ok = false;
    for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  EXPECT_TRUE(range_ok) << "count " << count << " grain " << grain;
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i << " count " << count;
}

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (size_t count : {0, 1, 2, 7, 64, 1000, 4099})
      for (size_t grain : {1, 3, 64, 5000}) check_cover(&pool, count, grain);
  }
  check_cover(nullptr, 1000, 7);
}

TEST(ThreadPool, ManyBackToBackJobs) {
  ThreadPool pool(3);
  std::atomic<long> sum{0};
  for (int job = 0; job < 500; ++job)
    pool.parallel_for(100, 10, [&](size_t b, size_t e) {
      long s = 0;
      for (size_t i = b; i < e; ++i) s += long(i);
      sum += s;
    });
  EXPECT_EQ(sum.load(), 500L * 4950);
}

TEST(ThreadPool, UsesMoreThanOneThread) {
  ThreadPool pool(2);
  std::atomic<int> inside{0}, max_inside{0};
  // Each task waits briefly for a partner; with two threads both tasks must overlap at some point.
  pool.parallel_for(2, 1, [&](size_t, size_t) {
    int now = ++inside;
    int seen = max_inside.load();
    while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
    }
    for (int spin = 0; spin < 2000 && max_inside.load() < 2; ++spin)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    --inside;
  });
  EXPECT_EQ(max_inside.load(), 2);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(2);
  std::atomic<int> total{0};
  pool.parallel_for(8, 1, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      pool.parallel_for(10, 2, [&](size_t b2, size_t e2) { total += int(e2 - b2); });
  });
  EXPECT_EQ(total.load(), 80);
}

// The same from a worker thread: both outer tasks wait until the other has started, so one of the
// nested calls is made by a worker (which must run it inline too, not wait for the pool it is in).
TEST(ThreadPool, NestedCallsFromAWorkerRunInline) {
  ThreadPool pool(2);
  std::atomic<int> started{0}, total{0};
  pool.parallel_for(2, 1, [&](size_t, size_t) {
    ++started;
    for (int spin = 0; spin < 20000 && started.load() < 2; ++spin)
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    pool.parallel_for(10, 2, [&](size_t b, size_t e) { total += int(e - b); });
  });
  EXPECT_EQ(started.load(), 2);
  EXPECT_EQ(total.load(), 20);
}

TEST(ThreadPool, ZeroThreadsMeansEveryCoreAndZeroGrainMeansOne) {
  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(ThreadPool(0).threads(), cores);
  EXPECT_EQ(ThreadPool(-3).threads(), cores);
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(100);
  pool.parallel_for(100, 0, [&](size_t b, size_t e) {
    EXPECT_EQ(e - b, 1u);  // grain 0 is taken as 1 (and not as "no progress")
    for (size_t i = b; i < e; ++i) ++hits[i];
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
}

TEST(ThreadPool, ConcurrentSubmittersAreSerialised) {
  ThreadPool pool(2);
  std::atomic<long> sum{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&] {
      for (int job = 0; job < 200; ++job)
        pool.parallel_for(50, 5, [&](size_t b, size_t e) { sum += long(e - b); });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(sum.load(), 3L * 200 * 50);
}

}  // namespace
}  // namespace mx8::cpu
