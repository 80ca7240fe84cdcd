// `mx8 quant-error`: what quantization costs in accuracy. Quantizes one tensor (random with a chosen
// distribution and outliers, a raw f32 file, or a tensor of a .safetensors file) under each element
// format x scale rule x granularity with the scalar reference, dequantizes, and prints the error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "mx8/backend/cpu/quantize.h"
#include "mx8/error.h"
#include "mx8/format/quantize_ref.h"
#include "mx8/io/safetensors.h"

namespace {

using namespace mx8::format;

struct QuantErrorArgs {
  std::string dist = "normal";
  double outliers = 0.0;
  double outlier_scale = 100.0;
  int64_t rows = 256, cols = 4096;
  uint64_t seed = 1;
  std::string file, tensor;
  std::string formats = "e4m3,e5m2,e3m2,e2m3,e2m1,int8";
  std::string rules = "ceil,floor,fp32";
  std::string granularities = "tensor,row,1x128,1x32,128x128,32x32";
  float amax_floor = 0.f;
  bool no_sat = false;
  bool reference = false;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::vector<float> random_tensor(const QuantErrorArgs& a) {
  std::mt19937_64 rng(a.seed);
  std::vector<float> x(size_t(a.rows * a.cols));
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (auto& v : x) {
    if (a.dist == "normal") {
      v = float(normal(rng));
    } else if (a.dist == "uniform") {
      v = float(2.0 * u01(rng) - 1.0);
    } else {  // laplace, unit scale, by inverting its CDF
      double p = u01(rng) - 0.5;
      v = float(-std::copysign(1.0, p) * std::log1p(-2.0 * std::fabs(p)));
    }
    if (a.outliers > 0 && u01(rng) < a.outliers) v *= float(a.outlier_scale);
  }
  return x;
}

std::vector<float> read_raw_f32(const QuantErrorArgs& a, int64_t& rows) {
  std::ifstream in(a.file, std::ios::binary | std::ios::ate);
  if (!in) throw mx8::Error(a.file + ": cannot open for reading");
  auto size = int64_t(in.tellg());
  if (size == 0) throw mx8::Error(a.file + ": the file is empty: no values to quantize");
  if (size % 4 != 0)
    throw mx8::Error(a.file + ": size " + std::to_string(size) + " is not a whole number of f32 values");
  if ((size / 4) % a.cols != 0)
    throw mx8::Error(a.file + ": " + std::to_string(size / 4) + " values do not fill rows of --cols " +
                     std::to_string(a.cols));
  rows = size / 4 / a.cols;
  std::vector<float> x(size_t(size / 4));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(x.data()), size);
  if (!in) throw mx8::Error(a.file + ": read failed");
  return x;
}

std::vector<float> read_safetensors(const QuantErrorArgs& a, int64_t& rows, int64_t& cols) {
  using mx8::io::DType;
  auto st = mx8::io::SafetensorsFile::open(a.file);
  if (a.tensor.empty()) {
    std::string names;
    for (const auto& t : st.tensors()) names += (names.empty() ? "" : ", ") + t.name();
    throw mx8::Error(a.file + ": choose a tensor with --tensor (" + names + ")");
  }
  const auto& t = st.get(a.tensor);
  if (t.shape().empty()) throw mx8::Error(a.file + ": tensor " + a.tensor + " is a scalar");
  if (t.numel() == 0) throw mx8::Error(a.file + ": tensor " + a.tensor + " is empty: no values to quantize");
  cols = t.shape().back();
  rows = cols ? t.numel() / cols : 0;
  std::vector<float> x(size_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (t.dtype() == DType::F32) {
      std::memcpy(&x[size_t(i)], t.data + 4 * i, 4);
    } else if (t.dtype() == DType::BF16 || t.dtype() == DType::F16) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      x[size_t(i)] = t.dtype() == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    } else {
      throw mx8::Error(a.file + ": tensor " + a.tensor + " is " +
                       std::string(mx8::io::dtype_name(t.dtype())) + "; quant-error reads F32, BF16 and F16");
    }
  }
  return x;
}

struct ErrorStats {
  double sqnr_db, max_rel, mean_rel, saturated, bytes_per_value;
};

