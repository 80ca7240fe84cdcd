// Paged KV cache writes and attention on the CPU (scalar, threads over (token, head) pairs).
//
// CPU page layout (backend-private; KvCacheDesc gives only the sizes): head-major, elements
// [kv head][slot][head_dim] in the cache's format, then for fp8 the UE8M0 scales
// [kv head][slot][ceil(head_dim / 128)]. Head-major because an attention job reads one kv head of
// consecutive positions: slot-major rows would be 256 bytes out of every n_kv x 256, a strided walk
// the hardware prefetchers do not follow across 4 KiB pages (measured: 0.4 GB/s; head-major streams).
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/backend_cpu.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cpu_impl {

CpuKvCache::CpuKvCache(const KvCacheDesc& d) : KvCache(d) {
  page_bytes_ = d.page_bytes();
  bytes_ = d.total_bytes();
  // Anonymous mapping: pages of the cache that are never touched cost no memory, so a cache sized for
  // a long context only occupies what the sequences actually use.
  void* p =
      ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw Error("cpu backend: cannot reserve " + std::to_string(bytes_ >> 20) + " MiB for the KV cache");
  base_ = static_cast<uint8_t*>(p);
}

CpuKvCache::~CpuKvCache() {
  if (base_) ::munmap(base_, bytes_);
}

namespace {

int elem_bytes(KvFormat f) {
  return f == KvFormat::f32 ? 4 : f == KvFormat::bf16 ? 2 : 1;
}

struct KvLayout {
  int n_kv, hd, ps, nb;  // nb: scale blocks per head (fp8)
  KvFormat fmt;
  size_t elem_off(int slot, int head) const { return (size_t(head) * ps + slot) * hd * elem_bytes(fmt); }
  size_t scale_off(int slot, int head) const {
    return size_t(ps) * n_kv * hd + (size_t(head) * ps + slot) * nb;  // fp8 only: elements are 1 byte
  }
};

KvLayout layout_of(const KvCacheDesc& d) {
  return {d.n_kv_heads, d.head_dim, d.page_size, (d.head_dim + 127) / 128, d.format};
}

// Writes one head vector (hd values) into a page at (slot, head).
void store_head(uint8_t* page, const KvLayout& L, int slot, int head, const float* src) {
  uint8_t* dst = page + L.elem_off(slot, head);
  switch (L.fmt) {
    case KvFormat::f32:
      std::memcpy(dst, src, size_t(L.hd) * 4);
      return;
    case KvFormat::bf16: {
      uint16_t* d16 = reinterpret_cast<uint16_t*>(dst);
      for (int i = 0; i < L.hd; ++i) d16[i] = format::f32_to_bf16_rne(src[i]);
      return;
    }
    case KvFormat::fp8: {
      uint8_t* scales = page + L.scale_off(slot, head);
      for (int b = 0; b < L.nb; ++b) {
        int i0 = b * 128, i1 = std::min(L.hd, i0 + 128);
        uint32_t amax = 0;
        for (int i = i0; i < i1; ++i) amax = format::amax_bits_accumulate(amax, src[i]);
        format::BlockScale s = format::compute_block_scale(
            format::f32_from_bits(amax), format::ElementFormat::e4m3, {format::ScaleRule::ceil});
        scales[b] = s.ue8m0;
        for (int i = i0; i < i1; ++i) dst[i] = format::e4m3_from_f32(src[i] * s.inv_scale, true);
      }
      return;
    }
  }
}

// Reads one head vector back to f32.
void load_head(const uint8_t* page, const KvLayout& L, int slot, int head, float* out) {
  const uint8_t* src = page + L.elem_off(slot, head);
  switch (L.fmt) {
    case KvFormat::f32:
      std::memcpy(out, src, size_t(L.hd) * 4);
      return;
    case KvFormat::bf16: {
      const uint16_t* s16 = reinterpret_cast<const uint16_t*>(src);
      for (int i = 0; i < L.hd; ++i) out[i] = format::bf16_to_f32(s16[i]);
      return;
    }
    case KvFormat::fp8: {
      const uint8_t* scales = page + L.scale_off(slot, head);
      const float* lut = e4m3_table();
      for (int i = 0; i < L.hd; ++i) out[i] = lut[src[i]] * format::ue8m0_to_f32(scales[i / 128]);
      return;
    }
  }
}

// q . k over one head. Short heads (< 64) sum in plain order, as llama2.c's run.c does (the program
// that made stories260K's golden text; that text also comes out of the 8-sum order, a mutation test
// found, so no test pins this choice); longer heads use 8 partial sums the compiler vectorizes, in a
// fixed order, so results still do not depend on batching or threads.
inline float dot_head(const float* a, const float* b, int n) {
  if (n < 64) {
    float s = 0.0f;
    for (int i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
  }
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace

void softmax_rows(float* att, int64_t rows, int64_t len) {
  for (int64_t g = 0; g < rows; ++g) {
    float* ag = att + g * len;
    float mx = ag[0];
    for (int64_t p = 1; p < len; ++p) mx = ag[p] > mx ? ag[p] : mx;
    float sum = 0.0f;
    for (int64_t p = 0; p < len; ++p) {
      ag[p] = std::exp(ag[p] - mx);
      sum += ag[p];
    }
    for (int64_t p = 0; p < len; ++p) ag[p] /= sum;
  }
}

void attend_group_scalar(const GroupAttention& j) {
  const KvLayout L{j.n_kv, j.hd, j.page_size, (j.hd + 127) / 128, j.fmt};
  std::vector<float> kbuf(size_t(j.hd)), vbuf(size_t(j.hd));
  auto page_of = [&](const uint8_t* pool, int p) {
    return pool + size_t(j.table[p / j.page_size]) * j.page_bytes;
  };
  const int n = j.len - j.first;
  for (int p = j.first; p < j.len; ++p) {
    load_head(page_of(j.k_pool, p), L, p % j.page_size, j.kvh, kbuf.data());
    for (int g = 0; g < j.group; ++g)
      j.att[size_t(g) * n + (p - j.first)] = dot_head(j.q + size_t(g) * j.hd, kbuf.data(), j.hd) * j.scale;
  }
  softmax_rows(j.att, j.group, n);
  std::memset(j.out, 0, size_t(j.hd) * j.group * 4);
  for (int p = j.first; p < j.len; ++p) {
    load_head(page_of(j.v_pool, p), L, p % j.page_size, j.kvh, vbuf.data());
    for (int g = 0; g < j.group; ++g) {
      const float w = j.att[size_t(g) * n + (p - j.first)];
      float* og = j.out + size_t(g) * j.hd;
      for (int i = 0; i < j.hd; ++i) og[i] += w * vbuf[i];
    }
  }
}

void attend_group(const GroupAttention& j) {
  const bool simd_head = j.hd >= 64 && j.hd % 8 == 0;
#if defined(__x86_64__)
  const mx8::cpu::Isa isa = mx8::cpu::active_isa();
  if (simd_head && (isa == mx8::cpu::Isa::avx2 || isa == mx8::cpu::Isa::avx512)) return attend_group_avx2(j);
#elif defined(__aarch64__)
  if (simd_head && mx8::cpu::active_isa() == mx8::cpu::Isa::neon) return attend_group_neon(j);
#endif
  attend_group_scalar(j);
}

void kv_write_cpu(CpuKvCache& cache, int layer, const float* k, const float* v, const int32_t* slots,
                  int64_t n_tokens, mx8::cpu::ThreadPool* pool) {
  const KvCacheDesc& d = cache.desc();
  if (layer < 0 || layer >= d.n_layers)
    throw Error("cpu backend: kv_write to layer " + std::to_string(layer) + " of " +
                std::to_string(d.n_layers));
  const KvLayout L = layout_of(d);
  const int64_t capacity = int64_t(d.n_pages) * d.page_size;
  for (int64_t t = 0; t < n_tokens; ++t)
    if (slots[t] < 0 || slots[t] >= capacity)
      throw Error("cpu backend: kv_write slot " + std::to_string(slots[t]) + " outside the cache (" +
                  std::to_string(capacity) + " slots)");
  if (n_tokens * d.n_kv_heads * d.head_dim < 8192) pool = nullptr;  // not worth waking workers
  mx8::cpu::parallel_for(pool, size_t(n_tokens), 4, [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) {
      int page = slots[t] / d.page_size, slot = slots[t] % d.page_size;
      for (int h = 0; h < d.n_kv_heads; ++h) {
        store_head(cache.page(layer, 0, page), L, slot, h, k + (t * d.n_kv_heads + h) * d.head_dim);
        store_head(cache.page(layer, 1, page), L, slot, h, v + (t * d.n_kv_heads + h) * d.head_dim);
      }
    }
  });
}

void attention_cpu(CpuKvCache& cache, const AttentionArgs& a, mx8::cpu::ThreadPool* pool) {
  const KvCacheDesc& d = cache.desc();
  if (a.head_dim != d.head_dim || a.n_kv_heads != d.n_kv_heads || a.n_heads <= 0 ||
      a.n_heads % a.n_kv_heads != 0 || a.layer < 0 || a.layer >= d.n_layers)
    throw Error("cpu backend: attention arguments (heads " + std::to_string(a.n_heads) + ", kv heads " +
                std::to_string(a.n_kv_heads) + ", head_dim " + std::to_string(a.head_dim) + ", layer " +
                std::to_string(a.layer) + ") do not match the KV cache");
  const int group = a.n_heads / a.n_kv_heads;
  const int hd = a.head_dim;
  // Validate every index before the parallel region (an exception must not leave a worker thread).
  for (int t = 0; t < a.n_tokens; ++t) {
    if (a.kv_len[t] <= 0 || a.kv_len[t] > int64_t(a.max_pages_per_seq) * d.page_size || a.seq[t] < 0)
      throw Error("cpu backend: attention kv_len " + std::to_string(a.kv_len[t]) +
                  " outside the block table");
    const int32_t* table = a.block_tables + size_t(a.seq[t]) * a.max_pages_per_seq;
    // Pages before a sliding window are never read (the engine may have given them back).
    const int first_page = a.window > 0 ? std::max(0, a.kv_len[t] - a.window) / d.page_size : 0;
    for (int p = first_page; p < (a.kv_len[t] + d.page_size - 1) / d.page_size; ++p)
      if (table[p] < 0 || table[p] >= d.n_pages)
        throw Error("cpu backend: attention block table names page " + std::to_string(table[p]) + " of " +
                    std::to_string(d.n_pages));
  }

  int64_t work = 0;
  for (int t = 0; t < a.n_tokens; ++t)
    work += int64_t(a.window > 0 ? std::min(a.kv_len[t], a.window) : a.kv_len[t]) * a.n_heads * hd;
  if (work < (int64_t(1) << 15)) pool = nullptr;  // not worth waking workers
  // One job per (token, kv head): each K/V entry is decoded once and used by all `group` query heads
  // that share it (GQA). Results do not depend on the grouping or the threads.
  mx8::cpu::parallel_for(pool, size_t(a.n_tokens) * a.n_kv_heads, 1, [&](size_t b, size_t e) {
    std::vector<float> att;
    for (size_t job = b; job < e; ++job) {
      const int t = int(job / a.n_kv_heads), kvh = int(job % a.n_kv_heads), h0 = kvh * group;
      GroupAttention g;
      g.q = a.q + (size_t(t) * a.n_heads + h0) * hd;  // the group's query heads are consecutive
      g.out = a.out + (size_t(t) * a.n_heads + h0) * hd;
      g.group = group;
      g.hd = hd;
      g.len = a.kv_len[t];
      g.first = a.window > 0 ? std::max(0, g.len - a.window) : 0;
      g.page_size = d.page_size;
      g.n_kv = d.n_kv_heads;
      g.kvh = kvh;
      g.scale = a.scale;
      g.fmt = d.format;
      g.k_pool = cache.page(a.layer, 0, 0);
      g.v_pool = cache.page(a.layer, 1, 0);
      g.page_bytes = cache.page_bytes();
      g.table = a.block_tables + size_t(a.seq[t]) * a.max_pages_per_seq;
      att.resize(size_t(g.len - g.first) * group);
      g.att = att.data();
      attend_group(g);
    }
  });
}

}  // namespace mx8::backend::cpu_impl
