// `mx8 bench gemv-cuda`: the CUDA backend's weight-streaming GEMV (launch_gemv_group, f32
// activations, FP8 / BF16 / MXFP8 weights) on the Llama-3-8B decode shapes, grouped as the model calls
// them, and on the six DeepSeek-V3 (N, K) shapes of issue 4 at M = 1..16, against the measured device
// copy bandwidth and cuBLASLt's BF16 GEMM of the same product. Prints tables and rewrites its section
// of docs/PERF.md. CUDA builds only (the file compiles to nothing elsewhere).
#if defined(MX8_HAVE_CUDA)

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/bench_util.h"
#include "backend/cuda/cublaslt/cublaslt_baseline.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemv_tuning.h"
#include "cli/command.h"
#include "cli/perf_report.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"

namespace {

using namespace mx8::backend;
using mx8::backend::cuda_impl::GemvTuning;

struct Options {
  int iters = 30;
  bool ab = false;
  bool deepseek = true;
  mx8::cli::PerfMdTarget perf;
};

// Device memory released at scope exit.
struct Buf {
  void* p = nullptr;
  explicit Buf(size_t bytes) { MX8_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 16)); }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// A random weight of `f` (UE8M0 scales): the element bytes are bf16 noise (for E4M3 the bytes of
// bf16 values read as codes, a spread of magnitudes; a few may be NaN codes, which cost the decode
// nothing extra), scales 2^-7. Speed does not depend on the values.
struct DevWeight {
  std::unique_ptr<Buf> data, scales;
  WeightView view;
  size_t bytes = 0;  // data + scales
  DevWeight(WeightFormat f, int64_t n, int64_t k, uint64_t seed) {
    const size_t db = weight_data_bytes(f, n, k), sb = weight_scale_bytes(f, ScaleType::ue8m0, n, k);
    data = std::make_unique<Buf>(db);
    scales = std::make_unique<Buf>(sb);
    mx8::cuda::fill_random_bf16(static_cast<uint16_t*>(data->p), db / 2, seed, 0.05f, nullptr);
    if (sb) MX8_CUDA_CHECK(cudaMemset(scales->p, 127 - 7, sb));
    view = WeightView{f, n, k, data->p, sb ? scales->p : nullptr, ScaleType::ue8m0};
    bytes = db + sb;
  }
};

using mx8::cli::fmt;

const char* short_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32:
      return "f32";
    case WeightFormat::bf16:
      return "bf16";
    case WeightFormat::fp8_block:
      return "fp8 128x128";
    case WeightFormat::mxfp8:
      return "mxfp8";
  }
  return "?";
}

// One timed product: targets sharing an input of m rows (x f32 [m][k], x_up when swiglu); pair: the
// two targets are gate and up, and the launch writes silu(gate) * up (matmul_swiglu's paired kernel).
struct Case {
  std::string name;
  std::vector<int64_t> ns;
  int64_t k;
  bool swiglu, accumulate;
  bool pair = false;
};

class Runner {
 public:
  Runner(const Options& o) : o_(o) {
    copy_bw_ = mx8::cuda::GpuTimer().copy_bandwidth();
    cudaDeviceProp prop{};
    int dev = 0;
    MX8_CUDA_CHECK(cudaGetDevice(&dev));
    MX8_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    char b[512];
    std::snprintf(b, sizeof b, "%s, %d SMs; measured D2D copy %.0f GB/s (read + write)", prop.name,
                  prop.multiProcessorCount, copy_bw_ / 1e9);
    gpu_ = b;
  }
  double copy_bw() const { return copy_bw_; }
  const std::string& gpu() const { return gpu_; }

