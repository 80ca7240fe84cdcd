// `mx8 bench attention`: the CPU backend's paged attention alone, Llama-3-8B's shape (32 query heads,
// 8 kv heads of 128), one layer: a decode step (one token after `context` positions) and a prompt
// chunk (the last `--chunk` tokens of the context), per KV format. The floors measured in the same
// run: reading the K/V bytes once at the machine's read bandwidth (decode), and two FMAs per
// position, query head and head dimension at the machine's measured FMA rate (prompt chunk). Writes
// the cpu-attention section of docs/PERF.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <memory>
#include <string>
#include <vector>

#include "cli/bench_cpu_util.h"
#include "cli/command.h"
#include "cli/perf_report.h"
#include "mx8/backend/backend.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/error.h"

namespace {

using mx8::backend::AttentionArgs;
using mx8::backend::KvFormat;
namespace bench = mx8::cli::bench;
using mx8::cli::fmt;

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128, kPageSize = 16;

struct Options {
  std::string contexts = "1024,8192,32768";
  std::string formats = "bf16,fp8";
  int chunk = 256;
  int threads = 2;
  double min_time = 1.0;
  mx8::cli::PerfMdTarget perf;
};

#if defined(__x86_64__)
// Independent FMA chains of 8 or 16 lanes (ten hide the FMA latency): the peak the score and output
// kernels can approach, AVX2's and AVX-512's.
__attribute__((target("avx2,fma"))) double fma_chains8(int64_t iters) {
  __m256 a[10];
  for (int i = 0; i < 10; ++i) a[i] = _mm256_set1_ps(float(i));
  const __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
  for (int64_t k = 0; k < iters; ++k)
    for (int i = 0; i < 10; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  float sum = 0;
  for (int i = 0; i < 10; ++i) sum += a[i][0];
  return double(sum);
}

__attribute__((target("avx512f"))) double fma_chains16(int64_t iters) {
  __m512 a[10];
  for (int i = 0; i < 10; ++i) a[i] = _mm512_set1_ps(float(i));
  const __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
  for (int64_t k = 0; k < iters; ++k)
    for (int i = 0; i < 10; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  float sum = 0;
  for (int i = 0; i < 10; ++i) sum += a[i][0];
  return double(sum);
}

// GFLOP/s of `lanes`-lane FMA chains on every thread of the pool, best of 3; 0 where the CPU has none.
double measure_fma_gflops(mx8::cpu::ThreadPool* pool, int lanes) {
  if (!mx8::cpu::isa_supported(lanes == 16 ? mx8::cpu::Isa::avx512 : mx8::cpu::Isa::avx2)) return 0;
  const int64_t iters = 20'000'000;
  double best = 0;
  volatile double sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = bench::now_s();
    mx8::cpu::parallel_for(pool, size_t(pool->threads()), 1, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) sink = sink + (lanes == 16 ? fma_chains16(iters) : fma_chains8(iters));
    });
    const double flops = double(pool->threads()) * double(iters) * 10 * lanes * 2;
    best = std::max(best, flops / (bench::now_s() - t0) / 1e9);
  }
  return best;
}
#else
double measure_fma_gflops(mx8::cpu::ThreadPool*, int) {
  return 0;
}
#endif

struct Row {
  std::string format;
  int context, tokens;
  double ms, gflops, kv_gbps, floor_fraction;
};

