// `mx8 bench cuda-gemm | cuda-gemv | cuda-quantize | cuda`: the Hopper kernels against cuBLASLt
// (block-scaled FP8 and BF16) in the same run, L2 flushed before every timed run, medians of CUDA
// event timings. Each prints a table and rewrites its own section of docs/PERF.md. The subcommands
// exist in every build; without the CUDA backend they say so and exit with an error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "cli/command.h"
#include "cli/perf_report.h"
#include "mx8/error.h"

#ifdef MX8_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "backend/cuda/bench_util.h"
#include "backend/cuda/cublaslt/cublaslt_baseline.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemv_fp8_linear.cuh"
#include "backend/cuda/gemv_fp8x8.cuh"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/backend/cuda/quantize.h"
#endif

namespace {

struct BenchOptions {
  int iters = 30;
  mx8::cli::PerfMdTarget perf;
  std::vector<int> ms;
  std::string tile;       // "BMxBN[wW][cC]" to force a tile shape (experiments)
  bool mx8_only = false;  // time only mx8's float-scale GEMM (tile sweeps): the other columns are nan
  std::vector<std::string> shapes;  // "NxK" instead of DeepSeek-V3's six (experiments: no PERF.md table)
  int flush_mb = 512;               // the L2 flush's write before each timed run (GpuTimer)
};

void add_common_options(CLI::App& app, const std::shared_ptr<BenchOptions>& o) {
  app.add_option("--iters", o->iters, "timed runs per kernel (median reported)")->check(CLI::Range(1, 1000));
  o->perf.add_options(app);
}

#ifndef MX8_HAVE_CUDA

[[noreturn]] void no_cuda() {
  throw mx8::Error(
      "this build has no CUDA backend: configure with -DMX8_CUDA=ON (cmake --preset cuda) on a machine with "
      "nvcc, "
      "and run on a Hopper GPU");
}

#else

using namespace mx8::cuda;
namespace fmt = mx8::format;

constexpr double kFp8PeakFlops = 1979e12;  // H100/H200 SXM dense FP8 datasheet figure (a lead)

struct Shape {
  int n, k;
};
// DeepSeek-V3's projection shapes (issue 4; DeepGEMM's README table).
const Shape kShapes[] = {{2112, 7168},  {24576, 1536}, {32768, 512},
                         {7168, 16384}, {4096, 7168},  {7168, 2048}};

template <typename T>
struct Dev {
  T* p = nullptr;
  explicit Dev(size_t n) {
    MX8_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)));
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
};

std::string gpu_line(double copy_bw) {
  cudaDeviceProp prop{};
  int dev = 0;
  MX8_CUDA_CHECK(cudaGetDevice(&dev));
  MX8_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s, %d SMs, CUDA runtime %d, driver %d; measured D2D copy %.0f GB/s (read+write)", prop.name,
                prop.multiProcessorCount, runtime, driver, copy_bw / 1e9);
  return buf;
}

std::string header_block(const std::string& title, const std::string& command, const std::string& gpu) {
  return "### " + title + "\n\n" + mx8::cli::today_utc() + " - " + gpu + "\n\n`" + command + "`\n\n";
}

void write_section(const BenchOptions& o, const std::string& id, const std::string& md) {
  if (!o.perf.write || o.mx8_only || !o.shapes.empty()) return;  // experiments leave PERF.md's tables alone
  const std::string path = o.perf.path();
  mx8::cli::update_perf_section(path, id, md);
  std::printf("updated section '%s' of %s\n", id.c_str(), path.c_str());
}

