// Shared helpers of the CPU benchmarks (`mx8 bench quantize`, `mx8 bench gemv`): timing, test data,
// and the machine's own floors measured in the same run (read-only and memcpy bandwidth).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "mx8/backend/cpu/thread_pool.h"

namespace mx8::cli::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs fn() once to warm up, then until `min_time_s` and `min_reps` are both reached; returns the
// median milliseconds per call (the machine is shared and noisy: the median resists outliers).
template <class Fn>
double median_ms(Fn&& fn, double min_time_s = 0.3, int min_reps = 5) {
  fn();
  std::vector<double> t;
  double start = now_s();
  while (int(t.size()) < min_reps || now_s() - start < min_time_s) {
    double t0 = now_s();
    fn();
    t.push_back((now_s() - t0) * 1e3);
    if (t.size() > 100000) break;
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

// Seconds of CPU time used by the whole process (all threads): on a loaded machine, bytes per
// CPU-second says what a core achieves while it runs, which wall time cannot.
inline double process_cpu_s() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

struct Timing {
  double wall_ms;  // median wall milliseconds per call
  double cpu_ms;   // median process CPU milliseconds per call
};

// Like median_ms, and also the median CPU time per call.
template <class Fn>
Timing median_timing(Fn&& fn, double min_time_s = 0.3, int min_reps = 5) {
  fn();
  std::vector<double> wall, cpu;
  double start = now_s();
  while (int(wall.size()) < min_reps || now_s() - start < min_time_s) {
    double t0 = now_s(), c0 = process_cpu_s();
    fn();
    cpu.push_back((process_cpu_s() - c0) * 1e3);
    wall.push_back((now_s() - t0) * 1e3);
    if (wall.size() > 100000) break;
  }
  std::nth_element(wall.begin(), wall.begin() + wall.size() / 2, wall.end());
  std::nth_element(cpu.begin(), cpu.begin() + cpu.size() / 2, cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

// Deterministic fast pseudo-random numbers (xorshift64*), good enough for benchmark data.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  // Roughly normal (sum of uniforms), mean 0, standard deviation ~`sd`.
  float normal(float sd) {
    uint64_t r = next();
    float u = float(r & 0xFFFF) + float((r >> 16) & 0xFFFF) + float((r >> 32) & 0xFFFF) + float(r >> 48);
    return (u / 65536.f - 2.f) * 1.732f * sd;
  }
};

// Best-of-3 GB/s of a read-only pass over a buffer of `bytes` (far larger than the caches), split
// over the pool's threads: the floor of any kernel that must read its operand once.
double measure_read_gbps(mx8::cpu::ThreadPool* pool, size_t bytes);
// Best-of-3 GB/s of memcpy of `bytes` (counted once: bytes copied), split over the pool's threads.
double measure_memcpy_gbps(mx8::cpu::ThreadPool* pool, size_t bytes);

// "1,2" -> {1, 2}; throws mx8::Error naming the option on bad input.
std::vector<int64_t> parse_int_list(const std::string& s, const char* option);

}  // namespace mx8::cli::bench