void run(const Options& o) {
  const auto contexts = bench::parse_int_list(o.contexts, "--contexts");
  std::vector<KvFormat> formats;
  for (int64_t i = 0, n = 0; i <= int64_t(o.formats.size()); ++i)
    if (i == int64_t(o.formats.size()) || o.formats[size_t(i)] == ',') {
      const std::string name = o.formats.substr(size_t(n), size_t(i - n));
      n = i + 1;
      if (name == "bf16")
        formats.push_back(KvFormat::bf16);
      else if (name == "fp8")
        formats.push_back(KvFormat::fp8);
      else if (name == "f32")
        formats.push_back(KvFormat::f32);
      else
        throw mx8::Error("--formats: unknown KV format '" + name + "' (bf16, fp8, f32)");
    }
  for (int64_t c : contexts)
    if (c < o.chunk || c > (1 << 20)) throw mx8::Error("--contexts: each must be in --chunk .. 1048576");

  auto backend = mx8::backend::make_cpu_backend(o.threads);
  mx8::cpu::ThreadPool pool(o.threads);
  const double read_gbps = bench::measure_read_gbps(&pool, size_t(512) << 20);
  // The FMA width of the active ISA's score and output kernels (16 lanes on AVX-512).
  const int lanes = mx8::cpu::active_isa() == mx8::cpu::Isa::avx512 ? 16 : 8;
  const double peak_gflops = measure_fma_gflops(&pool, lanes);
  std::printf("mx8 bench attention: %d heads, %d kv heads of %d, pages of %d, %d thread(s), ISA %s\n", kHeads,
              kKvHeads, kHeadDim, kPageSize, o.threads, mx8::cpu::isa_name(mx8::cpu::active_isa()));
  std::printf("read bandwidth %.1f GB/s; %d-lane FMA peak %.0f GFLOP/s\n", read_gbps, lanes, peak_gflops);

  std::vector<Row> rows;
  for (KvFormat f : formats)
    for (int64_t context : contexts) {
      const int len = int(context), pages = (len + kPageSize - 1) / kPageSize;
      auto cache = backend->create_kv_cache({f, 1, kKvHeads, kHeadDim, kPageSize, pages});
      // Fill the cache in chunks (the whole context's K/V in one buffer would be large).
      bench::Rng rng(7);
      std::vector<float> k(size_t(4096) * kKvHeads * kHeadDim), v(k.size());
      std::vector<int32_t> slots(4096);
      for (int p0 = 0; p0 < len; p0 += 4096) {
        const int n = std::min(4096, len - p0);
        for (size_t i = 0; i < size_t(n) * kKvHeads * kHeadDim; ++i)
          k[i] = rng.normal(1), v[i] = rng.normal(1);
        for (int i = 0; i < n; ++i) slots[size_t(i)] = p0 + i;
        backend->kv_write(*cache, 0, k.data(), v.data(), slots.data(), n);
      }
      std::vector<int32_t> table(static_cast<size_t>(pages));
      for (int p = 0; p < pages; ++p) table[size_t(p)] = p;
      for (int tokens : {1, o.chunk}) {
        std::vector<float> q(size_t(tokens) * kHeads * kHeadDim), out(q.size());
        for (float& x : q) x = rng.normal(0.1f);
        std::vector<int32_t> seq(size_t(tokens), 0), kv_len(seq.size());
        for (int t = 0; t < tokens; ++t) kv_len[size_t(t)] = len - tokens + 1 + t;
        AttentionArgs a;
        a.q = q.data();
        a.out = out.data();
        a.n_tokens = tokens;
        a.n_heads = kHeads;
        a.n_kv_heads = kKvHeads;
        a.head_dim = kHeadDim;
        a.scale = 1 / std::sqrt(float(kHeadDim));
        a.layer = 0;
        a.seq = seq.data();
        a.kv_len = kv_len.data();
        a.block_tables = table.data();
        a.max_pages_per_seq = pages;
        const double ms = bench::median_ms([&] { backend->attention(*cache, a); }, o.min_time, 3);
        double flops = 0;
        for (int32_t l : kv_len) flops += 4.0 * l * kHeads * kHeadDim;  // q.k and p.v: an FMA each
        const double elem = f == KvFormat::f32 ? 4 : f == KvFormat::bf16 ? 2 : 1 + 1.0 / 128;
        const double kv_bytes = 2.0 * len * kKvHeads * kHeadDim * elem;
        const std::string name = mx8::backend::kv_format_name(f);
        Row r{name.substr(0, name.find(' ')), len, tokens, ms, flops / ms / 1e6, kv_bytes / ms / 1e6, 0};
        r.floor_fraction = tokens == 1       ? (kv_bytes / read_gbps / 1e6) / ms
                           : peak_gflops > 0 ? r.gflops / peak_gflops
                                             : 0;
        rows.push_back(r);
        std::printf(
            "%-6.6s context %6d, %4d token(s): %9.3f ms  %6.1f GFLOP/s  %6.1f GB/s of K/V  %3.0f%% of "
            "floor\n",
            r.format.c_str(), len, tokens, ms, r.gflops, r.kv_gbps, 100 * r.floor_fraction);
      }
    }

  std::string md = "### Attention, CPU (`mx8 bench attention`)\n\n";
  md += "Machine: " + mx8::cli::machine_description() + ", ISA " +
        mx8::cpu::isa_name(mx8::cpu::active_isa()) + ", " + std::to_string(o.threads) +
        " thread(s). Date: " + mx8::cli::today_utc() + ". Command: `mx8 bench attention --contexts " +
        o.contexts + " --formats " + o.formats + " --chunk " + std::to_string(o.chunk) + " --threads " +
        std::to_string(o.threads) + "`.\n\n";
  md +=
      "One layer of Llama-3-8B's attention (32 query heads, 8 kv heads of 128, pages of 16) over `context` "
      "cached positions: a decode step (1 token) and a prompt chunk (the context's last tokens, causal). "
      "Floor: decode, the K/V bytes read once at the read bandwidth measured in the same run (" +
      fmt("%.1f", read_gbps) +
      " GB/s); prompt chunk, an FMA per (position, query head, head dimension) for q.k and for p.v at the " +
      std::to_string(lanes) + "-lane FMA rate measured in the same run (" + fmt("%.0f", peak_gflops) +
      " GFLOP/s: independent FMA chains on every thread).\n\n";
  md += "| KV | context | tokens | ms | GFLOP/s | K/V GB/s | fraction of floor |\n";
  md += "|---|---:|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows)
    md += "| " + r.format + " | " + std::to_string(r.context) + " | " + std::to_string(r.tokens) + " | " +
          fmt("%.3f", r.ms) + " | " + fmt("%.1f", r.gflops) + " | " + fmt("%.1f", r.kv_gbps) + " | " +
          fmt("%.2f", r.floor_fraction) + " |\n";
  md += "\nLoad average when the run ended: " + mx8::cli::load_average() + ".\n";
  if (o.perf.write) {
    const std::string path = o.perf.path();
    mx8::cli::update_perf_section(path, "cpu-attention", md);
    std::printf("updated %s (section cpu-attention)\n", path.c_str());
  }
}

mx8::cli::CommandRegistration reg{
    "bench attention",
    "CPU paged attention alone: a decode step and a prompt chunk per context and KV format",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--contexts", o->contexts, "cached positions, comma-separated")->capture_default_str();
      app.add_option("--formats", o->formats, "KV formats, comma-separated: bf16, fp8, f32")
          ->capture_default_str();
      app.add_option("--chunk", o->chunk, "prompt chunk tokens")
          ->capture_default_str()
          ->check(CLI::Range(2, 4096));
      app.add_option("--threads", o->threads, "threads")->capture_default_str()->check(CLI::Range(1, 256));
      app.add_option("--min-time", o->min_time, "seconds per case")
          ->capture_default_str()
          ->check(CLI::Range(0.01, 3600.0));
      o->perf.add_options(app);
      return [o] { run(*o); };
    }};

}  // namespace
