// `mx8 bench gemv`: CPU matrix-vector / skinny-matrix products y = x W^T for LLM decode shapes, FP8
// (DeepSeek 128x128 UE8M0 blocks and MXFP8 1x32) next to f32 and bf16 weights measured in the same
// run, the machine's read-bandwidth floor, and the recorded llama.cpp figures of
// ../shared/research/cpu-anchor.md (same kind of machine, 2 threads, cold weights).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cpu/gemv_kernels.h"
#include "cli/bench_cpu_util.h"
#include "cli/command.h"
#include "cli/perf_report.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/backend/cpu/gemv.h"
#include "mx8/backend/cpu/huge_alloc.h"
#include "mx8/error.h"

namespace {

using mx8::cpu::ThreadPool;
namespace bench = mx8::cli::bench;

struct Options {
  std::string shapes = "14336x4096,4096x4096,4096x14336";
  std::string ms = "1,4,16";
  std::string threads = "1,2";
  double min_time = 0.25;
  size_t cold_bytes = size_t(256) << 20;
  bool lut = true;
  mx8::cli::PerfMdTarget perf;
};

// llama.cpp (cpu-anchor.md section 4), n = 1, cold, 2 threads, median of 3 sweeps: ms per product.
struct Anchor {
  double q8_0, f16, bf16, f32;
};
const std::map<std::pair<int64_t, int64_t>, Anchor> kLlamaCpp = {
    {{14336, 4096}, {3.310, 5.354, 5.491, 9.060}},
    {{4096, 4096}, {0.873, 1.414, 1.566, 2.304}},
};

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// As the CPU backend allocates weights (huge pages where the system has them).
Buffer alloc(size_t bytes) {
  return Buffer(static_cast<uint8_t*>(mx8::cpu::huge_page_alloc(bytes)));
}

enum class WType { fp8_block, mxfp8, fp8_block_avx2, fp8_block_lut, bf16, f32 };
const char* wtype_name(WType t) {
  switch (t) {
    case WType::fp8_block:
      return "fp8 e4m3 128x128 ue8m0";
    case WType::mxfp8:
      return "mxfp8 e4m3 1x32 ue8m0";
    case WType::fp8_block_avx2:
      return "fp8 128x128, AVX2 kernel";
    case WType::fp8_block_lut:
      return "fp8 128x128, table decode";
    case WType::bf16:
      return "bf16";
    case WType::f32:
      return "f32";
  }
  return "?";
}

// One weight copy of a type, filled with plausible random data.
struct Weights {
  Buffer data, scales;
  size_t bytes = 0;  // weight bytes read per product (codes + scales)
  mx8::cpu::Fp8Matrix fp8;
};

Weights make_weights(WType t, int64_t n, int64_t k, uint64_t seed, ThreadPool* pool) {
  Weights w;
  const size_t count = size_t(n * k);
  const size_t elem = t == WType::f32 ? 4 : t == WType::bf16 ? 2 : 1;
  w.data = alloc(count * elem);
  uint8_t* base = w.data.get();
  mx8::cpu::parallel_for(pool, count, 1 << 20, [&](size_t b, size_t e) {
    bench::Rng rng(seed + b);
    for (size_t i = b; i < e; ++i) {
      if (elem == 1) {
        uint8_t c = uint8_t(rng.next() >> 56);
        if ((c & 0x7F) == 0x7F) c ^= 1;  // never the NaN code
        base[i] = c;
      } else {
        float v = rng.normal(0.02f);
        if (elem == 4) {
          std::memcpy(base + i * 4, &v, 4);
        } else {
          uint16_t h = uint16_t(__builtin_bit_cast(uint32_t, v) >> 16);
          std::memcpy(base + i * 2, &h, 2);
        }
      }
    }
  });
  w.bytes = count * elem;
  if (elem == 1) {
    const bool mx = t == WType::mxfp8;
    w.fp8.codes = base;
    w.fp8.rows = n;
    w.fp8.cols = k;
    w.fp8.block_rows = mx ? 1 : 128;
    w.fp8.block_cols = mx ? 32 : 128;
    w.fp8.scale_storage = mx8::format::ScaleStorage::ue8m0;
    const size_t grid = size_t((n + w.fp8.block_rows - 1) / w.fp8.block_rows *
                               ((k + w.fp8.block_cols - 1) / w.fp8.block_cols));
    w.scales = alloc(grid);
    bench::Rng rng(seed ^ 0xABCDEF);
    for (size_t i = 0; i < grid; ++i) w.scales.get()[i] = uint8_t(112 + rng.next() % 8);  // 2^-15 .. 2^-8
    w.fp8.scales = w.scales.get();
    w.bytes += grid;
  }
  return w;
}

void run_product(WType t, const Weights& w, const float* x, int64_t m, int64_t n, int64_t k, float* y,
                 ThreadPool* pool) {
  switch (t) {
    case WType::fp8_block:
    case WType::mxfp8:
    case WType::fp8_block_avx2:
    case WType::fp8_block_lut:
      mx8::cpu::gemv_fp8(x, m, w.fp8, y, pool);
      break;
    case WType::bf16:
      mx8::cpu::gemv_bf16(x, m, reinterpret_cast<const uint16_t*>(w.data.get()), n, k, y, pool);
      break;
    case WType::f32:
      mx8::cpu::gemv_f32(x, m, reinterpret_cast<const float*>(w.data.get()), n, k, y, pool);
      break;
  }
}

struct Row {
  int64_t n, k, m;
  int threads;
  WType type;
  double ms, gbps, floor_ms, gflops;
  double anchor_ms;  // llama.cpp, < 0 when none
  double cpu_gbps;   // weight bytes per CPU-second of all threads
};

using mx8::cli::fmt;

void run(const Options& o) {
  auto shapes_txt = o.shapes;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  {
    std::stringstream ss(shapes_txt);
    std::string item;
    while (std::getline(ss, item, ',')) {
      long long n, k;
      char xch;
      std::stringstream is(item);
      if (!(is >> n >> xch >> k) || xch != 'x' || n <= 0 || k <= 0 || !is.eof())
        throw mx8::Error("--shapes: expected NxK[,NxK...], got '" + o.shapes + "'");
      shapes.push_back({n, k});
    }
  }
  const auto ms = bench::parse_int_list(o.ms, "--m");
  const auto threads = bench::parse_int_list(o.threads, "--threads");

  std::printf("mx8 bench gemv: y[M,N] = x[M,K] W[N,K]^T, ISA %s, cold weights (>= %zu MiB of copies)\n",
              mx8::cpu::isa_name(mx8::cpu::active_isa()), o.cold_bytes >> 20);
  std::map<int, double> read_bw;
  std::map<int, std::unique_ptr<ThreadPool>> pools;
  for (int64_t t : threads) {
    pools[int(t)] = std::make_unique<ThreadPool>(int(t));
    read_bw[int(t)] = bench::measure_read_gbps(pools[int(t)].get(), size_t(512) << 20);
    std::printf("read-only bandwidth, %lld thread(s): %.1f GB/s\n", (long long)t, read_bw[int(t)]);
  }

  std::vector<Row> rows;
  std::vector<WType> types = {WType::fp8_block, WType::mxfp8, WType::bf16, WType::f32};
  if (o.lut && mx8::cpu::active_isa() != mx8::cpu::Isa::scalar)
    types.insert(types.begin() + 2, WType::fp8_block_lut);
  // On AVX-512 machines, also the AVX2 kernel (what an AVX2-only machine, like cpu-anchor.md's, runs).
  if (mx8::cpu::active_isa() == mx8::cpu::Isa::avx512) types.insert(types.begin() + 2, WType::fp8_block_avx2);
  for (const auto& shape : shapes) {
    const int64_t n = shape.first, k = shape.second;  // not a binding: clang 14's lambdas cannot capture one
    for (WType t : types) {
      mx8::cpu::detail::g_fp8_table_decode = t == WType::fp8_block_lut;
      ThreadPool* fill_pool = pools.rbegin()->second.get();
      Weights first = make_weights(t, n, k, 1, fill_pool);
      const size_t copies = std::max<size_t>(1, (o.cold_bytes + first.bytes - 1) / first.bytes);
      std::vector<Weights> ws;
      ws.push_back(std::move(first));
      for (size_t c = 1; c < copies; ++c) ws.push_back(make_weights(t, n, k, 1 + c, fill_pool));
      const int64_t max_m = *std::max_element(ms.begin(), ms.end());
      std::vector<float> x(size_t(max_m * k)), y(size_t(max_m * n));
      bench::Rng rng(7);
      for (auto& v : x) v = rng.normal(1.f);
      for (int64_t th : threads) {
        for (int64_t m : ms) {
          if ((t == WType::fp8_block_lut || t == WType::fp8_block_avx2) && m != 1) continue;
          std::optional<mx8::cpu::ScopedIsa> isa;
          if (t == WType::fp8_block_avx2) isa.emplace(mx8::cpu::Isa::avx2);
          ThreadPool* pool = pools[int(th)].get();
          size_t next = 0;
          bench::Timing timing = bench::median_timing(
              [&] {
                run_product(t, ws[next], x.data(), m, n, k, y.data(), pool);
                next = (next + 1) % ws.size();
              },
              o.min_time);
          const double t_ms = timing.wall_ms;
          Row r{n,
                k,
                m,
                int(th),
                t,
                t_ms,
                double(ws[0].bytes) / (t_ms * 1e6),
                double(ws[0].bytes) / (read_bw[int(th)] * 1e6),
                2.0 * double(m * n * k) / (t_ms * 1e6),
                -1,
                double(ws[0].bytes) / (timing.cpu_ms * 1e6)};
          if (auto it = kLlamaCpp.find({n, k}); it != kLlamaCpp.end() && m == 1 && th == 2) {
            const Anchor& a = it->second;
            r.anchor_ms = (t == WType::bf16) ? a.bf16 : (t == WType::f32) ? a.f32 : a.q8_0;
          }
          rows.push_back(r);
          std::printf(
              "%6lldx%-6lld M=%-3lld %dT %-28s %8.3f ms %6.1f GB/s (%5.1f per CPU-s)  floor %.3f ms "
              "(%3.0f%%)%s\n",
              (long long)n, (long long)k, (long long)m, int(th), wtype_name(t), r.ms, r.gbps, r.cpu_gbps,
              r.floor_ms, 100.0 * r.floor_ms / r.ms,
              r.anchor_ms > 0 ? (" llama.cpp " + fmt("%.2f", r.anchor_ms) + " ms").c_str() : "");
          std::fflush(stdout);
        }
      }
      mx8::cpu::detail::g_fp8_table_decode = false;
    }
  }

  // Markdown for docs/PERF.md.
  std::string md;
  md += "## CPU GEMV (`mx8 bench gemv`)\n\n";
  md += "Machine: " + mx8::cli::machine_description() + "; ISA " +
        mx8::cpu::isa_name(mx8::cpu::active_isa()) + ". Date: " + mx8::cli::today_utc() +
        ". Command: `mx8 bench gemv --shapes " + o.shapes + " --m " + o.ms + " --threads " + o.threads +
        "`.\n\n";
  md += "y[M,N] = x[M,K] W[N,K]^T, x and y f32. Weights are cold (a rotation of copies totalling >= " +
        std::to_string(o.cold_bytes >> 20) +
        " MiB, so every product streams W from DRAM, like decode). GB/s counts weight bytes (codes + "
        "scales). Floor = weight bytes / read-only bandwidth measured in the same run (";
  for (auto& [t, bw] : read_bw) md += std::to_string(t) + " thread(s): " + fmt("%.1f", bw) + " GB/s; ";
  md +=
      "). llama.cpp = the recorded figure of cpu-anchor.md (n=1, cold, 2 threads; the FP8 rows are "
      "compared with its Q8_0, the closest one-byte format). Median of repeated runs. \"Per CPU-s\" divides "
      "the "
      "weight bytes by the CPU time of all threads: what the cores deliver while running, robust to a shared "
      "machine (it is not a wall-clock speed).\n\n";
  md +=
      "| N x K | M | threads | weights | ms | weight GB/s | per CPU-s | GFLOP/s | floor ms | % of floor | "
      "llama.cpp ms | llama.cpp / mx8 |\n";
  md += "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows) {
    md += "| " + std::to_string(r.n) + " x " + std::to_string(r.k) + " | " + std::to_string(r.m) + " | " +
          std::to_string(r.threads) + " | " + wtype_name(r.type) + " | " + fmt("%.3f", r.ms) + " | " +
          fmt("%.1f", r.gbps) + " | " + fmt("%.1f", r.cpu_gbps) + " | " + fmt("%.1f", r.gflops) + " | " +
          fmt("%.3f", r.floor_ms) + " | " + fmt("%.0f%%", 100.0 * r.floor_ms / r.ms) + " | " +
          (r.anchor_ms > 0 ? fmt("%.2f", r.anchor_ms) : "") + " | " +
          (r.anchor_ms > 0 ? fmt("%.2fx", r.anchor_ms / r.ms) : "") + " |\n";
  }
  md += "\nLoad average when the run started: " + mx8::cli::load_average() +
        " (other work on the same cores lowers wall-clock figures; run-to-run spread is ~12% even when idle, "
        "cpu-anchor.md).\n";
  if (o.perf.write) {
    std::string path = o.perf.path();
    mx8::cli::update_perf_section(path, "cpu-gemv", md);
    std::printf("updated %s (section cpu-gemv)\n", path.c_str());
  }
}

mx8::cli::CommandRegistration reg{
    "bench gemv", "CPU FP8/MXFP8/bf16/f32 matrix-vector products at LLM decode shapes", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--shapes", o->shapes, "weight shapes NxK, comma-separated")->capture_default_str();
      app.add_option("--m", o->ms, "activation rows M (tokens), comma-separated")->capture_default_str();
      app.add_option("--threads", o->threads, "thread counts, comma-separated")->capture_default_str();
      app.add_option("--min-time", o->min_time, "seconds per case")
          ->capture_default_str()
          ->check(CLI::Range(0.01, 3600.0));
      app.add_flag("!--no-lut", o->lut, "skip the table-decode FP8 variant");
      o->perf.add_options(app);
      return [o] { run(*o); };
    }};

}  // namespace
