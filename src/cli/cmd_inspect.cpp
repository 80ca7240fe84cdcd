// mx8 inspect PATH [--compare ORIGINAL]: tensors, sizes against BF16/FP32, scale statistics, and
// the error against an original checkpoint.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.h"
#include "mx8/convert/inspect.h"
#include "mx8/error.h"

namespace {

struct Args {
  std::string path, compare;
  int threads = 0;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string mb(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f MB", bytes / 1e6);
  return buf;
}

std::string db(double v) {
  if (v == INFINITY) return "exact";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f dB", v);
  return buf;
}

// "2^-9..2^-3" and a bar per exponent, most common first limited to a few lines.
void print_histogram(const std::map<int, int64_t>& h, int64_t total) {
  int64_t peak = 0;
  for (const auto& [e, n] : h) peak = std::max(peak, n);
  for (const auto& [e, n] : h) {
    const int width = peak ? static_cast<int>(40.0 * n / peak + 0.5) : 0;
    std::printf("    2^%-4d %10lld  %5.1f%%  %s\n", e, static_cast<long long>(n), 100.0 * n / total,
                std::string(std::max(width, 1), '#').c_str());
  }
}

void run(const Args& a) {
  std::optional<std::string> compare;
  if (!a.compare.empty()) compare = a.compare;
  auto r = mx8::convert::inspect_checkpoint(a.path, compare, a.threads);

  std::printf("%s (%s), %zu tensors\n\n", r.path.c_str(), r.format.c_str(), r.tensors.size());
  std::printf("%-52s %-22s %-16s %12s  %s\n", "tensor", "dtype", "shape", "bytes",
              compare ? "vs original" : "");
  std::map<int, int64_t> all_exp;
  int64_t scales = 0, nonpow2 = 0, codes = 0, saturated = 0, quantized = 0, compared = 0;
  double worst_sqnr = INFINITY;
  std::string worst, first_nonfinite;
  int64_t nonfinite_tensors = 0;
  for (const auto& t : r.tensors) {
    std::string extra;
    if (t.quantized) {
      ++quantized;
      for (const auto& [e, n] : t.scale_exponents) all_exp[e] += n;
      scales += t.scales;
      nonpow2 += t.nonpow2_scales;
      codes += t.codes;
      saturated += t.saturated;
      char buf[96];
      if (!t.scale_exponents.empty()) {  // an empty tensor has none
        std::snprintf(buf, sizeof buf, " scales 2^%d..2^%d,", t.scale_exponents.begin()->first,
                      t.scale_exponents.rbegin()->first);
        extra += buf;
      }
      std::snprintf(buf, sizeof buf, " sat %.3f%%", t.codes ? 100.0 * t.saturated / t.codes : 0.0);
      extra += buf;
      if (t.nonpow2_scales) extra += ", " + std::to_string(t.nonpow2_scales) + " scales not 2^k";
    }
    if (t.compared) {
      ++compared;
      char buf[160];
      if (t.nonfinite > 0 && t.nonfinite == t.numel) {
        std::snprintf(buf, sizeof buf, " %lld non-finite (NaN/Inf) values: every one",
                      static_cast<long long>(t.nonfinite));
        if (nonfinite_tensors++ == 0) first_nonfinite = t.name;
      } else if (t.nonfinite) {
        // NaN/Inf values have no error to print: say how many, and what the finite rest measured.
        std::snprintf(buf, sizeof buf, " %lld non-finite (NaN/Inf) values; the rest: SQNR %s, max|err| %.3g",
                      static_cast<long long>(t.nonfinite), db(t.sqnr_db).c_str(), t.max_abs_err);
        if (nonfinite_tensors++ == 0) first_nonfinite = t.name;
      } else {
        std::snprintf(buf, sizeof buf, " SQNR %s, rel %.3g, max|err| %.3g", db(t.sqnr_db).c_str(), t.rel_err,
                      t.max_abs_err);
      }
      extra = std::string(buf) + extra;
      if (t.sqnr_db < worst_sqnr) worst_sqnr = t.sqnr_db, worst = t.name;
    } else if (compare && !t.compare_note.empty()) {
      extra = " (" + t.compare_note + ")" + extra;
    }
    std::printf("%-52s %-22s %-16s %12llu %s\n", t.name.c_str(), t.dtype.c_str(), shape_text(t.shape).c_str(),
                static_cast<unsigned long long>(t.bytes), extra.c_str());
  }
  std::printf("\ntotal tensor bytes  %s\n", mb(r.bytes).c_str());
  if (r.bf16_bytes > 0) {  // else every tensor is empty, and there is nothing to compare
    std::printf("same model in BF16  %s   -> this file is %.1f%% of it (%.1f%% less memory)\n",
                mb(r.bf16_bytes).c_str(), 100.0 * r.bytes / r.bf16_bytes,
                100.0 - 100.0 * r.bytes / r.bf16_bytes);
    std::printf("same model in FP32  %s   -> this file is %.1f%% of it (%.1f%% less memory)\n",
                mb(r.f32_bytes).c_str(), 100.0 * r.bytes / r.f32_bytes,
                100.0 - 100.0 * r.bytes / r.f32_bytes);
  }
  if (quantized) {
    std::printf(
        "\n%lld quantized tensors; %lld scales (%lld not powers of two); %.4f%% of codes at the format's "
        "max\n",
        static_cast<long long>(quantized), static_cast<long long>(scales), static_cast<long long>(nonpow2),
        codes ? 100.0 * saturated / codes : 0.0);
    std::printf("  scale exponents (log2 of the dequantization multiplier):\n");
    print_histogram(all_exp, scales);
  }
  if (compare) {
    std::printf("\ncompared %lld tensors with %s", static_cast<long long>(compared), compare->c_str());
    if (compared && worst.empty() && nonfinite_tensors == 0)
      std::printf("; every one equal to it");  // no tensor set a finite SQNR, none had NaN/Inf: all exact
    else if (!worst.empty())
      std::printf("; lowest SQNR %s (%s)", db(worst_sqnr).c_str(), worst.c_str());
    if (nonfinite_tensors)
      std::printf("; %lld with non-finite (NaN/Inf) values, not exact (first: %s)",
                  static_cast<long long>(nonfinite_tensors), first_nonfinite.c_str());
    std::printf("\n");
  }
}

mx8::cli::CommandRegistration reg{
    "inspect",
    "List a checkpoint's tensors, sizes vs BF16/FP32, scale statistics; --compare for SQNR vs an original",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      app.add_option("PATH", a->path, "Hugging Face folder, .safetensors file, or GGUF file")->required();
      app.add_option("--compare", a->compare,
                     "original checkpoint to measure the error against (same tensor names)");
      app.add_option("--threads", a->threads, "threads for --compare (0: all cores)")
          ->check(CLI::Range(0, 4096));
      return [a] { run(*a); };
    }};

}  // namespace
