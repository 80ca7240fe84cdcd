// CPU backend: memory, capabilities and the element-wise ops. The arithmetic order of rmsnorm,
// rope, silu and softmax follows llama2.c's run.c (f32 throughout), so that an f32 model reproduces
// its reference output bit for bit; the matmuls are in backend_cpu_matmul.cpp and attention in
// backend_cpu_attention.cpp.
#include "backend/cpu/backend_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/backend/cpu/gemv.h"
#include "mx8/backend/cpu/huge_alloc.h"
#include "mx8/backend/log_sum_exp.h"
#include "mx8/error.h"
#include "mx8/format/element.h"

namespace mx8::backend {

namespace cpu_impl {
namespace {

using mx8::cpu::ThreadPool;

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) : pool_(threads) {
    info_.name = "cpu";
    info_.description =
        "cpu: " + std::to_string(pool_.threads()) + " threads, " + mx8::cpu::isa_name(mx8::cpu::active_isa());
    info_.host_memory = true;
  }

  const BackendInfo& info() const override { return info_; }

  void* alloc(size_t bytes) override { return mx8::cpu::huge_page_alloc(bytes); }
  void free(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void synchronize() override {}
  size_t available_memory() const override {
    // MemAvailable of /proc/meminfo: what the kernel can hand out without swapping.
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char key[64];
    unsigned long long kb = 0;
    size_t out = 0;
    while (std::fscanf(f, "%63s %llu kB", key, &kb) == 2)
      if (std::string(key) == "MemAvailable:") {
        out = size_t(kb) * 1024;
        break;
      }
    std::fclose(f);
    return out;
  }

  bool supports_weight(WeightFormat f, ScaleType st) const override {
    // Every format and scale type has at least the scalar path.
    return f != WeightFormat::mxfp8 || st == ScaleType::ue8m0;
  }
  bool supports_kv(KvFormat) const override { return true; }
  std::string activation_quantization(WeightFormat) const override {
    return "none: f32 activations, weights decoded to f32 in registers, f32 accumulation";
  }

  void matmul(const WeightView& w, const float* x, int64_t m, float* y, const float* bias) override {
    validate_weight(w, "matmul");
    matmul_dispatch(w, x, m, y);
    if (bias)
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < w.n; ++c) y[r * w.n + c] += bias[c];
  }

  void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) override {
    validate_weight(table, "embedding");
    for (int64_t t = 0; t < n; ++t) {
      if (ids[t] < 0 || ids[t] >= table.n)
        throw Error("cpu backend: embedding id " + std::to_string(ids[t]) + " out of range [0, " +
                    std::to_string(table.n) + ")");
      weight_row_to_f32(table, ids[t], out + t * table.k);
    }
  }

