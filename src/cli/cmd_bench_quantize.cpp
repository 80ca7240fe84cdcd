// `mx8 bench quantize`: CPU quantize and dequantize throughput per granularity and source type, next
// to memcpy measured in the same run (1 and 2 threads by default), and the scalar reference
// quantizer for scale. Writes the cpu-quantize section of docs/PERF.md.
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/bench_cpu_util.h"
#include "cli/command.h"
#include "cli/perf_report.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/backend/cpu/quantize.h"
#include "mx8/error.h"
#include "mx8/format/quantize_ref.h"

namespace {

using mx8::cpu::ThreadPool;
using mx8::format::SourceType;
namespace bench = mx8::cli::bench;
namespace format = mx8::format;

struct Options {
  int64_t rows = 4096, cols = 4096;
  std::string element = "e4m3";
  std::string threads = "1,2";
  std::string granularities = "tensor,row,1x128,1x32,128x128,32x32";
  double min_time = 0.3;
  mx8::cli::PerfMdTarget perf;
};

const char* src_name(SourceType t) {
  return t == SourceType::f32 ? "f32" : t == SourceType::bf16 ? "bf16" : "f16";
}

using mx8::cli::fmt;

void run(const Options& o) {
  if (o.rows <= 0 || o.cols <= 0) throw mx8::Error("--rows and --cols must be positive");
  auto element = format::parse_element_format(o.element);
  if (!element) throw mx8::Error("--element: unknown element format '" + o.element + "'");
  std::vector<format::Blocking> blockings;
  {
    std::stringstream ss(o.granularities);
    std::string item;
    while (std::getline(ss, item, ',')) {
      auto b = format::parse_blocking(item);
      if (!b) throw mx8::Error("--granularities: unknown granularity '" + item + "'");
      blockings.push_back(*b);
    }
  }
  const auto threads = bench::parse_int_list(o.threads, "--threads");
  const int64_t n = o.rows * o.cols;

  // Source tensors: normal-ish values, one row scale per row, in every source type.
  std::vector<float> f32(static_cast<size_t>(n));
  std::vector<uint16_t> bf16(static_cast<size_t>(n)), f16(static_cast<size_t>(n));
  bench::Rng rng(3);
  for (int64_t i = 0; i < n; ++i) {
    f32[i] = rng.normal(0.05f);
    bf16[i] = format::f32_to_bf16_rne(f32[i]);
    f16[i] = format::f32_to_f16_rne(f32[i]);
  }
  std::map<int, std::unique_ptr<ThreadPool>> pools;
  std::map<int, double> memcpy_bw;
  for (int64_t t : threads) {
    pools[int(t)] = std::make_unique<ThreadPool>(int(t));
    memcpy_bw[int(t)] = bench::measure_memcpy_gbps(pools[int(t)].get(), size_t(n) * 4);
  }
  std::printf("mx8 bench quantize: %lldx%lld, element %s, rule ceil, UE8M0 scales, ISA %s\n",
              (long long)o.rows, (long long)o.cols, o.element.c_str(),
              mx8::cpu::isa_name(mx8::cpu::active_isa()));
  for (auto& [t, bw] : memcpy_bw) std::printf("memcpy, %d thread(s): %.1f GB/s\n", t, bw);

  struct Row {
    SourceType src;
    std::string gran;
    int threads;
    double q_gbps, dq_gbps;
    double q_cpu_gbps;  // input bytes per CPU-second (all threads)
  };
  std::vector<Row> rows;
  std::vector<float> deq(static_cast<size_t>(n));
  for (const format::Blocking& b : blockings) {
    format::QuantSpec spec{*element, format::ScaleRule::ceil, b, format::ScaleStorage::ue8m0, true, 0.f};
    format::validate_spec(spec, o.rows, o.cols);
    std::vector<uint8_t> codes(format::code_bytes(spec, o.rows, o.cols)),
        scales(format::scale_bytes(spec, o.rows, o.cols));
    for (SourceType src : {SourceType::bf16, SourceType::f16, SourceType::f32}) {
      const void* in = src == SourceType::f32    ? static_cast<const void*>(f32.data())
                       : src == SourceType::bf16 ? static_cast<const void*>(bf16.data())
                                                 : static_cast<const void*>(f16.data());
      const double in_bytes = double(n) * (src == SourceType::f32 ? 4 : 2);
      for (int64_t t : threads) {
        ThreadPool* pool = pools[int(t)].get();
        bench::Timing qt = bench::median_timing(
            [&] { mx8::cpu::quantize(src, in, o.rows, o.cols, spec, codes.data(), scales.data(), pool); },
            o.min_time);
        double q = qt.wall_ms;
        double dq = bench::median_ms(
            [&] {
              mx8::cpu::dequantize(codes.data(), scales.data(), o.rows, o.cols, spec, deq.data(), pool);
            },
            o.min_time);
        Row r{src,
              format::blocking_name(b),
              int(t),
              in_bytes / (q * 1e6),
              double(n) * 4 / (dq * 1e6),
              in_bytes / (qt.cpu_ms * 1e6)};
        rows.push_back(r);
        std::printf(
            "%-5s %-8s %dT  quantize %6.2f GB/s in (%3.0f%% of memcpy; %6.2f GB/s per CPU-second)   "
            "dequantize %6.2f GB/s f32 out\n",
            src_name(src), r.gran.c_str(), r.threads, r.q_gbps, 100 * r.q_gbps / memcpy_bw[r.threads],
            r.q_cpu_gbps, r.dq_gbps);
        std::fflush(stdout);
      }
    }
  }
  // The scalar reference on the headline case, for scale.
  double ref_gbps = 0;
  {
    format::QuantSpec spec{
        *element, format::ScaleRule::ceil, format::Blocking::tile(128), format::ScaleStorage::ue8m0, true,
        0.f};
    std::vector<uint8_t> codes(format::code_bytes(spec, o.rows, o.cols)),
        scales(format::scale_bytes(spec, o.rows, o.cols));
    double ms = bench::median_ms(
        [&] {
          format::quantize_ref(SourceType::bf16, bf16.data(), o.rows, o.cols, spec, codes.data(),
                               scales.data());
        },
        o.min_time, 2);
    ref_gbps = double(n) * 2 / (ms * 1e6);
    std::printf("format::quantize_ref bf16 1x128 (scalar reference), 1 thread: %.2f GB/s\n", ref_gbps);
  }

  std::string md = "## CPU quantize / dequantize (`mx8 bench quantize`)\n\n";
  md += "Machine: " + mx8::cli::machine_description() + "; ISA " +
        mx8::cpu::isa_name(mx8::cpu::active_isa()) + ". Date: " + mx8::cli::today_utc() +
        ". Command: `mx8 bench quantize --rows " + std::to_string(o.rows) + " --cols " +
        std::to_string(o.cols) + " --element " + o.element + " --threads " + o.threads + "`.\n\n";
  md += "A " + std::to_string(o.rows) + " x " + std::to_string(o.cols) + " tensor to " + o.element +
        ", rule ceil, UE8M0 scales (bit-identical to format::quantize_ref). Quantize GB/s counts the input "
        "(source) bytes; dequantize GB/s counts the f32 output. memcpy measured in the same run: ";
  for (auto& [t, bw] : memcpy_bw) md += std::to_string(t) + " thread(s) " + fmt("%.1f", bw) + " GB/s; ";
  md += "the scalar reference quantize_ref (bf16, 1x128, 1 thread): " + fmt("%.2f", ref_gbps) +
        " GB/s. Target (issue 2): bf16 -> E4M3 1x128 ceil >= 2 GB/s of input per core. \"Per CPU-second\" "
        "divides the "
        "input bytes by the CPU time all threads spent (what a core delivers while it runs; robust when the "
        "machine is "
        "shared, unlike wall time).\n\n";
  md +=
      "| source | granularity | threads | quantize GB/s (input) | % of memcpy | quantize GB/s per CPU-s "
      "| dequantize GB/s (f32 out) |\n";
  md += "|---|---|---:|---:|---:|---:|---:|\n";
  for (const Row& r : rows)
    md += std::string("| ") + src_name(r.src) + " | " + r.gran + " | " + std::to_string(r.threads) + " | " +
          fmt("%.2f", r.q_gbps) + " | " + fmt("%.0f%%", 100 * r.q_gbps / memcpy_bw[r.threads]) + " | " +
          fmt("%.2f", r.q_cpu_gbps) + " | " + fmt("%.2f", r.dq_gbps) + " |\n";
  md += "\nLoad average when the run started: " + mx8::cli::load_average() +
        " (other work on the same cores lowers wall-clock figures; run-to-run spread is ~12% even when idle, "
        "cpu-anchor.md).\n";
  if (o.perf.write) {
    std::string path = o.perf.path();
    mx8::cli::update_perf_section(path, "cpu-quantize", md);
    std::printf("updated %s (section cpu-quantize)\n", path.c_str());
  }
}

mx8::cli::CommandRegistration reg{
    "bench quantize", "CPU quantize/dequantize throughput per granularity and source type, next to memcpy",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--rows", o->rows, "tensor rows")->capture_default_str();
      app.add_option("--cols", o->cols, "tensor columns (the reduction dimension)")->capture_default_str();
      app.add_option("--element", o->element, "element format: e4m3, e5m2, e3m2, e2m3, e2m1, int8")
          ->capture_default_str();
      app.add_option("--granularities", o->granularities, "comma-separated: tensor, row, 1xK, BxB")
          ->capture_default_str();
      app.add_option("--threads", o->threads, "thread counts, comma-separated")->capture_default_str();
      app.add_option("--min-time", o->min_time, "seconds per case")
          ->capture_default_str()
          ->check(CLI::Range(0.01, 3600.0));
      o->perf.add_options(app);
      return [o] { run(*o); };
    }};

}  // namespace