// pool == nullptr: the scalar reference; otherwise the fast CPU quantizer (bit-identical to it).
ErrorStats measure(const std::vector<float>& x, int64_t rows, int64_t cols, const QuantSpec& spec,
                   mx8::cpu::ThreadPool* pool) {
  std::vector<uint8_t> codes(code_bytes(spec, rows, cols)), scales(scale_bytes(spec, rows, cols));
  std::vector<float> back(x.size());
  if (pool) {
    mx8::cpu::quantize(SourceType::f32, x.data(), rows, cols, spec, codes.data(), scales.data(), pool);
    mx8::cpu::dequantize(codes.data(), scales.data(), rows, cols, spec, back.data(), pool);
  } else {
    quantize_ref(SourceType::f32, x.data(), rows, cols, spec, codes.data(), scales.data());
    dequantize_ref(codes.data(), scales.data(), rows, cols, spec, back.data());
  }
  ScaleGrid g = scale_grid(spec.blocking, rows, cols);
  std::vector<float> grid(size_t(g.rows * g.cols));
  scales_to_f32_grid(scales.data(), spec, rows, cols, grid.data());
  std::vector<float> inverse(grid.size());
  for (size_t i = 0; i < grid.size(); ++i)
    inverse[i] = spec.rule == ScaleRule::fp32
                     ? 1.0f / grid[i]
                     : ue8m0_reciprocal_f32(ue8m0_from_f32(grid[i], Ue8m0Round::down, false));
  // An element saturates when round-to-nearest-even without a largest code would have gone past max: its
  // scaled magnitude is above max + half an ulp, or on that tie when max's code is odd (it rounds up).
  const ElementTraits t = element_traits(spec.element);
  const double below_max = decode_element(spec.element, uint8_t(t.max_code - 1));
  const double tie = t.max_normal + (t.max_normal - below_max) / 2;
  double sig = 0, noise = 0, max_rel = 0, sum_rel = 0;
  int64_t nonzero = 0, saturated = 0, finite = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      size_t i = size_t(r * cols + c);
      double xv = x[i], d = back[i];
      if (!std::isfinite(xv)) continue;
      ++finite;
      double e = d - xv;
      sig += xv * xv;
      noise += e * e;
      if (xv != 0) {
        double rel = std::fabs(e) / std::fabs(xv);
        // A NaN beside finite values makes its block's scale NaN and every value in it NaN: the largest
        // error is then NaN, which std::max would drop (max rel read 0 while the mean read nan).
        if (!(rel <= max_rel) && !std::isnan(max_rel)) max_rel = rel;
        sum_rel += rel;
        ++nonzero;
      }
      // The scaled value exactly as the quantizer forms it (f32 multiply by the reciprocal).
      float inv = inverse[size_t((r / g.block_rows) * g.cols + c / g.block_cols)];
      double y = std::fabs(x[i] * inv);
      if (y > tie || (y == tie && (t.max_code & 1))) ++saturated;
    }
  ErrorStats s{};
  s.sqnr_db = noise == 0 ? INFINITY : 10 * std::log10(sig / noise);
  s.max_rel = max_rel;
  s.mean_rel = nonzero ? sum_rel / double(nonzero) : 0;
  s.saturated = finite ? double(saturated) / double(finite) : 0;
  s.bytes_per_value = double(codes.size() + scales.size()) / double(rows * cols);
  return s;
}