  void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y) override {
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      float ss = 0.0f;
      for (int64_t j = 0; j < dim; ++j) ss += xr[j] * xr[j];
      ss /= float(dim);
      ss += eps;
      ss = 1.0f / std::sqrt(ss);
      for (int64_t j = 0; j < dim; ++j) yr[j] = w[j] * (ss * xr[j]);
    }
  }

  void rope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
            const RopeArgs& r) override {
    if (r.rot_dim <= 0 || r.rot_dim > r.head_dim || r.rot_dim % 2 || !r.inv_freq)
      throw Error("cpu backend: rope with rot_dim " + std::to_string(r.rot_dim) + " and head_dim " +
                  std::to_string(r.head_dim) + " is not supported");
    const int half = r.rot_dim / 2;
    std::vector<float> cs(half), sn(half);
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int j = 0; j < half; ++j) {
        float val = float(positions[t]) * r.inv_freq[j];
        cs[j] = std::cos(val);
        sn[j] = std::sin(val);
      }
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = x + (t * n_heads + h) * r.head_dim;
        for (int j = 0; j < half; ++j) {
          int i0 = r.style == RopeStyle::interleaved ? 2 * j : j;
          int i1 = r.style == RopeStyle::interleaved ? 2 * j + 1 : j + half;
          float v0 = v[i0], v1 = v[i1];
          v[i0] = v0 * cs[j] - v1 * sn[j];
          v[i1] = v0 * sn[j] + v1 * cs[j];
        }
      }
    }
  }

  void add(float* y, const float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }

  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) {
      float v = gate[i];
      v *= (1.0f / (1.0f + std::exp(-v)));
      out[i] = v * up[i];
    }
  }

  void softmax(float* x, int64_t rows, int64_t cols) override { softmax_rows(x, rows, cols); }

  void top_k(const float* x, int64_t rows, int64_t cols, int k, const float* temperature, float* values,
             int32_t* ids) override {
    std::vector<std::pair<float, int32_t>> c;
    auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    for (int64_t r = 0; r < rows; ++r) {
      c.clear();
      for (int64_t j = 0; j < cols; ++j)
        if (!std::isnan(x[r * cols + j])) c.emplace_back(x[r * cols + j] / temperature[r], int32_t(j));
      const size_t n = std::min(c.size(), size_t(k));
      std::partial_sort(c.begin(), c.begin() + long(n), c.end(), better);
      for (int i = 0; i < k; ++i) {
        values[r * k + i] = size_t(i) < n ? c[size_t(i)].first : 0.0f;
        ids[r * k + i] = size_t(i) < n ? c[size_t(i)].second : -1;
      }
    }
  }

  void log_sum_exp(const float* x, int64_t rows, int64_t cols, const int32_t* tokens, double* lse,
                   float* picked) override {
    for (int64_t r = 0; r < rows; ++r) {
      lse[r] = backend::log_sum_exp(x + r * cols, cols);
      picked[r] = tokens[r] >= 0 && tokens[r] < cols ? x[r * cols + tokens[r]] : NAN;
    }
  }

  void gather(const float* x, int64_t rows, int64_t cols, const int32_t* ids, int k, float* out) override {
    for (int64_t i = 0; i < rows * k; ++i) {
      const int32_t id = ids[i];
      out[i] = id >= 0 && id < cols ? x[(i / k) * cols + id] : NAN;
    }
  }

  void penalize(float* x, int64_t rows, int64_t cols, const PenaltyArgs& p) override {
    for (int32_t i = 0; i < *p.n; ++i) {
      const int32_t* e = p.entries + 3 * i;
      if (e[0] < 0 || e[0] >= rows || e[1] < 0 || e[1] >= cols || e[2] < 1)
        throw Error("cpu penalize: entry " + std::to_string(i) + " (row " + std::to_string(e[0]) +
                    ", token " + std::to_string(e[1]) + ", count " + std::to_string(e[2]) +
                    ") outside the rows, the " + std::to_string(cols) + " columns or counts >= 1");
      const float* q = p.params + 3 * e[0];
      float& l = x[e[0] * cols + e[1]];
      if (p.saved) p.saved[i] = l;
      l = penalized_logit(l, e[2], q[0], q[1], q[2]);
    }
  }

  void argmax(const float* x, int64_t rows, int64_t cols, int32_t* out) override {
    for (int64_t r = 0; r < rows; ++r) {
      const float* v = x + r * cols;
      int64_t best = -1;  // the first non-NaN value that no later one exceeds
      for (int64_t i = 0; i < cols; ++i)
        if (!std::isnan(v[i]) && (best < 0 || v[i] > v[best])) best = i;
      out[r] = int32_t(best < 0 ? 0 : best);
    }
  }

  std::unique_ptr<KvCache> create_kv_cache(const KvCacheDesc& d) override {
    if (d.n_layers <= 0 || d.n_kv_heads <= 0 || d.head_dim <= 0 || d.page_size <= 0 || d.n_pages <= 0)
      throw Error("cpu backend: bad KV cache shape (layers " + std::to_string(d.n_layers) + ", kv heads " +
                  std::to_string(d.n_kv_heads) + ", head_dim " + std::to_string(d.head_dim) + ", page size " +
                  std::to_string(d.page_size) + ", pages " + std::to_string(d.n_pages) + ")");
    return std::make_unique<CpuKvCache>(d);
  }

  void kv_write(KvCache& cache, int layer, const float* k, const float* v, const int32_t* slots,
                int64_t n_tokens) override {
    kv_write_cpu(as_cpu(cache), layer, k, v, slots, n_tokens, &pool_);
  }

  void attention(KvCache& cache, const AttentionArgs& a) override { attention_cpu(as_cpu(cache), a, &pool_); }

 private:
  static CpuKvCache& as_cpu(KvCache& c) {
    auto* p = dynamic_cast<CpuKvCache*>(&c);
    if (!p) throw Error("cpu backend: KV cache was created by another backend");
    return *p;
  }

  void matmul_dispatch(const WeightView& w, const float* x, int64_t m, float* y);

  BackendInfo info_;
  ThreadPool pool_;
};

}  // namespace

