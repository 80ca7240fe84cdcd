// Persistent workers that wait on a generation counter (spin briefly, then futex-wait through
// std::atomic::wait) and claim ranges from a shared atomic cursor.
#include "mx8/backend/cpu/thread_pool.h"

#include <algorithm>
#include <string>

#include "mx8/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MX8_CPU_RELAX() _mm_pause()
#else
#define MX8_CPU_RELAX() ((void)0)
#endif

namespace mx8::cpu {
namespace {

// Set on pool workers and on a submitter while it runs a job: a nested parallel_for runs inline.
thread_local bool t_inside_job = false;

// About 10-30 us of spinning before sleeping: long enough to catch back-to-back kernels of one
// decode step, short enough not to burn a shared core for nothing.
constexpr int kSpinIterations = 2000;

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  try {
    workers_.reserve(threads - 1);
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_main(); });
  } catch (const std::exception& e) {
    // Thread creation fails with std::system_error when the system runs out of threads (or memory
    // for their stacks). The workers already started must be joined here: the destructor does not
    // run for a half-built object, and a joinable std::thread that is destroyed ends the process.
    const size_t started = workers_.size();
    stop_and_join();
    throw Error("cannot start " + std::to_string(threads) + " threads (the system allowed " +
                std::to_string(started + 1) + "): " + e.what());
  }
}

ThreadPool::~ThreadPool() {
  stop_and_join();
}

void ThreadPool::stop_and_join() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::work_on_current_job() {
  const size_t count = count_, grain = grain_;
  for (;;) {
    size_t begin = next_.fetch_add(grain, std::memory_order_relaxed);
    if (begin >= count) break;
    call_(ctx_, begin, std::min(count, begin + grain));
  }
}

void ThreadPool::worker_main() {
  t_inside_job = true;
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 0; gen == seen && i < kSpinIterations; ++i) {
      MX8_CPU_RELAX();
      gen = generation_.load(std::memory_order_acquire);
    }
    while (gen == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load(std::memory_order_relaxed)) return;
    work_on_current_job();
    if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) busy_.notify_one();
  }
}

void ThreadPool::run(size_t count, size_t grain, Call call, void* ctx) {
  grain = std::max<size_t>(grain, 1);
  if (workers_.empty() || t_inside_job || count <= grain) {
    call(ctx, 0, count);
    return;
  }
  std::lock_guard<std::mutex> lock(submit_mutex_);
  call_ = call;
  ctx_ = ctx;
  count_ = count;
  grain_ = grain;
  next_.store(0, std::memory_order_relaxed);
  busy_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();

  t_inside_job = true;
  work_on_current_job();
  t_inside_job = false;

  int busy = busy_.load(std::memory_order_acquire);
  for (int i = 0; busy != 0 && i < kSpinIterations; ++i) {
    MX8_CPU_RELAX();
    busy = busy_.load(std::memory_order_acquire);
  }
  while (busy != 0) {
    busy_.wait(busy, std::memory_order_acquire);
    busy = busy_.load(std::memory_order_acquire);
  }
}

}  // namespace mx8::cpu
