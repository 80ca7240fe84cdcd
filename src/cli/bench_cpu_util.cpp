#include "cli/bench_cpu_util.h"

#include <cstdlib>
#include <memory>

#include "mx8/backend/cpu/huge_alloc.h"
#include "mx8/error.h"

namespace mx8::cli::bench {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Memory of the kind the CPU backend streams weights from (huge pages where the system has them),
// so that the bandwidth measured on it is the floor of the same reads.
std::unique_ptr<uint8_t, FreeDeleter> big_buffer(size_t bytes) {
  auto* p = static_cast<uint8_t*>(mx8::cpu::huge_page_alloc(bytes));
  std::memset(p, 1, bytes);  // touch every page before timing
  return std::unique_ptr<uint8_t, FreeDeleter>(p);
}

}  // namespace

double measure_read_gbps(mx8::cpu::ThreadPool* pool, size_t bytes) {
  auto buf = big_buffer(bytes);
  const uint64_t* words = reinterpret_cast<const uint64_t*>(buf.get());
  const size_t n = bytes / 8;
  volatile uint64_t sink = 0;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double t0 = now_s();
    mx8::cpu::parallel_for(pool, n, 1 << 16, [&](size_t b, size_t e) {
      // Four independent sums: the compiler vectorises this into wide loads.
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      size_t i = b;
      for (; i + 4 <= e; i += 4) s0 += words[i], s1 += words[i + 1], s2 += words[i + 2], s3 += words[i + 3];
      for (; i < e; ++i) s0 += words[i];
      sink = sink + (s0 ^ s1 ^ s2 ^ s3);
    });
    best = std::max(best, double(bytes) / (now_s() - t0) / 1e9);
  }
  return best;
}

double measure_memcpy_gbps(mx8::cpu::ThreadPool* pool, size_t bytes) {
  auto src = big_buffer(bytes), dst = big_buffer(bytes);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double t0 = now_s();
    mx8::cpu::parallel_for(pool, bytes, 1 << 22,
                           [&](size_t b, size_t e) { std::memcpy(dst.get() + b, src.get() + b, e - b); });
    best = std::max(best, double(bytes) / (now_s() - t0) / 1e9);
  }
  return best;
}

std::vector<int64_t> parse_int_list(const std::string& s, const char* option) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    std::string item = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v <= 0)
      throw Error(std::string(option) + ": expected a comma-separated list of positive integers, got '" + s +
                  "'");
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace mx8::cli::bench