  // Median microseconds of the mx8 launch, and the weight bytes streamed; with `kernel_us`, also the
  // median kernel time (GpuTimer::median_kernel_us).
  std::pair<double, double> time_mx8(WeightFormat f, const Case& c, int64_t m, const GemvTuning* tn,
                                     bool clean = true, double* kernel_us = nullptr) {
    std::vector<std::unique_ptr<DevWeight>> ws;
    std::vector<std::unique_ptr<Buf>> ys;
    std::vector<MatmulTarget> ts;
    double bytes = 0;
    for (size_t i = 0; i < c.ns.size(); ++i) {
      ws.push_back(std::make_unique<DevWeight>(f, c.ns[i], c.k, 1000 + i * 7 + uint64_t(c.k)));
      ys.push_back(std::make_unique<Buf>(size_t(m * c.ns[i]) * 4));
      MX8_CUDA_CHECK(cudaMemset(ys.back()->p, 0, size_t(m * c.ns[i]) * 4));
      ts.push_back(MatmulTarget{ws.back()->view, static_cast<float*>(ys.back()->p), nullptr});
      bytes += double(ws.back()->bytes);
    }
    Buf x(size_t(m * c.k) * 4), up(size_t(m * c.k) * 4);
    MX8_CUDA_CHECK(cudaMemset(x.p, 0, size_t(m * c.k) * 4));  // zeros: silu(0) * 0 stays finite
    MX8_CUDA_CHECK(cudaMemset(up.p, 0, size_t(m * c.k) * 4));
    MatmulInput in{static_cast<const float*>(x.p), c.swiglu ? static_cast<const float*>(up.p) : nullptr, m,
                   c.accumulate};
    if (!cuda_impl::gemv_group_applies(in, ts.data(), int(ts.size())))
      throw mx8::Error("bench gemv-cuda: the grouped GEMV does not apply to " + c.name);
    auto launch = [&] {
      if (c.pair) {
        if (tn || !cuda_impl::launch_gemv_swiglu(in, ts[0], ts[1], nullptr))
          throw mx8::Error("bench gemv-cuda: the paired SwiGLU GEMV does not apply to " + c.name);
      } else if (tn)
        cuda_impl::launch_gemv_group_tuned(in, ts.data(), int(ts.size()), *tn, nullptr);
      else
        cuda_impl::launch_gemv_group(in, ts.data(), int(ts.size()), nullptr);
    };
    const double us = timer_.median_us(launch, o_.iters, 3, clean);
    if (kernel_us) *kernel_us = timer_.median_kernel_us(launch, o_.iters);
    return {us, bytes};
  }

  // The peer that only reads: median microseconds of the fastest plain streaming read (read_once
  // with 1, 2, 4 or 8 blocks per SM) of `bytes`, timed as the products are. No kernel that reads the
  // bytes once, from a cold L2, in one launch, does better by much; at a few MB the launch and the
  // first loads' latency are most of it.
  // `kernel`: the same by kernel times (the fastest read by that measure).
  double time_read(double bytes, bool kernel = false) {
    const size_t n = size_t(bytes) / 16 * 16;
    auto& cache = kernel ? read_kernel_us_ : read_us_;
    if (auto it = cache.find(n); it != cache.end()) return it->second;
    if (!read_buf_ || read_cap_ < n) {
      read_buf_.reset();
      read_buf_ = std::make_unique<Buf>(n);
      MX8_CUDA_CHECK(cudaMemset(read_buf_->p, 1, n));
      read_cap_ = n;
    }
    double best = INFINITY;
    for (int bps : {1, 2, 4, 8}) {
      auto read = [&] { mx8::cuda::read_once(read_buf_->p, n, bps, nullptr); };
      const double us = kernel ? timer_.median_kernel_us(read, o_.iters) : timer_.median_us(read, o_.iters);
      if (std::isnan(us)) return us;  // no kernel clock here
      best = std::min(best, us);
    }
    cache[n] = best;
    return best;
  }

  // cuBLASLt BF16 GEMM of the same product (the targets' rows concatenated), or NaN when it fails.
  double time_cublas_bf16(const Case& c, int64_t m) {
    int64_t n = 0;
    for (int64_t v : c.ns) n += v;
    try {
      Buf a(size_t(m * c.k) * 2), b(size_t(n * c.k) * 2), d(size_t(m * n) * 2);
      mx8::cuda::fill_random_bf16(static_cast<uint16_t*>(a.p), size_t(m * c.k), 1, 1.0f, nullptr);
      mx8::cuda::fill_random_bf16(static_cast<uint16_t*>(b.p), size_t(n * c.k), 2, 0.05f, nullptr);
      return timer_.median_us([&] { lt_.gemm_bf16(a.p, b.p, d.p, int(m), int(n), int(c.k), nullptr); },
                              o_.iters);
    } catch (const mx8::Error& e) {
      std::printf("cuBLASLt BF16 %s m %lld: %s\n", c.name.c_str(), (long long)m, e.what());
      return NAN;
    }
  }

 private:
  const Options& o_;
  mx8::cuda::GpuTimer timer_;
  mx8::cuda::CublasLtBaseline lt_;
  double copy_bw_ = 0;
  std::string gpu_;
  std::unique_ptr<Buf> read_buf_;
  size_t read_cap_ = 0;
  std::map<size_t, double> read_us_, read_kernel_us_;
};