std::string fmt_double(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

double geomean(const std::vector<double>& v) {
  if (v.empty()) return 0;
  double s = 0;
  for (double x : v) s += std::log(x);
  return std::exp(s / static_cast<double>(v.size()));
}

// Operands of one (M, N, K): bf16 originals, E4M3 codes, f32 and UE8M0 scales (MN-major for A).
struct GemmOperands {
  int m, n, k, ld;
  Dev<uint16_t> xa, xb;
  Dev<uint8_t> a8, b8, sa_u8, sb_u8;
  Dev<float> sa, sb, sa_lt;
  Dev<uint8_t> a_mx, b_mx, sa_mx, sb_mx, tmp_scales, sb_mx_rows;
  int ld_b;
  Dev<uint16_t> d_mx, d_lt, d_bf16;
  GemmOperands(int m_, int n_, int k_)
      : m(m_),
        n(n_),
        k(k_),
        ld(sa_ld(m_)),
        xa(size_t(m_) * k_),
        xb(size_t(n_) * k_),
        a8(size_t(m_) * k_),
        b8(size_t(n_) * k_),
        sa_u8(size_t(ld) * (k_ / 128)),
        sb_u8(size_t((n_ + 127) / 128) * (k_ / 128)),
        sa(size_t(ld) * (k_ / 128)),
        sb(size_t((n_ + 127) / 128) * (k_ / 128)),
        sa_lt(size_t(m_) * (k_ / 128)),
        a_mx(size_t(m_) * k_),
        b_mx(size_t(n_) * k_),
        sa_mx(size_t(sa_ld(m_)) * (k_ / 32)),
        sb_mx(size_t(sa_ld(n_)) * (k_ / 32)),
        tmp_scales(size_t(std::max(m_, n_)) * (k_ / 32)),
        sb_mx_rows(size_t(n_) * (k_ / 32)),
        ld_b(sa_ld(n_)),
        d_mx(size_t(m_) * n_),
        d_lt(size_t(m_) * n_),
        d_bf16(size_t(m_) * n_) {
    fill_random_bf16(xa.p, size_t(m) * k, 1000 + m, 1.f, nullptr);
    fill_random_bf16(xb.p, size_t(n) * k, 2000 + n + k, 0.05f, nullptr);
    quantize_act_1x128(xa.p, m, k, fmt::ScaleRule::ceil, false, 1e-4f, ScaleLayout::kMnMajor, a8.p, sa.p,
                       nullptr);
    quantize_act_1x128(xa.p, m, k, fmt::ScaleRule::ceil, true, 1e-4f, ScaleLayout::kMnMajor, a8.p, sa_u8.p,
                       nullptr);
    fmt::QuantSpec w;
    w.blocking = fmt::Blocking::block(128);
    w.rule = fmt::ScaleRule::ceil;
    w.storage = fmt::ScaleStorage::f32;
    quantize(fmt::SourceType::bf16, xb.p, n, k, w, b8.p, reinterpret_cast<uint8_t*>(sb.p), nullptr);
    w.storage = fmt::ScaleStorage::ue8m0;
    quantize(fmt::SourceType::bf16, xb.p, n, k, w, b8.p, sb_u8.p, nullptr);
    // MXFP8 operands: 1x32 UE8M0 (floor, OCP) on both, scales transposed to the MN-major layout.
    fmt::QuantSpec mxs;
    mxs.blocking = fmt::Blocking::tile(32);
    mxs.rule = fmt::ScaleRule::floor;
    quantize(fmt::SourceType::bf16, xa.p, m, k, mxs, a_mx.p, tmp_scales.p, nullptr);
    transpose_u8(tmp_scales.p, m, k / 32, sa_mx.p, ld, nullptr);
    quantize(fmt::SourceType::bf16, xb.p, n, k, mxs, b_mx.p, sb_mx_rows.p, nullptr);  // as stored
    transpose_u8(sb_mx_rows.p, n, k / 32, sb_mx.p, ld_b, nullptr);
    // cuBLASLt's VEC128 scales are [K/128][M] with no leading dimension: a compact copy.
    MX8_CUDA_CHECK(cudaMemcpy2D(sa_lt.p, size_t(m) * 4, sa.p, size_t(ld) * 4, size_t(m) * 4, size_t(k / 128),
                                cudaMemcpyDeviceToDevice));
    MX8_CUDA_CHECK(cudaDeviceSynchronize());
  }
  GemmMxfp8Args mx_args() {
    GemmMxfp8Args g;
    g.a = a_mx.p;
    g.scale_a = sa_mx.p;
    g.scale_a_ld = ld;
    g.b = b_mx.p;
    g.scale_b = sb_mx.p;
    g.scale_b_ld = ld_b;
    g.d = d_mx.p;
    g.m = m;
    g.n = n;
    g.k = k;
    return g;
  }
  GemmFp8Args args(bool ue8m0) {
    GemmFp8Args g;
    g.a = a8.p;
    g.scale_a = ue8m0 ? static_cast<const void*>(sa_u8.p) : sa.p;
    g.scale_a_ld = ld;
    g.b = b8.p;
    g.scale_b = ue8m0 ? static_cast<const void*>(sb_u8.p) : sb.p;
    g.scale_type = ue8m0 ? ScaleType::kUE8M0 : ScaleType::kF32;
    g.d = d_mx.p;
    g.m = m;
    g.n = n;
    g.k = k;
    return g;
  }
};

// max |x - y| / max |y| over two bf16 outputs, and whether they are bitwise equal.
std::pair<double, bool> compare_bf16(const uint16_t* x_dev, const uint16_t* y_dev, size_t n) {
  std::vector<uint16_t> x(n), y(n);
  MX8_CUDA_CHECK(cudaMemcpy(x.data(), x_dev, n * 2, cudaMemcpyDeviceToHost));
  MX8_CUDA_CHECK(cudaMemcpy(y.data(), y_dev, n * 2, cudaMemcpyDeviceToHost));
  double md = 0, my = 0;
  bool same = true;
  for (size_t i = 0; i < n; ++i) {
    const double a = fmt::bf16_to_f32(x[i]), b = fmt::bf16_to_f32(y[i]);
    if (x[i] != y[i]) same = false;
    md = std::max(md, std::fabs(a - b));
    my = std::max(my, std::fabs(b));
    if (a != a) md = INFINITY;
  }
  return {my > 0 ? md / my : md, same};
}

bool retime_f32() {
  static const bool on = [] {
    const char* e = std::getenv("MX8_BENCH_RETIME_F32");
    return e && std::string(e) == "1";
  }();
  return on;
}

GemmConfig parse_tile(const std::string& s) {
  GemmConfig c;
  if (s.empty()) return c;
  // BMxBN, then optionally wW (math warpgroups: w2 = the split-K 64-row variant), cC (clusters of
  // C blocks splitting K) and sS (S stages), e.g. 128x128, 64x64w2, 64x64w2c4, 64x64w2c2s8.
  const char* rest = s.c_str();
  // Reads one "<format>" field at `rest` and moves past it; false if it does not match.
  auto field = [&rest](const char* format, int* a, int* b = nullptr) {
    int used = 0;
    const int want = b ? 2 : 1;
    if ((b ? std::sscanf(rest, format, a, b, &used) : std::sscanf(rest, format, a, &used)) != want)
      return false;
    rest += used;
    return true;
  };
  bool ok = field("%dx%d%n", &c.block_m, &c.block_n);
  if (ok && *rest == 'w') ok = field("w%d%n", &c.math_warpgroups);
  if (ok && *rest == 'c') ok = field("c%d%n", &c.splits);
  if (ok && *rest == 's') ok = field("s%d%n", &c.stages);
  if (!ok || *rest != '\0')
    throw mx8::Error("--tile: expected BMxBN[wW][cC][sS], e.g. 128x128 or 64x64w2c4s8, got '" + s + "'");
  return c;
}

// The GEMM table for a list of M values; `gemv` switches the columns to weight bandwidth.
void run_gemm_bench(const BenchOptions& o, bool gemv, const std::string& command) {
  GpuTimer timer(static_cast<size_t>(o.flush_mb) << 20);
  const double copy_bw = timer.copy_bandwidth();
  const std::string gpu = gpu_line(copy_bw);
  CublasLtBaseline lt;
  const GemmConfig forced = parse_tile(o.tile);
  std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
  if (!o.shapes.empty()) shapes.clear();
  for (const std::string& t : o.shapes) {
    Shape sh{};
    char x = 0, rest = 0;
    if (std::sscanf(t.c_str(), "%d%c%d%c", &sh.n, &x, &sh.k, &rest) != 3 || x != 'x' || sh.n < 16 ||
        sh.n % 16 != 0 || sh.k < 128 || sh.k % 128 != 0)
      throw mx8::Error("--shapes: expected NxK with N a multiple of 16 and K of 128, e.g. 6144x4096, got '" +
                       t + "'");
    shapes.push_back(sh);
  }
  std::vector<int> ms = o.ms;
  if (ms.empty()) ms = gemv ? std::vector<int>{1, 2, 4, 8, 16} : std::vector<int>{64, 128, 4096};
  std::ostringstream md;
  md << header_block(gemv ? "CUDA skinny GEMM / GEMV (M = 1..16), FP8 weights with 128x128 scales"
                          : "CUDA FP8 block-scaled GEMM (A 1x128, B 128x128 scales, BF16 out)",
                     command, gpu);
  md << "Times are medians of " << o.iters << " CUDA-event timings, L2 flushed before each (a " << o.flush_mb
     << " MB memset, then a 256 MB read so that no dirty line of the flush is written back during the timed "
        "run). mx8 and cuBLASLt FP8 read the same "
        "E4M3 codes and float32 scales; `mx8 ue8m0` is the same product with UE8M0 scale bytes; `MXFP8` is "
        "mx8's MXFP8 GEMM (1x32 UE8M0 scales on both operands, promotion every 32 of K). "
     << (gemv
             ? "`fp8x8 us` is the same product on the mma.sync GEMV of E4M3 activations "
               "(src/backend/cuda/gemv_fp8x8.cu: the same codes and float32 scales, f32 out), `fp8x8 "
               "floor` its fraction of the floor; `MX fp8x8 us` the MXFP8 product on it, the one the "
               "runtime's batched decode steps of 3..16 rows take for MXFP8 weights (the weights' scales "
               "row-major, as stored). `linear us` (M <= 4) is the same product on the linear GEMV "
               "(src/backend/cuda/gemv_fp8_linear.cu: every warp load 512 contiguous bytes of one weight "
               "row), `linear kernel us` its kernel time and `linear floor, kernel` the floor's fraction of "
               "it. "
               "GB/s counts weight bytes (N*K) only; the floor is weight bytes / measured copy bandwidth. "
               "`TMA read us` is the peer that only streams the weights as mx8's producer does (TMA boxes "
               "of the tile's width x 128 bytes, each tile's K blocks in turn, the tile's cluster K split "
               "too; bench_util.h tma_read_once), `of TMA read, kernel` its kernel time / mx8's. On the H200 "
               "weights read in such tiles (64 or 128 bytes of each of many rows, by TMA or by plain loads "
               "alike) stream 5-30% slower than the same bytes read in order (docs/CUDA.md, thirty-ninth "
               "session): no kernel that reads them so beats these columns."
             : "Floor = max(2MNK / 1979 TFLOP/s, bytes / measured copy bandwidth), bytes = MK + NK + 2MN. "
               "256x128 tiles run in pairs of blocks that share their A tile (TMA multicast) where the N "
               "blocks pair up (docs/CUDA.md).")
     << " `diff` = max|mx8 - cuBLASLt| / max|cuBLASLt| (`=` when bitwise equal). The `kernel` columns time "
        "the same calls again by the GPU's own record of each kernel (CUPTI's activity trace: the sum of the "
        "call's kernel durations, L2 flushed the same way), which leaves out the launch latency and event "
        "overhead (2-3 us here) that the event timings include; the peer's `kernel-only` figures "
        "(../shared/research/deepgemm-h200.md) were measured that way.\n\n";
  md << "| M | N | K | tile | mx8 us | mx8 ue8m0 us | MXFP8 us | TFLOP/s | GB/s | of floor | cuBLASLt FP8 us "
        "| vs FP8 | "
        "cuBLASLt BF16 us | vs BF16 | diff | mx8 kernel us | of floor, kernel | cuBLASLt FP8 kernel us | vs "
        "FP8, kernel |"
     << (gemv ? " fp8x8 us | fp8x8 floor | MX fp8x8 us | TMA read us | TMA read kernel us | of TMA read, "
                "kernel | linear us | linear kernel us | linear floor, kernel |"
              : "")
     << "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
     << (gemv ? "---|---|---|---|---|---|---|---|---|" : "") << "\n";
  std::printf("%s\n%6s %6s %6s %-22s %9s %9s %9s %8s %8s %7s %9s %7s %9s %7s %9s %9s %9s %9s %7s %9s\n",
              gpu.c_str(), "M", "N", "K", "tile", "mx8 us", "ue8m0 us", "MXFP8 us", "TFLOP/s", "GB/s",
              "floor", "ltFP8 us", "vsFP8", "ltBF16", "vsBF16", "diff", "fp8x8 us", "MXx8 us", "mx8 k us",
              "vs k", "lin k us");
  std::vector<std::string> summary;
  // gemv: the TMA streaming read of each weight matrix per tile width and cluster K split.
  std::map<std::tuple<int, int, int, int>, std::pair<double, double>> tma_read_us;  // events, kernel
  // The most TFLOP/s by kernel time, and where (the best-shape figure is kernel time).
  double best_kernel_tflops = 0;
  std::string best_kernel_shape;
  for (int m : ms) {
    std::vector<double> sp_fp8, sp_bf16, frac, mx_cost, x8_frac, mx8_gain, sp_kernel, frac_kernel, of_tma,
        lin_frac;
    for (const Shape& s : shapes) {
      GemmOperands op(m, s.n, s.k);
      const GemmConfig* f = forced.block_m ? &forced : nullptr;
      const GemmConfig cfg = f ? *f : gemm_fp8_pick_config(m, s.n, s.k, num_sms());
      GemmFp8Args a32 = op.args(false), a8 = op.args(true);
      auto mx8_fp8 = [&] { gemm_fp8_1x128(a32, nullptr, f); };
      double t_mx = timer.median_us(mx8_fp8, o.iters);
      double t_u8 = NAN, t_mxfp8 = NAN, t_lt = NAN, t_bf = NAN, k_mx = NAN, k_lt = NAN;
      std::string diff = "n/a";
      if (!o.mx8_only) {
        t_u8 = timer.median_us([&] { gemm_fp8_1x128(a8, nullptr, f); }, o.iters);
        // MX8_BENCH_RETIME_F32=1 (experiments): the float-scale product timed again after the UE8M0 one,
        // and that time reported: tells the scale type's cost from a clock drop during a long run.
        if (retime_f32()) t_mx = timer.median_us(mx8_fp8, o.iters);
        const GemmMxfp8Args amx = op.mx_args();
        t_mxfp8 = timer.median_us([&] { gemm_mxfp8(amx, nullptr, f); }, o.iters);  // f: its BM, 64 or 128
        k_mx = timer.median_kernel_us(mx8_fp8, o.iters);
        try {
          auto lt_fp8 = [&] {
            lt.gemm_fp8_blockscaled(op.a8.p, op.sa_lt.p, op.b8.p, op.sb.p, op.d_lt.p, m, s.n, s.k, nullptr);
          };
          t_lt = timer.median_us(lt_fp8, o.iters);
          k_lt = timer.median_kernel_us(lt_fp8, o.iters);
          mx8_fp8();
          const auto [d, same] = compare_bf16(op.d_mx.p, op.d_lt.p, size_t(m) * s.n);
          diff = same ? "=" : fmt_double("%.1e", d);
        } catch (const mx8::Error& e) {
          std::printf("cuBLASLt FP8 %dx%dx%d: %s\n", m, s.n, s.k, e.what());
        }
        try {
          t_bf = timer.median_us([&] { lt.gemm_bf16(op.xa.p, op.xb.p, op.d_bf16.p, m, s.n, s.k, nullptr); },
                                 o.iters);
        } catch (const mx8::Error& e) {
          std::printf("cuBLASLt BF16 %dx%dx%d: %s\n", m, s.n, s.k, e.what());
        }
      }
      double t_x8 = NAN, t_mx8 = NAN, t_lin = NAN, k_lin = NAN;
      if (gemv && m <= mx8::backend::cuda_impl::kFp8x8MaxRows && !o.mx8_only) {
        namespace be = mx8::backend;
        Dev<float> y(size_t(m) * s.n);
        const be::MatmulTarget t{
            {be::WeightFormat::fp8_block, s.n, s.k, op.b8.p, op.sb.p, be::ScaleType::f32}, y.p, nullptr};
        t_x8 = timer.median_us(
            [&] { be::cuda_impl::launch_gemv_fp8x8(&t, 1, op.a8.p, op.sa.p, op.ld, m, false, nullptr); },
            o.iters);
        const be::MatmulTarget tm{
            {be::WeightFormat::mxfp8, s.n, s.k, op.b_mx.p, op.sb_mx_rows.p, be::ScaleType::ue8m0},
            y.p,
            nullptr};
        t_mx8 = timer.median_us(
            [&] {
              be::cuda_impl::launch_gemv_fp8x8(&tm, 1, op.a_mx.p, op.sa_mx.p, op.ld, m, false, nullptr);
            },
            o.iters);
        if (m <= be::cuda_impl::kLinearMaxRows) {
          auto lin = [&] {
            be::cuda_impl::launch_gemv_fp8_linear(&t, 1, op.a8.p, op.sa.p, op.ld, m, false, nullptr);
          };
          t_lin = timer.median_us(lin, o.iters);
          k_lin = timer.median_kernel_us(lin, o.iters);
        }
      }
      double t_tma = NAN, k_tma = NAN;
      if (gemv) {
        const auto key = std::make_tuple(s.n, s.k, cfg.block_n, cfg.splits);
        if (!tma_read_us.count(key)) {
          auto read = [&] {
            mx8::cuda::tma_read_once(op.b8.p, s.n, s.k, cfg.block_n, cfg.splits, nullptr, nullptr);
          };
          tma_read_us[key] = {timer.median_us(read, o.iters), timer.median_kernel_us(read, o.iters)};
        }
        std::tie(t_tma, k_tma) = tma_read_us[key];
        if (k_tma == k_tma && k_mx == k_mx) of_tma.push_back(k_tma / k_mx);
      }
      const double flops = 2.0 * m * s.n * s.k;
      const double bytes = gemv ? double(s.n) * s.k : double(m) * s.k + double(s.n) * s.k + 2.0 * m * s.n;
      const double floor_s = gemv ? bytes / copy_bw : std::max(flops / kFp8PeakFlops, bytes / copy_bw);
      const double fr = floor_s / (t_mx * 1e-6);
      frac.push_back(fr);
      if (t_lt == t_lt) sp_fp8.push_back(t_lt / t_mx);
      if (t_bf == t_bf) sp_bf16.push_back(t_bf / t_mx);
      mx_cost.push_back(t_mxfp8 / t_mx);
      if (t_x8 == t_x8) x8_frac.push_back(floor_s / (t_x8 * 1e-6));
      if (k_lin == k_lin) lin_frac.push_back(floor_s / (k_lin * 1e-6));
      if (t_mx8 == t_mx8 && t_mxfp8 == t_mxfp8) mx8_gain.push_back(t_mx8 / t_mxfp8);
      if (k_mx == k_mx) {
        frac_kernel.push_back(floor_s / (k_mx * 1e-6));
        if (k_lt == k_lt) sp_kernel.push_back(k_lt / k_mx);
        if (flops / k_mx * 1e-6 > best_kernel_tflops) {
          best_kernel_tflops = flops / k_mx * 1e-6;
          best_kernel_shape = std::to_string(m) + " x " + std::to_string(s.n) + " x " + std::to_string(s.k);
        }
      }
      const std::string tile = std::to_string(cfg.block_m) + "x" + std::to_string(cfg.block_n) +
                               (cfg.splits > 1 ? "c" + std::to_string(cfg.splits) : "");
      std::printf(
          "%6d %6d %6d %-22s %9.1f %9.1f %9.1f %8.1f %8.0f %6.0f%% %9.1f %6.2fx %9.1f %6.2fx %9s %9.1f "
          "%9.1f %9.1f %6.2fx %9.1f\n",
          m, s.n, s.k, cfg.str().c_str(), t_mx, t_u8, t_mxfp8, flops / t_mx * 1e-6, bytes / t_mx * 1e-3,
          100 * fr, t_lt, t_lt / t_mx, t_bf, t_bf / t_mx, diff.c_str(), t_x8, t_mx8, k_mx, k_lt / k_mx,
          k_lin);
      std::fflush(stdout);
      md << "| " << m << " | " << s.n << " | " << s.k << " | " << tile << " | " << fmt_double("%.1f", t_mx)
         << " | " << fmt_double("%.1f", t_u8) << " | " << fmt_double("%.1f", t_mxfp8) << " | "
         << fmt_double("%.0f", flops / t_mx * 1e-6) << " | " << fmt_double("%.0f", bytes / t_mx * 1e-3)
         << " | " << fmt_double("%.0f%%", 100 * fr) << " | " << fmt_double("%.1f", t_lt) << " | "
         << fmt_double("%.2fx", t_lt / t_mx) << " | " << fmt_double("%.1f", t_bf) << " | "
         << fmt_double("%.2fx", t_bf / t_mx) << " | " << diff << " | " << fmt_double("%.1f", k_mx) << " | "
         << fmt_double("%.0f%%", 100 * floor_s / (k_mx * 1e-6)) << " | " << fmt_double("%.1f", k_lt) << " | "
         << fmt_double("%.2fx", k_lt / k_mx) << " |";
      if (gemv)
        md << " " << fmt_double("%.1f", t_x8) << " | " << fmt_double("%.0f%%", 100 * floor_s / (t_x8 * 1e-6))
           << " | " << fmt_double("%.1f", t_mx8) << " | " << fmt_double("%.1f", t_tma) << " | "
           << fmt_double("%.1f", k_tma) << " | " << fmt_double("%.0f%%", 100 * k_tma / k_mx) << " | "
           << fmt_double("%.1f", t_lin) << " | " << fmt_double("%.1f", k_lin) << " | "
           << fmt_double("%.0f%%", 100 * floor_s / (k_lin * 1e-6)) << " |";
      md << "\n";
    }
    const std::string fp8_ratio = sp_fp8.empty() ? std::string("n/a") : fmt_double("%.2fx", geomean(sp_fp8));
    summary.push_back(
        "| " + std::to_string(m) + " | " + fp8_ratio + " | " + fmt_double("%.2fx", geomean(sp_bf16)) + " | " +
        fmt_double("%.0f%%", 100 * geomean(frac)) + " | " + fmt_double("%.2fx", geomean(mx_cost)) + " | " +
        (sp_kernel.empty() ? std::string("n/a") : fmt_double("%.2fx", geomean(sp_kernel))) + " | " +
        (frac_kernel.empty() ? std::string("n/a") : fmt_double("%.0f%%", 100 * geomean(frac_kernel))) + " |" +
        (gemv ? " " + (x8_frac.empty() ? std::string("n/a") : fmt_double("%.0f%%", 100 * geomean(x8_frac))) +
                    " | " + (mx8_gain.empty() ? std::string("n/a") : fmt_double("%.2fx", geomean(mx8_gain))) +
                    " | " +
                    (of_tma.empty() ? std::string("n/a") : fmt_double("%.0f%%", 100 * geomean(of_tma))) +
                    " | " +
                    (lin_frac.empty() ? std::string("n/a") : fmt_double("%.0f%%", 100 * geomean(lin_frac))) +
                    " |"
              : std::string()));
    std::printf(
        "M=%d geomean: %.2fx over cuBLASLt block-scaled FP8 (%.2fx by kernel times), %.2fx over BF16, "
        "%.0f%% of floor (%.0f%% by kernel time)%s%s%s\n",
        m, geomean(sp_fp8), sp_kernel.empty() ? NAN : geomean(sp_kernel), geomean(sp_bf16),
        100 * geomean(frac), frac_kernel.empty() ? NAN : 100 * geomean(frac_kernel),
        x8_frac.empty() ? ""
                        : (", fp8x8 " + fmt_double("%.0f%%", 100 * geomean(x8_frac)) + " of floor").c_str(),
        of_tma.empty()
            ? ""
            : (", " + fmt_double("%.0f%%", 100 * geomean(of_tma)) + " of the TMA read by kernel times")
                  .c_str(),
        lin_frac.empty()
            ? ""
            : (", linear GEMV " + fmt_double("%.0f%%", 100 * geomean(lin_frac)) + " of floor by kernel times")
                  .c_str());
  }
  md << "\nGeometric means over the six (N, K) shapes:\n\n| M | mx8 / cuBLASLt FP8 | mx8 / cuBLASLt BF16 | "
        "of floor | MXFP8 time / 1x128 time | mx8 / cuBLASLt FP8, kernel times | of floor, kernel times |"
     << (gemv ? " fp8x8 of floor | MX fp8x8 time / MXFP8 GEMM time | TMA read / mx8, kernel times | linear "
                "of floor, kernel times |"
              : "")
     << "\n|---|---|---|---|---|---|---|" << (gemv ? "---|---|---|---|" : "") << "\n";
  for (const auto& l : summary) md << l << "\n";
  if (!best_kernel_shape.empty())
    md << "\nMost TFLOP/s by kernel time: " << fmt_double("%.0f", best_kernel_tflops) << " at "
       << best_kernel_shape << ".\n";
  write_section(o, gemv ? "cuda-gemv" : "cuda-gemm", md.str());
}

void run_quantize_bench(const BenchOptions& o, const std::string& command) {
  GpuTimer timer;
  const double copy_bw = timer.copy_bandwidth();
  const std::string gpu = gpu_line(copy_bw);
  struct Q {
    int64_t rows, cols;
  };
  const Q shapes[] = {{128, 7168}, {4096, 7168}, {4096, 16384}, {16384, 7168}};
  std::ostringstream md;
  md << header_block("CUDA quantize / dequantize (bf16 in, E4M3 out)", command, gpu);
  md << "GB/s counts bytes read + written (codes, scales, and the transposed copy for `dual`); `of copy` is "
        "that over the measured device copy bandwidth, which moves as many bytes each way: a kernel that "
        "reads two bytes per byte it writes turns the HBM bus around less often and can pass 100%. Medians "
        "of "
     << o.iters
     << " runs, L2 flushed before each (a 512 MB memset, then a 256 MB read so that no dirty line of the "
        "flush is written back during the timed run).\n\n| kernel | rows | cols | us | GB/s | of copy "
        "|\n|---|---|---|---|---|---|\n";
  std::printf("%s\n%-34s %6s %6s %9s %8s %7s\n", gpu.c_str(), "kernel", "rows", "cols", "us", "GB/s", "copy");
  std::string target;  // issue 4: the activation quantizers at >= 90% of copy on the large shapes
  for (const Q& q : shapes) {
    const size_t n = size_t(q.rows) * q.cols;
    Dev<uint16_t> x(n);
    Dev<uint8_t> codes(n), codes_t(n), scales(n / 32 * 4 + 64), scales_t(n / 32 * 4 + 64);
    Dev<float> deq(n);
    fill_random_bf16(x.p, n, 7 + q.rows, 1.f, nullptr);
    fmt::QuantSpec mx;
    mx.blocking = fmt::Blocking::tile(32);
    mx.rule = fmt::ScaleRule::floor;
    fmt::QuantSpec w;
    w.blocking = fmt::Blocking::block(128);
    w.storage = fmt::ScaleStorage::f32;
    fmt::QuantSpec a128;
    struct Run {
      const char* name;
      std::function<void()> fn;
      double bytes;
    };
    const double N = double(n);
    const std::vector<Run> runs = {
        {"act 1x128 ceil ue8m0 (MN-major)",
         [&] {
           quantize_act_1x128(x.p, q.rows, q.cols, fmt::ScaleRule::ceil, true, 1e-4f, ScaleLayout::kMnMajor,
                              codes.p, scales.p, nullptr);
         },
         3 * N + N / 128},
        {"act 1x128 + transposed (dual)",
         [&] {
           quantize_act_1x128_dual(x.p, q.rows, q.cols, fmt::ScaleRule::ceil, true, 1e-4f,
                                   ScaleLayout::kMnMajor, codes.p, scales.p, codes_t.p, scales_t.p, nullptr);
         },
         4 * N + 2 * N / 128},
        // X^T's scales row-major: one byte per 32-byte sector per tile (the MN-major row's peer).
        {"dual, row-major scales",
         [&] {
           quantize_act_1x128_dual(x.p, q.rows, q.cols, fmt::ScaleRule::ceil, true, 1e-4f,
                                   ScaleLayout::kRowMajor, codes.p, scales.p, codes_t.p, scales_t.p, nullptr);
         },
         4 * N + 2 * N / 128},
        {"MXFP8 1x32 floor ue8m0",
         [&] { quantize(fmt::SourceType::bf16, x.p, q.rows, q.cols, mx, codes.p, scales.p, nullptr); },
         3 * N + N / 32},
        {"weights 128x128 ceil f32",
         [&] { quantize(fmt::SourceType::bf16, x.p, q.rows, q.cols, w, codes.p, scales.p, nullptr); },
         3 * N + N / 16384 * 4},
        {"dequantize 1x128 -> f32",
         [&] { dequantize(codes.p, scales.p, q.rows, q.cols, a128, deq.p, nullptr); }, 5 * N + N / 128},
    };
    // dequantize reads UE8M0 row-major scales: produce them once.
    quantize(fmt::SourceType::bf16, x.p, q.rows, q.cols, a128, codes.p, scales.p, nullptr);
    for (const Run& r : runs) {
      const double us = timer.median_us(r.fn, o.iters);
      const double gbs = r.bytes / us * 1e-3;
      std::printf("%-34s %6lld %6lld %9.1f %8.0f %6.0f%%\n", r.name, (long long)q.rows, (long long)q.cols, us,
                  gbs, 100 * gbs * 1e9 / copy_bw);
      md << "| " << r.name << " | " << q.rows << " | " << q.cols << " | " << fmt_double("%.1f", us) << " | "
         << fmt_double("%.0f", gbs) << " | " << fmt_double("%.0f%%", 100 * gbs * 1e9 / copy_bw) << " |\n";
      if (q.rows * q.cols >= int64_t{4096} * 7168 * 2 && std::string(r.name).rfind("act", 0) == 0)
        target += std::string(target.empty() ? "" : ", ") +
                  (std::string(r.name).find("dual") != std::string::npos ? "dual " : "act ") +
                  std::to_string(q.rows) + "x" + std::to_string(q.cols) + " " +
                  fmt_double("%.0f%%", 100 * gbs * 1e9 / copy_bw);
    }
  }
  md << "\nIssue 4 target (activation quantizers at >= 90% of copy on the large shapes): " << target << ".\n";
  std::printf("issue 4 target (>= 90%% of copy): %s\n", target.c_str());
  write_section(o, "cuda-quantize", md.str());
}

std::string command_line(const char* name) {
  return std::string("mx8 bench ") + name;
}

#endif

void register_bench(const char* name, const char* summary, int kind) {
  static std::vector<std::unique_ptr<mx8::cli::CommandRegistration>> regs;
  regs.push_back(std::make_unique<mx8::cli::CommandRegistration>(
      std::string("bench ") + name, summary, [name, kind](CLI::App& app) {
        auto o = std::make_shared<BenchOptions>();
        add_common_options(app, o);
        if (kind != 1) {
          app.add_option("--m", o->ms,
                         "M values (default: 64 128 4096 for cuda-gemm, 1 2 4 8 16 for cuda-gemv)");
          app.add_option("--tile", o->tile,
                         "force a tile shape BMxBN[wW][cC][sS] (S: stages, at most what fits; default: the "
                         "heuristic's; MXFP8 takes BM 64 or 128 and S from it)");
          app.add_flag("--mx8-only", o->mx8_only, "time only mx8's float-scale GEMM (tile sweeps)");
          app.add_option("--shapes", o->shapes,
                         "NxK products instead of DeepSeek-V3's six (experiments; PERF.md is left alone)")
              ->delimiter(',');
          app.add_option("--flush-mb", o->flush_mb,
                         "MB written to flush L2 before each timed run (default 512; DeepGEMM's kernel-time "
                         "protocol writes 8192, which also rests the GPU between runs)")
              ->check(CLI::Range(512, 16384));
        }
        return mx8::cli::CommandRun([o, name, kind] {
#ifndef MX8_HAVE_CUDA
          (void)kind;
          no_cuda();
#else
          if (!device_available()) throw mx8::Error("bench " + std::string(name) + ": no CUDA device on this machine");
          const std::string cmd = command_line(name);
          if (kind == 0 || kind == 3) run_gemm_bench(*o, false, kind == 3 ? command_line("cuda") : cmd);
          if (kind == 2 || kind == 3) run_gemm_bench(*o, true, kind == 3 ? command_line("cuda") : cmd);
          if (kind == 1 || kind == 3) run_quantize_bench(*o, kind == 3 ? command_line("cuda") : cmd);
#endif
        });
      }));
}

struct Registrar {
  Registrar() {
    register_bench("cuda-gemm", "FP8 block-scaled GEMM on the GPU vs cuBLASLt (DeepSeek-V3 shapes)", 0);
    register_bench("cuda-quantize", "GPU quantizers/dequantizer throughput vs device copy bandwidth", 1);
    register_bench("cuda-gemv", "FP8 skinny GEMM (M = 1..16) on the GPU: weight bandwidth vs cuBLASLt", 2);
    register_bench("cuda", "all CUDA benchmarks (cuda-gemm, cuda-gemv, cuda-quantize)", 3);
  }
} registrar;

}  // namespace
