// Llama-3-8B-shaped models with random weights made on the GPU, for the CUDA benchmarks (bench
// decode-cuda, bench serve): weights are drawn once per shape on the host and copied on the device,
// so a 32-layer model is ready in seconds. CUDA builds only.
#pragma once

#if defined(MX8_HAVE_CUDA)

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/model/llama.h"

namespace mx8::cli {

using backend::Backend;
using backend::ScaleType;
using backend::weight_data_bytes;
using backend::weight_scale_bytes;
using backend::WeightFormat;
using backend::WeightView;

inline constexpr int64_t kVocab = 128256, kDim = 4096, kHeads = 32, kKvHeads = 8, kHeadDim = 128,
                         kFfn = 14336;

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("bench (cuda): ") + what + ": " + cudaGetErrorString(e));
}

// Random weights, one device allocation per tensor, tracked for freeing.
class WeightFactory {
 public:
  WeightFactory(Backend& be, WeightFormat f) : be_(be), f_(f) {}
  ~WeightFactory() {
    for (void* p : allocs_) be_.free(p);
  }
  WeightView make(int64_t n, int64_t k) {
    WeightView w;
    w.format = f_;
    w.n = n;
    w.k = k;
    w.scale_type = ScaleType::ue8m0;
    const size_t db = weight_data_bytes(f_, n, k), sb = weight_scale_bytes(f_, ScaleType::ue8m0, n, k);
    const void* tmpl = template_for(n, k, db, sb);
    void* d = be_.alloc(db);
    allocs_.push_back(d);
    cuda_ok(cudaMemcpy(d, tmpl, db, cudaMemcpyDeviceToDevice), "weight copy");
    w.data = d;
    if (sb) {
      void* s = be_.alloc(sb);
      allocs_.push_back(s);
      cuda_ok(cudaMemcpy(s, static_cast<const uint8_t*>(tmpl) + db, sb, cudaMemcpyDeviceToDevice),
              "scale copy");
      w.scales = s;
    }
    bytes_ += db + sb;
    return w;
  }
  float* vec(int64_t n, float value) {
    std::vector<float> v(size_t(n), value);
    float* d = static_cast<float*>(be_.alloc(size_t(n) * 4));
    allocs_.push_back(d);
    be_.upload(d, v.data(), v.size() * 4);
    return d;
  }
  void* scratch(size_t bytes) {
    void* d = be_.alloc(bytes);
    allocs_.push_back(d);
    return d;
  }
  size_t bytes() const { return bytes_; }

 private:
  // One template (data then scales) per shape, drawn on the host once and uploaded.
  const void* template_for(int64_t n, int64_t k, size_t db, size_t sb) {
    auto key = std::make_pair(n, k);
    auto it = templates_.find(key);
    if (it != templates_.end()) return it->second;
    std::vector<uint8_t> h(db + sb);
    uint64_t s = 0x9E3779B97F4A7C15ull ^ uint64_t(n * 31 + k);
    auto next = [&] {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      return s;
    };
    if (f_ == WeightFormat::bf16) {
      // bf16 values in about [-0.03, 0.03]: sign, exponent 2^-6..2^-13, random mantissa.
      uint16_t* p = reinterpret_cast<uint16_t*>(h.data());
      for (size_t i = 0; i < db / 2; ++i) {
        uint64_t r = next();
        p[i] = uint16_t(((r & 1) << 15) | ((121 - (r >> 1) % 8) << 7) | ((r >> 8) & 0x7F));
      }
    } else {
      // E4M3 codes with magnitude below 2 (never NaN), UE8M0 scales 2^-7: values within about 0.015.
      for (size_t i = 0; i < db; i += 8) {
        uint64_t r = next();
        for (size_t j = 0; j < 8 && i + j < db; ++j) h[i + j] = uint8_t((r >> (8 * j)) & 0xBF);
      }
      std::memset(h.data() + db, 127 - 7, sb);
    }
    void* d = be_.alloc(h.size());
    allocs_.push_back(d);
    be_.upload(d, h.data(), h.size());
    templates_[key] = d;
    return d;
  }

  Backend& be_;
  WeightFormat f_;
  std::vector<void*> allocs_;
  std::map<std::pair<int64_t, int64_t>, const void*> templates_;
  size_t bytes_ = 0;
};

inline mx8::model::LlamaConfig llama3_8b(int layers) {
  mx8::model::LlamaConfig c;
  c.arch = "llama";
  c.vocab = kVocab;
  c.dim = kDim;
  c.n_layers = layers;
  c.n_heads = kHeads;
  c.n_kv_heads = kKvHeads;
  c.head_dim = kHeadDim;
  c.ffn = kFfn;
  c.norm_eps = 1e-5f;
  c.rope_theta = 500000.0;
  c.rope_style = backend::RopeStyle::half;
  c.max_position = 8192;
  return c;
}

}  // namespace mx8::cli

#endif  // MX8_HAVE_CUDA
