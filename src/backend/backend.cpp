// Backend-independent parts of the backend interface: names, byte counts, the KV page layout.
#include "mx8/backend/backend.h"

#include <algorithm>
#include <new>
#include <string>

#include "mx8/error.h"

namespace mx8::backend {

namespace {
int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}
}  // namespace

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32:
      return "f32";
    case WeightFormat::bf16:
      return "bf16";
    case WeightFormat::fp8_block:
      return "fp8 (E4M3, 128x128 blocks)";
    case WeightFormat::mxfp8:
      return "mxfp8 (E4M3, 1x32 UE8M0)";
  }
  return "unknown";
}

const char* kv_format_name(KvFormat f) {
  switch (f) {
    case KvFormat::f32:
      return "f32";
    case KvFormat::bf16:
      return "bf16";
    case KvFormat::fp8:
      return "fp8 (E4M3, UE8M0 per token/head/128)";
  }
  return "unknown";
}

size_t weight_data_bytes(WeightFormat f, int64_t n, int64_t k) {
  switch (f) {
    case WeightFormat::f32:
      return size_t(n) * size_t(k) * 4;
    case WeightFormat::bf16:
      return size_t(n) * size_t(k) * 2;
    case WeightFormat::fp8_block:
    case WeightFormat::mxfp8:
      return size_t(n) * size_t(k);
  }
  return 0;
}

size_t weight_scale_bytes(WeightFormat f, ScaleType st, int64_t n, int64_t k) {
  switch (f) {
    case WeightFormat::fp8_block:
      return size_t(ceil_div(n, 128)) * size_t(ceil_div(k, 128)) * (st == ScaleType::f32 ? 4 : 1);
    case WeightFormat::mxfp8:
      return size_t(n) * size_t(ceil_div(k, 32));
    default:
      return 0;
  }
}

size_t KvCacheDesc::page_bytes() const {
  size_t values = size_t(page_size) * size_t(n_kv_heads) * size_t(head_dim);
  size_t bytes = 0;
  switch (format) {
    case KvFormat::f32:
      bytes = values * 4;
      break;
    case KvFormat::bf16:
      bytes = values * 2;
      break;
    case KvFormat::fp8:
      bytes = values + size_t(page_size) * size_t(n_kv_heads) * size_t(ceil_div(head_dim, 128));
      break;
  }
  return (bytes + 63) / 64 * 64;  // pages start on cache lines
}

size_t KvCacheDesc::total_bytes() const {
  return page_bytes() * size_t(n_pages) * 2 * size_t(n_layers);
}

void* Backend::alloc_host(size_t bytes) {
  return ::operator new(bytes ? bytes : 1, std::align_val_t(64));
}

void Backend::free_host(void* p) {
  if (p) ::operator delete(p, std::align_val_t(64));
}

MatmulInput Backend::matmul_swiglu(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up) {
  if (in.x_up || in.accumulate) throw Error("matmul_swiglu: an input with x_up or accumulate");
  if (gate.w.n != up.w.n || gate.w.k != up.w.k)
    throw Error("matmul_swiglu: gate weights " + std::to_string(gate.w.n) + " x " + std::to_string(gate.w.k) +
                " and up weights " + std::to_string(up.w.n) + " x " + std::to_string(up.w.k) +
                " differ in shape");
  const MatmulTarget t[2] = {gate, up};
  matmul_fused(in, t, 2);
  MatmulInput h;
  h.x = gate.y;
  h.x_up = up.y;
  h.m = in.m;
  return h;
}

void Backend::swiglu_ffn(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                         const MatmulTarget& down, bool accumulate) {
  if (down.w.k != gate.w.n)
    throw Error("swiglu_ffn: down weights take k = " + std::to_string(down.w.k) + ", the gate makes " +
                std::to_string(gate.w.n));
  MatmulInput h = matmul_swiglu(in, gate, up);
  h.accumulate = accumulate;
  matmul_fused(h, &down, 1);
}

