// Checkpoint inspection and comparison (mx8 inspect).
#include "mx8/convert/inspect.h"

#include <cmath>
#include <cstring>
#include <mutex>

#include "convert/source.h"
#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/convert/convert.h"
#include "mx8/error.h"

namespace mx8::convert {

namespace {

int scale_exponent(const Source& s, int64_t i, bool* pow2) {
  if (s.scale_dtype == io::DType::F8_E8M0) {
    *pow2 = s.scales[i] != 0xFF;
    return static_cast<int>(s.scales[i]) - 127;
  }
  uint32_t b;
  std::memcpy(&b, s.scales + 4 * i, 4);
  const int e = static_cast<int>((b >> 23) & 0xFF);
  *pow2 = (b & 0x7FFFFF) == 0 && e != 0 && e != 0xFF;
  return e - 127;  // floor(log2) for normal values
}

void scale_stats(const Source& s, InspectTensor& t) {
  const int64_t n =
      static_cast<int64_t>(s.scale_dtype == io::DType::F32 ? s.scale_nbytes / 4 : s.scale_nbytes);
  t.scales = n;
  for (int64_t i = 0; i < n; ++i) {
    bool pow2 = true;
    t.scale_exponents[scale_exponent(s, i, &pow2)]++;
    t.nonpow2_scales += !pow2;
  }
  // Codes at the largest magnitude: E4M3 0x7E/0xFE (448), E2M1 nibble 7/15 (6).
  if (s.qspec.element == format::ElementFormat::e2m1) {
    for (uint64_t i = 0; i < s.nbytes; ++i) {
      t.saturated += (s.data[i] & 7) == 7;
      t.saturated += ((s.data[i] >> 4) & 7) == 7;
    }
    t.codes = static_cast<int64_t>(2 * s.nbytes);
  } else {
    for (uint64_t i = 0; i < s.nbytes; ++i) t.saturated += (s.data[i] & 0x7F) == 0x7E;
    t.codes = static_cast<int64_t>(s.nbytes);
  }
}

void compare_tensor(const Source& a, const Source& b, cpu::ThreadPool& pool, InspectTensor& t) {
  if (!a.is_float() || !b.is_float()) {
    t.compare_note = "not floating point";
    return;
  }
  if (a.shape != b.shape) {
    t.compare_note = "shapes differ";
    return;
  }
  const int64_t R = a.rows(), C = a.cols();
  const int64_t align = std::max<int64_t>(128, std::max(a.row_alignment(), b.row_alignment()));
  int64_t step = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(C, 1));
  step = (step + align - 1) / align * align;
  const int64_t n_chunks = R == 0 ? 0 : (R + step - 1) / step;
  std::mutex m;
  double sx = 0, se = 0, mx = 0;
  int64_t nonfinite = 0;
  pool.parallel_for(static_cast<size_t>(n_chunks), 1, [&](size_t begin, size_t end) {
    std::vector<float> x, y;
    for (size_t c = begin; c < end; ++c) {
      const int64_t r0 = static_cast<int64_t>(c) * step, r1 = std::min(R, r0 + step);
      x.resize(static_cast<size_t>((r1 - r0) * C));
      y.resize(x.size());
      b.read_rows_f32(r0, r1, x.data());  // the original
      a.read_rows_f32(r0, r1, y.data());
      double lx = 0, le = 0, lm = 0;
      int64_t bad = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        // NaN/Inf on either side has no error to measure; counted, so the tensor is never "exact".
        if (!std::isfinite(x[i]) || !std::isfinite(y[i])) {
          ++bad;
          continue;
        }
        const double e = static_cast<double>(y[i]) - x[i];
        lx += static_cast<double>(x[i]) * x[i];
        le += e * e;
        lm = std::max(lm, std::fabs(e));
      }
      std::lock_guard lock(m);
      sx += lx;
      se += le;
      mx = std::max(mx, lm);
      nonfinite += bad;
    }
  });
  t.compared = true;
  t.nonfinite = nonfinite;
  t.sqnr_db = se == 0 ? INFINITY : 10 * std::log10(sx / se);
  t.rel_err = sx == 0 ? (se == 0 ? 0 : INFINITY) : std::sqrt(se / sx);
  t.max_abs_err = mx;
}

}  // namespace

InspectReport inspect_checkpoint(const std::string& path, const std::optional<std::string>& compare,
                                 int threads) {
  check_thread_count(threads);
  Input in = open_input(path);
  std::optional<Input> orig;
  if (compare) orig = open_input(*compare);
  std::map<std::string, const Source*> orig_by_name;
  if (orig)
    for (const auto& s : orig->tensors) orig_by_name[s.name] = &s;
  cpu::ThreadPool pool(threads);
  InspectReport r;
  r.path = path;
  r.format = in.is_gguf ? "gguf" : "safetensors";
  for (const auto& s : in.tensors) {
    InspectTensor t;
    t.name = s.name;
    t.dtype = s.describe();
    t.shape = s.shape;
    t.numel = 1;
    for (int64_t d : s.shape) t.numel *= d;
    t.bytes = s.nbytes + (s.kind == Source::Kind::quantized ? s.scale_nbytes : 0);
    t.is_float = s.is_float();
    t.quantized = s.kind == Source::Kind::quantized;
    if (t.quantized) scale_stats(s, t);
    if (orig) {
      auto it = orig_by_name.find(s.name);
      if (it == orig_by_name.end())
        t.compare_note = "not in the original";
      else
        compare_tensor(s, *it->second, pool, t);
    }
    r.bytes += t.bytes;
    // The same model in BF16 / FP32: real-valued tensors at 2 / 4 bytes per value, others as they are.
    r.bf16_bytes += t.is_float ? 2 * static_cast<uint64_t>(t.numel) : t.bytes;
    r.f32_bytes += t.is_float ? 4 * static_cast<uint64_t>(t.numel) : t.bytes;
    r.tensors.push_back(std::move(t));
    s.release();
  }
  return r;
}

}  // namespace mx8::convert
