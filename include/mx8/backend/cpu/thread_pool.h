// A small persistent thread pool for the CPU kernels.
//
// ThreadPool(n) starts n-1 worker threads; the calling thread is the n-th worker, so a pool of 1
// runs everything inline. parallel_for(count, grain, fn) calls fn(begin, end) on disjoint ranges
// of at most `grain` items that together cover [0, count), spread dynamically over the threads,
// and returns when all are done. It allocates nothing per call (the callable is passed by
// address), so it can be called per matrix-vector product during decode.
//
// Calls from several external threads on one pool are serialised; a parallel_for issued from
// inside a task runs inline on that thread (no nested parallelism, no deadlock). Tasks must not
// throw (an exception on a worker thread ends the process).
// Every kernel entry point of the CPU backend takes a `ThreadPool*`; nullptr means "run on the
// calling thread only".
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace mx8::cpu {

class ThreadPool {
 public:
  // threads <= 0 means std::thread::hardware_concurrency(). Throws mx8::Error (with no thread left
  // running) when the system cannot start that many threads.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return int(workers_.size()) + 1; }

  template <class Fn>
  void parallel_for(size_t count, size_t grain, Fn&& fn) {
    auto call = [](void* ctx, size_t begin, size_t end) {
      (*static_cast<std::remove_reference_t<Fn>*>(ctx))(begin, end);
    };
    run(count, grain, call, const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using Call = void (*)(void* ctx, size_t begin, size_t end);
  void run(size_t count, size_t grain, Call call, void* ctx);
  void worker_main();
  void work_on_current_job();
  void stop_and_join();

  std::vector<std::thread> workers_;
  std::mutex submit_mutex_;  // one job at a time
  // The current job; written by the submitter before `generation_` is bumped.
  Call call_ = nullptr;
  void* ctx_ = nullptr;
  size_t count_ = 0, grain_ = 1;
  alignas(64) std::atomic<size_t> next_{0};          // next unclaimed item
  alignas(64) std::atomic<uint64_t> generation_{0};  // bumped per job; workers wait on it
  alignas(64) std::atomic<int> busy_{0};             // workers still inside the current job
  std::atomic<bool> stop_{false};
};

// Splits [0, count) into ranges of `grain` and runs them on `pool`, or inline when pool is null.
template <class Fn>
void parallel_for(ThreadPool* pool, size_t count, size_t grain, Fn&& fn) {
  if (count == 0) return;
  if (pool == nullptr || pool->threads() == 1 || count <= grain) {
    fn(size_t(0), count);
    return;
  }
  pool->parallel_for(count, grain, fn);
}

}  // namespace mx8::cpu