void Backend::matmul_fused(const MatmulInput& in, const MatmulTarget* targets, int count) {
  if (count <= 0) return;
  const int64_t k = targets[0].w.k;
  for (int i = 0; i < count; ++i)
    if (targets[i].w.k != k)
      throw Error("matmul_fused: target " + std::to_string(i) + " has k = " + std::to_string(targets[i].w.k) +
                  ", target 0 has k = " + std::to_string(k) + " (the targets share one input)");
  // Temporaries are backend memory, released when this call returns or throws.
  struct Temp {
    Backend& b;
    void* p = nullptr;
    ~Temp() {
      if (p) b.free(p);
    }
  };
  if (in.x_up && in.norm) throw Error("matmul_fused: an input with both x_up and norm");
  Temp input{*this}, product{*this};
  const float* x = in.x;
  if (in.norm) {
    input.p = alloc(size_t(in.m * k) * sizeof(float));
    rmsnorm(in.x, in.norm, in.m, k, in.norm_eps, static_cast<float*>(input.p));
    x = static_cast<const float*>(input.p);
  }
  if (in.x_up) {
    input.p = alloc(size_t(in.m * k) * sizeof(float));
    silu_mul(in.x, in.x_up, static_cast<float*>(input.p), in.m * k);
    x = static_cast<const float*>(input.p);
  }
  for (int i = 0; i < count; ++i) {
    const MatmulTarget& t = targets[i];
    if (!in.accumulate) {
      matmul(t.w, x, in.m, t.y, t.bias);
      continue;
    }
    if (!product.p) {
      int64_t widest = 0;
      for (int j = 0; j < count; ++j) widest = std::max(widest, targets[j].w.n);
      product.p = alloc(size_t(in.m * widest) * sizeof(float));
    }
    matmul(t.w, x, in.m, static_cast<float*>(product.p), t.bias);
    add(t.y, static_cast<const float*>(product.p), in.m * t.w.n);
  }
}

void Backend::rope_kv_write(KvCache& cache, int layer, float* q, float* k, const float* v,
                            const int32_t* positions, const int32_t* slots, int64_t n_tokens, int64_t n_heads,
                            const RopeArgs& r) {
  rope(q, positions, n_tokens, n_heads, r);
  rope(k, positions, n_tokens, cache.desc().n_kv_heads, r);
  kv_write(cache, layer, k, v, slots, n_tokens);
}

void Backend::rope_kv_write_attention(KvCache& cache, float* q, float* k, const float* v,
                                      const int32_t* positions, const int32_t* slots, const RopeArgs& r,
                                      const AttentionArgs& a) {
  if (a.q != q) throw Error("rope_kv_write_attention: the attention's q is not the rotated q");
  rope_kv_write(cache, a.layer, q, k, v, positions, slots, a.n_tokens, a.n_heads, r);
  attention(cache, a);
}

void Backend::attention_output(KvCache& cache, float* q, float* k, const float* v, const int32_t* positions,
                               const int32_t* slots, const RopeArgs& r, const AttentionArgs& a,
                               const MatmulTarget& o) {
  if (o.w.k != int64_t(a.n_heads) * a.head_dim)
    throw Error("attention_output: the projection's k " + std::to_string(o.w.k) +
                " is not n_heads x head_dim " + std::to_string(int64_t(a.n_heads) * a.head_dim));
  rope_kv_write_attention(cache, q, k, v, positions, slots, r, a);
  matmul_fused({a.out, nullptr, a.n_tokens, true}, &o, 1);
}

void throw_unknown_backend(const std::string& name, bool cuda_built) {
  if (name == "cuda" && !cuda_built)
    throw Error(
        "backend 'cuda' is not in this build of mx8 (configure with -DMX8_CUDA=ON, e.g. the cuda preset)");
  throw Error("unknown backend '" + name + "' (this build has: cpu" + (cuda_built ? ", cuda" : "") + ")");
}

}  // namespace mx8::backend