// Llama-3-8B, batch 1, grouped as the model's decode step calls the backend.
const Case kDecode[] = {
    {"q/k/v (3 targets)", {4096, 1024, 1024}, 4096, false, false},
    {"o-proj", {4096}, 4096, false, false},
    {"gate/up (2 targets)", {14336, 14336}, 4096, false, false},
    {"gate/up, silu(g) * u out", {14336, 14336}, 4096, false, false, true},
    {"down (SwiGLU in, += out)", {4096}, 14336, true, true},
    {"down (h in, += out)", {4096}, 14336, false, true},
    {"lm_head", {128256}, 4096, false, false},
};

// DeepSeek-V3's projection shapes (issue 4; the same list as `mx8 bench cuda-gemv`).
const Case kDeepSeek[] = {{"", {2112}, 7168, false, false}, {"", {24576}, 1536, false, false},
                          {"", {32768}, 512, false, false}, {"", {7168}, 16384, false, false},
                          {"", {4096}, 7168, false, false}, {"", {7168}, 2048, false, false}};

std::string shape_str(const Case& c) {
  std::string s;
  for (size_t i = 0; i < c.ns.size(); ++i) s += (i ? "+" : "") + std::to_string(c.ns[i]);
  return s + " x " + std::to_string(c.k);
}