void validate_weight(const WeightView& w, const char* op) {
  if (w.n <= 0 || w.k <= 0 || !w.data)
    throw Error(std::string("cpu backend: ") + op + " with an empty or null weight [" + std::to_string(w.n) +
                ", " + std::to_string(w.k) + "]");
  if ((w.format == WeightFormat::fp8_block || w.format == WeightFormat::mxfp8) && !w.scales)
    throw Error(std::string("cpu backend: ") + op + " with an " + weight_format_name(w.format) +
                " weight but no scales");
  if (w.format == WeightFormat::mxfp8 && w.scale_type != ScaleType::ue8m0)
    throw Error(std::string("cpu backend: ") + op + ": mxfp8 weights need UE8M0 scales (got f32)");
}

}  // namespace cpu_impl

std::unique_ptr<Backend> make_cpu_backend(int threads) {
  return std::make_unique<cpu_impl::CpuBackend>(threads);
}

}  // namespace mx8::backend

// The matmul dispatch lives here so that fast kernels slot in in one place.
namespace mx8::backend::cpu_impl {
namespace {
// The SIMD kernels of backend/cpu/gemv.h (scalar or AVX2 by the active ISA; they read each weight once
// for all m rows). Products too small to repay waking the workers run on the calling thread.
// MX8_CPU_MATMUL=scalar selects the plain scalar matmul of backend_cpu_matmul.cpp instead.
void CpuBackend::matmul_dispatch(const WeightView& w, const float* x, int64_t m, float* y) {
  static const bool force_scalar = [] {
    const char* e = std::getenv("MX8_CPU_MATMUL");
    return e && std::string(e) == "scalar";
  }();
  if (force_scalar) return matmul_scalar(w, x, m, y, &pool_);
  ThreadPool* pool = w.n * w.k * m < (int64_t(1) << 17) ? nullptr : &pool_;
  switch (w.format) {
    case WeightFormat::f32:
      return mx8::cpu::gemv_f32(x, m, static_cast<const float*>(w.data), w.n, w.k, y, pool);
    case WeightFormat::bf16:
      return mx8::cpu::gemv_bf16(x, m, static_cast<const uint16_t*>(w.data), w.n, w.k, y, pool);
    case WeightFormat::fp8_block:
    case WeightFormat::mxfp8: {
      mx8::cpu::Fp8Matrix f;
      f.codes = static_cast<const uint8_t*>(w.data);
      f.scales = w.scales;
      f.rows = w.n;
      f.cols = w.k;
      f.block_rows = w.format == WeightFormat::mxfp8 ? 1 : 128;
      f.block_cols = w.format == WeightFormat::mxfp8 ? 32 : 128;
      f.element = format::ElementFormat::e4m3;
      f.scale_storage =
          w.scale_type == ScaleType::f32 ? format::ScaleStorage::f32 : format::ScaleStorage::ue8m0;
      return mx8::cpu::gemv_fp8(x, m, f, y, pool);
    }
  }
}
}  // namespace
}  // namespace mx8::backend::cpu_impl