void run(const QuantErrorArgs& a) {
  if (a.dist != "normal" && a.dist != "uniform" && a.dist != "laplace")
    throw mx8::Error("quant-error: --dist must be normal, uniform or laplace, got '" + a.dist + "'");
  if (!(a.outliers >= 0 && a.outliers <= 1))
    throw mx8::Error("quant-error: --outliers must be a fraction in [0, 1]");
  std::vector<ElementFormat> formats;
  for (const auto& s : split(a.formats)) {
    auto f = parse_element_format(s);
    if (!f) throw mx8::Error("quant-error: unknown format '" + s + "' in --formats");
    formats.push_back(*f);
  }
  std::vector<ScaleRule> rules;
  for (const auto& s : split(a.rules)) {
    auto r = parse_scale_rule(s);
    if (!r) throw mx8::Error("quant-error: unknown scale rule '" + s + "' in --rules (ceil, floor, fp32)");
    rules.push_back(*r);
  }
  std::vector<Blocking> blockings;
  for (const auto& s : split(a.granularities)) {
    auto b = parse_blocking(s);
    if (!b) throw mx8::Error("quant-error: unknown granularity '" + s + "' (tensor, row, 1xK, BxB)");
    blockings.push_back(*b);
  }

  int64_t rows = a.rows, cols = a.cols;
  std::vector<float> x;
  std::string source;
  if (a.file.empty()) {
    if (rows <= 0 || cols <= 0) throw mx8::Error("quant-error: --rows and --cols must be positive");
    x = random_tensor(a);
    char buf[160];
    std::snprintf(buf, sizeof buf, "random %s [%lld, %lld], seed %llu, outliers %g x %g", a.dist.c_str(),
                  (long long)rows, (long long)cols, (unsigned long long)a.seed, a.outliers, a.outlier_scale);
    source = buf;
  } else if (a.file.size() > 12 && a.file.substr(a.file.size() - 12) == ".safetensors") {
    x = read_safetensors(a, rows, cols);
    source = a.file + " : " + a.tensor + " [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
  } else {
    if (cols <= 0) throw mx8::Error("quant-error: --cols must be positive");
    x = read_raw_f32(a, rows);
    source = a.file + " (raw f32) [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
  }

  std::unique_ptr<mx8::cpu::ThreadPool> pool;
  if (!a.reference) pool = std::make_unique<mx8::cpu::ThreadPool>(0);
  std::printf(
      "quant-error: %s (%s)\n", source.c_str(),
      a.reference ? "scalar reference quantizer" : "fast CPU quantizer, bit-identical to the reference");
  std::printf("scales: UE8M0 bytes for ceil/floor, f32 for fp32; amax floor %g; %s elements\n",
              double(a.amax_floor), a.no_sat ? "non-saturating" : "saturating");
  std::printf(
      "relative error is |dequantized - x| / |x| over the nonzero x; saturated = |x| / scale rounds past the "
      "largest code\n\n");
  std::printf("%-6s %-6s %-8s %9s %11s %11s %10s %8s\n", "format", "rule", "blocks", "SQNR dB", "max rel",
              "mean rel", "saturated", "B/value");
  for (ElementFormat f : formats)
    for (ScaleRule r : rules)
      for (const Blocking& b : blockings) {
        QuantSpec spec;
        spec.element = f;
        spec.rule = r;
        spec.blocking = b;
        spec.storage = r == ScaleRule::fp32 ? ScaleStorage::f32 : ScaleStorage::ue8m0;
        spec.saturate = !a.no_sat;
        spec.amax_floor = a.amax_floor;
        ErrorStats s = measure(x, rows, cols, spec, pool.get());
        std::printf("%-6s %-6s %-8s %9.2f %11.3e %11.3e %10.2e %8.4f\n", element_traits(f).name,
                    scale_rule_name(r), blocking_name(b).c_str(), s.sqnr_db, s.max_rel, s.mean_rel,
                    s.saturated, s.bytes_per_value);
      }
}

mx8::cli::CommandRegistration reg{
    "quant-error", "Quantization error (SQNR, relative error, saturation) per format, rule and granularity",
    [](CLI::App& app) {
      auto a = std::make_shared<QuantErrorArgs>();
      app.add_option("--dist", a->dist, "Random data: normal, uniform (-1..1) or laplace")
          ->capture_default_str();
      app.add_option("--outliers", a->outliers, "Fraction of random values multiplied by --outlier-scale")
          ->capture_default_str();
      app.add_option("--outlier-scale", a->outlier_scale, "Magnitude factor of the outliers")
          ->capture_default_str();
      app.add_option("--rows", a->rows, "Rows of the random tensor")->capture_default_str();
      app.add_option("--cols", a->cols,
                     "Columns (the reduction dimension); also the row length of --file raw f32")
          ->capture_default_str();
      app.add_option("--seed", a->seed, "Random seed")->capture_default_str();
      app.add_option("--file", a->file,
                     "Read the tensor instead: raw little-endian f32, or a .safetensors file");
      app.add_option("--tensor", a->tensor, "Tensor name inside a .safetensors --file (F32, BF16 or F16)");
      app.add_option("--formats", a->formats, "Comma-separated element formats")->capture_default_str();
      app.add_option("--rules", a->rules, "Comma-separated scale rules")->capture_default_str();
      app.add_option("--granularities", a->granularities, "Comma-separated: tensor, row, 1xK, BxB")
          ->capture_default_str();
      app.add_option("--amax-floor", a->amax_floor, "Clamp each block's amax from below (DeepSeek: 1e-4)");
      app.add_flag("--no-sat", a->no_sat, "Non-saturating element conversion (overflow -> NaN/Inf)");
      app.add_flag("--reference", a->reference, "Use the scalar reference quantizer instead of the fast one");
      return [a] { run(*a); };
    }};

}  // namespace
