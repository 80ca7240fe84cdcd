// mx8 convert IN OUT --scheme ds-fp8|mxfp8|mxfp4|bf16: checkpoint conversion (src/convert).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "mx8/convert/convert.h"
#include "mx8/error.h"

namespace {

struct Args {
  std::string in, out, scheme = "ds-fp8", rule = "ceil";
  std::vector<std::string> keep, quantize;
  int threads = 0;
  std::string shard_size = "5GB";
  bool force = false, stats = false, verbose = false, no_progress = false;
};

// "5GB", "500MB", "2GiB", "123" -> bytes.
uint64_t parse_size(const std::string& s) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    throw mx8::Error("--shard-size: cannot read \"" + s + "\" as a size (e.g. 5GB, 500MB, 1000000)");
  }
  std::string unit = s.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 1;
  if (unit == "" || unit == "B")
    mult = 1;
  else if (unit == "KB")
    mult = 1e3;
  else if (unit == "MB")
    mult = 1e6;
  else if (unit == "GB")
    mult = 1e9;
  else if (unit == "KIB")
    mult = 1024.0;
  else if (unit == "MIB")
    mult = 1024.0 * 1024;
  else if (unit == "GIB")
    mult = 1024.0 * 1024 * 1024;
  else
    throw mx8::Error("--shard-size: unknown unit \"" + s.substr(pos) + "\" (B, KB, MB, GB, KiB, MiB, GiB)");
  if (!(v > 0)) throw mx8::Error("--shard-size must be positive");
  return static_cast<uint64_t>(v * mult);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

void print_report(const mx8::convert::ConvertReport& r, bool verbose) {
  int quantized = 0, requantized = 0, kept = 0, exact = 0, nonfinite = 0;
  int64_t nonpow2 = 0, scales = 0;
  for (const auto& t : r.tensors) {
    if (t.action == "quantize")
      ++quantized;
    else if (t.action == "requantize")
      ++requantized, exact += t.exact();
    else
      ++kept;
    nonpow2 += t.nonpow2_scales;
    scales += t.input_scales;
    nonfinite += t.nonfinite > 0;
  }
  if (verbose) std::printf("%-56s %-10s %-28s %-26s %s\n", "tensor", "action", "in", "out", "shape / SQNR");
  for (const auto& t : r.tensors) {
    // Quietly: only what changed more than the format itself implies (inexact requantization).
    // Non-finite values are always shown: they are never "exact", whatever the rest measured.
    const bool show = verbose || (t.measured && t.action != "quantize" && !t.exact()) ||
                      t.nonpow2_scales > 0 || t.nonfinite > 0;
    if (!show) continue;
    std::string err;
    if (t.nonfinite > 0)
      err = "  " + std::to_string(t.nonfinite) + " non-finite values (NaN/Inf), not exact;";
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (t.measured && t.nonfinite > 0 && t.nonfinite == numel)
      err += "  (every value)";  // no finite rest to measure
    else if (t.measured)
      err += t.sqnr_db == INFINITY ? (t.nonfinite ? "  the finite rest exact" : "  exact")
                                   : "  SQNR " + std::to_string(t.sqnr_db).substr(0, 6) + " dB, max |err| " +
                                         std::to_string(t.max_abs_err);
    if (t.nonpow2_scales)
      err += "  (" + std::to_string(t.nonpow2_scales) + "/" + std::to_string(t.input_scales) +
             " input scales not powers of two)";
    std::printf("%-56s %-10s %-28s %-26s %s%s\n", t.name.c_str(), t.action.c_str(), t.in_dtype.c_str(),
                t.out_dtype.c_str(), shape_text(t.shape).c_str(), err.c_str());
  }
  std::printf("%s -> %s: %zu tensors (%d quantized, %d requantized, %d kept/cast), %d shard%s\n",
              r.input.c_str(), r.output.c_str(), r.tensors.size(), quantized, requantized, kept, r.shards,
              r.shards == 1 ? "" : "s");
  std::printf("tensor bytes %.3f GB -> file bytes %.3f GB (%.1f%%)\n", r.in_bytes / 1e9, r.out_bytes / 1e9,
              r.in_bytes ? 100.0 * r.out_bytes / r.in_bytes : 0.0);
  if (requantized)
    std::printf("requantized tensors: %d exactly (same values), %d with error (listed above)\n", exact,
                requantized - exact);
  if (nonfinite) std::printf("tensors with non-finite values (NaN/Inf, listed above): %d\n", nonfinite);
  if (scales)
    std::printf("input scales not powers of two: %lld of %lld\n", (long long)nonpow2, (long long)scales);
  std::printf("time %.2f s (%.1f MB/s of input), peak memory (RSS) %.1f MB\n", r.seconds,
              r.seconds > 0 ? r.in_bytes / r.seconds / 1e6 : 0.0, r.peak_rss_bytes / 1e6);
  if (!r.copied_files.empty()) {
    std::printf("carried along:");
    for (const auto& f : r.copied_files) std::printf(" %s", f.c_str());
    std::printf("\n");
  }
}

mx8::cli::CommandRegistration reg{
    "convert", "Convert a Hugging Face folder or GGUF file to UE8M0 FP8 (ds-fp8), MXFP8, MXFP4 or BF16",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      app.add_option("IN", a->in,
                     "Hugging Face model folder (sharded or not), .safetensors file, or GGUF file")
          ->required();
      app.add_option("OUT", a->out, "output folder (created; must not exist unless --force)")->required();
      app.add_option("--scheme", a->scheme, "ds-fp8 (DeepSeek-V3.1 layout), mxfp8, mxfp4, or bf16")
          ->check(CLI::IsMember({"ds-fp8", "mxfp8", "mxfp4", "bf16"}));
      app.add_option("--scale-rule", a->rule,
                     "ceil (UE8M0, never saturates; default), floor (OCP MX), fp32 (ds-fp8 only)")
          ->check(CLI::IsMember({"ceil", "floor", "fp32"}));
      app.add_option("--keep", a->keep,
                     "glob of tensors to keep in high precision (repeatable; wins over --quantize)")
          ->allow_extra_args(false);
      app.add_option("--quantize", a->quantize,
                     "glob of tensors to quantize despite the defaults (repeatable)")
          ->allow_extra_args(false);
      app.add_option("--threads", a->threads, "worker threads (0: all cores)")->check(CLI::Range(0, 4096));
      app.add_option("--shard-size", a->shard_size, "largest output shard, e.g. 5GB (default), 500MB");
      app.add_flag("--force", a->force, "replace OUT if it exists (only once the new one is complete)");
      app.add_flag("--stats", a->stats,
                   "measure SQNR of every quantized tensor (always done when requantizing)");
      app.add_flag("-v,--verbose", a->verbose, "print every tensor");
      app.add_flag("--no-progress", a->no_progress,
                   "no progress bar (it is shown only when stderr is a terminal)");
      return [a] {
        mx8::convert::ConvertOptions opt;
        opt.scheme = *mx8::convert::parse_scheme(a->scheme);
        opt.rule = *mx8::format::parse_scale_rule(a->rule);
        opt.keep = a->keep;
        opt.quantize = a->quantize;
        opt.threads = a->threads;
        opt.shard_size = parse_size(a->shard_size);
        opt.overwrite = a->force;
        opt.stats = a->stats;
        opt.progress = !a->no_progress && ::isatty(STDERR_FILENO);
        auto report = mx8::convert::convert_checkpoint(a->in, a->out, opt);
        print_report(report, a->verbose);
        for (const auto& w : report.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      };
    }};

}  // namespace