void run(const Options& o) {
  if (!mx8::cuda::device_available()) throw mx8::Error("bench gemv-cuda: no CUDA device on this machine");
  Runner r(o);
  const double bw = r.copy_bw();
  std::ostringstream md;
  md << "### CUDA GEMV (weight streaming, f32 activations)\n\n"
     << mx8::cli::today_utc() << " - " << r.gpu() << "\n\n`mx8 bench gemv-cuda" << (o.ab ? " --ab" : "")
     << "`\n\nTimes are medians of " << o.iters
     << " CUDA-event timings of one launch, L2 flushed before each by a 512 MB memset followed by a "
        "256 MB read (a write-only flush leaves L2 full of dirty lines whose write-back the timed "
        "product would pay: column `dirty L2 us`, mx8 after the memset alone). GB/s counts the weight "
        "bytes (elements + scales) read once; `% copy` = that rate / the D2D copy bandwidth measured in "
        "the same run. `read us` is the peer that only reads: the fastest of four plain streaming reads of "
        "the same bytes (one launch, the same flush; at a few MB the launch and the first loads' latency "
        "are most of it), and `of read` = its time / mx8's. cuBLASLt BF16 is the same product as one BF16 "
        "GEMM (targets' rows concatenated), x in BF16; `x` = its time / mx8's. The `kernel` columns time "
        "mx8 and the read again by the GPU's record of each kernel (CUPTI's activity trace, the same flush): "
        "without the launch latency and event overhead (2-3 us here) of the event timings, what the kernel "
        "itself "
        "streams.\n\n";
  std::printf("%s\n", r.gpu().c_str());

  // 1. The decode shapes at M = 1.
  md << "Llama-3-8B decode step, M = 1 (one launch per row: the grouped targets share the launch):\n\n"
     << "| product | N x K | weights | mx8 us | GB/s | % copy | read us | of read | dirty L2 us | cuBLASLt "
        "BF16 us | x | mx8 kernel us | % copy, kernel |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::printf("\n%-26s %-24s %-12s %9s %8s %7s %8s %7s %9s %10s %7s\n", "product", "N x K", "weights",
              "mx8 us", "GB/s", "%copy", "read us", "of rd", "dirty us", "ltBF16 us", "x");
  for (const Case& c : kDecode) {
    const double lt = r.time_cublas_bf16(c, 1);
    for (WeightFormat f : {WeightFormat::fp8_block, WeightFormat::mxfp8, WeightFormat::bf16}) {
      if (c.pair && f != WeightFormat::fp8_block) continue;  // the paired kernel is the FP8 GEMV's
      double kus = NAN;
      const auto [us, bytes] = r.time_mx8(f, c, 1, nullptr, true, &kus);
      const double gbs = bytes / us * 1e-3, frac = gbs * 1e9 / bw, kfrac = bytes / (kus * 1e-6) / bw;
      const double dirty = r.time_mx8(f, c, 1, nullptr, false).first;
      const double rd = r.time_read(bytes);
      std::printf("%-26s %-24s %-12s %9.1f %8.0f %6.0f%% %8.1f %6.0f%% %9.1f %10.1f %6.2fx\n", c.name.c_str(),
                  shape_str(c).c_str(), short_name(f), us, gbs, 100 * frac, rd, 100 * rd / us, dirty, lt,
                  lt / us);
      std::fflush(stdout);
      md << "| " << c.name << " | " << shape_str(c) << " | " << short_name(f) << " | " << fmt("%.1f", us)
         << " | " << fmt("%.0f", gbs) << " | " << fmt("%.0f%%", 100 * frac) << " | " << fmt("%.1f", rd)
         << " | " << fmt("%.0f%%", 100 * rd / us) << " | " << fmt("%.1f", dirty) << " | " << fmt("%.1f", lt)
         << " | " << fmt("%.2fx", lt / us) << " | " << fmt("%.1f", kus) << " | " << fmt("%.0f%%", 100 * kfrac)
         << " |\n";
    }
  }

  // 2. A/B of the kernel knobs.
  if (o.ab) {
    struct V {
      int r, u, t, s;
      bool hint;
    };
    const V vs[] = {{4, 2, 0, 0, false},  {8, 1, 0, 0, false}, {8, 1, 0, 0, true},  {4, 1, 0, 5, false},
                    {4, 1, 0, 5, true},   {2, 2, 0, 5, false}, {8, 1, 0, 2, false}, {4, 1, 0, 3, false},
                    {4, 1, 32, 5, false}, {4, 1, 64, 5, false}};
    md << "\nA/B of the kernel knobs, M = 1 (R rows per thread group, U 16-byte chunks per row per round, T "
          "threads per row (0 = heuristic), S shared-memory stages (0 = next round in registers, 256-thread "
          "blocks; S > 0 = cp.async S rounds deep, 128-thread blocks), +L2::256B = weight loads with that "
          "hint):\n\n"
          "| product | weights | R | U | T | S | us | % copy |\n|---|---|---:|---:|---:|---:|---:|---:|\n";
    std::printf("\nA/B\n");
    for (const Case& c : kDecode)
      for (WeightFormat f : {WeightFormat::fp8_block, WeightFormat::bf16})
        for (const V& v : vs) {
          if (c.pair) continue;  // no knobs
          GemvTuning tn;
          tn.rows = v.r;
          tn.unroll = v.u;
          tn.threads = v.t;
          tn.stages = v.s;
          tn.l2_hint = v.hint;
          const auto [us, bytes] = r.time_mx8(f, c, 1, &tn);
          const double frac = bytes / (us * 1e-6) / bw;
          std::printf("%-26s %-12s R %d U %d T %3d S %d%s %9.1f %6.0f%%\n", c.name.c_str(), short_name(f),
                      v.r, v.u, v.t, v.s, v.hint ? " L2::256B" : "", us, 100 * frac);
          std::fflush(stdout);
          md << "| " << c.name << " | " << short_name(f) << " | " << v.r << " | " << v.u << " | " << v.t
             << " | " << v.s << (v.hint ? " +L2::256B" : "") << " | " << fmt("%.1f", us) << " | "
             << fmt("%.0f%%", 100 * frac) << " |\n";
        }
  }

  // 3. Issue 4: skinny products M = 1..16 on DeepSeek-V3 shapes.
  if (o.deepseek) {
    md << "\nDeepSeek-V3 shapes (issue 4: >= 85% of copy bandwidth in weight bytes for M = 1..16), FP8 "
          "128x128 UE8M0 and BF16 weights:\n\n"
          "| M | N | K | fp8 us | fp8 GB/s | fp8 % copy | read us | fp8 of read | bf16 us | bf16 % copy | "
          "cuBLASLt BF16 us | fp8 x | fp8 kernel us | fp8 % copy, kernel | read kernel us |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    std::printf("\n%3s %6s %6s %9s %8s %7s %8s %7s %9s %7s %10s %7s\n", "M", "N", "K", "fp8 us", "GB/s",
                "%copy", "read us", "of rd", "bf16 us", "%copy", "ltBF16 us", "x");
    // Per M, geometric means over the shapes of the fraction of copy, the fraction of the read-only
    // peer and the speedup over cuBLASLt BF16 (logs summed).
    struct Sums {
      double copy = 0, read = 0, lt = 0, copy_kernel = 0;
      int n = 0, n_lt = 0;
    };
    std::map<int64_t, Sums> sums;
    for (int64_t m : {1, 2, 4, 8, 16})
      for (const Case& c : kDeepSeek) {
        double k8 = NAN;
        const auto [u8, b8] = r.time_mx8(WeightFormat::fp8_block, c, m, nullptr, true, &k8);
        const auto [ub, bb] = r.time_mx8(WeightFormat::bf16, c, m, nullptr);
        const double lt = r.time_cublas_bf16(c, m);
        const double g8 = b8 / u8 * 1e-3, rd = r.time_read(b8), rd_k = r.time_read(b8, true);
        const double copy_k = b8 / (k8 * 1e-6) / bw;
        std::printf("%3lld %6lld %6lld %9.1f %8.0f %6.0f%% %8.1f %6.0f%% %9.1f %6.0f%% %10.1f %6.2fx\n",
                    (long long)m, (long long)c.ns[0], (long long)c.k, u8, g8, 100 * g8 * 1e9 / bw, rd,
                    100 * rd / u8, ub, 100 * bb / (ub * 1e-6) / bw, lt, lt / u8);
        std::fflush(stdout);
        md << "| " << m << " | " << c.ns[0] << " | " << c.k << " | " << fmt("%.1f", u8) << " | "
           << fmt("%.0f", g8) << " | " << fmt("%.0f%%", 100 * g8 * 1e9 / bw) << " | " << fmt("%.1f", rd)
           << " | " << fmt("%.0f%%", 100 * rd / u8) << " | " << fmt("%.1f", ub) << " | "
           << fmt("%.0f%%", 100 * bb / (ub * 1e-6) / bw) << " | " << fmt("%.1f", lt) << " | "
           << fmt("%.2fx", lt / u8) << " | " << fmt("%.1f", k8) << " | " << fmt("%.0f%%", 100 * copy_k)
           << " | " << fmt("%.1f", rd_k) << " |\n";
        Sums& sm = sums[m];
        sm.copy += std::log(g8 * 1e9 / bw);
        sm.copy_kernel += std::log(copy_k);
        sm.read += std::log(rd / u8);
        sm.n += 1;
        if (std::isfinite(lt)) {
          sm.lt += std::log(lt / u8);
          sm.n_lt += 1;
        }
      }
    md << "\nGeometric means over the six shapes (FP8 weights):\n\n"
          "| M | of copy | of read | vs cuBLASLt BF16 | of copy, kernel times "
          "|\n|---:|---:|---:|---:|---:|\n";
    std::printf("\n%3s %8s %8s %10s %14s\n", "M", "of copy", "of read", "vs ltBF16", "copy, kernel");
    for (const auto& [m, sm] : sums) {
      const double copy = std::exp(sm.copy / sm.n), read = std::exp(sm.read / sm.n),
                   lt = sm.n_lt ? std::exp(sm.lt / sm.n_lt) : NAN;
      std::printf("%3lld %7.0f%% %7.0f%% %9.2fx %13.0f%%\n", (long long)m, 100 * copy, 100 * read, lt,
                  100 * std::exp(sm.copy_kernel / sm.n));
      md << "| " << m << " | " << fmt("%.0f%%", 100 * copy) << " | " << fmt("%.0f%%", 100 * read) << " | "
         << fmt("%.2fx", lt) << " | " << fmt("%.0f%%", 100 * std::exp(sm.copy_kernel / sm.n)) << " |\n";
    }
  }
  if (o.perf.write) {
    const std::string path = o.perf.path();
    mx8::cli::update_perf_section(path, "gemv-cuda", md.str());
    std::printf("updated section 'gemv-cuda' of %s\n", path.c_str());
  }
}

mx8::cli::CommandRegistration reg{
    "bench gemv-cuda",
    "CUDA weight-streaming GEMV: decode and DeepSeek shapes vs copy bandwidth and cuBLASLt",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--iters", o->iters, "timed runs per product (median reported)")
          ->check(CLI::Range(20, 1000));
      app.add_flag("--ab", o->ab, "also time the kernel knob variants (rows, unroll, threads, E4M3 decode)");
      app.add_flag("!--no-deepseek", o->deepseek, "skip the DeepSeek M = 1..16 table");
      o->perf.add_options(app);
      return mx8::cli::CommandRun([o] { run(*o); });
    }};

}  // namespace

#endif  // MX8_HAVE_CUDA
