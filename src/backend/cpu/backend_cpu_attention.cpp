// Paged KV cache writes and attention on the CPU: the page layout, the scalar kernels (the
// definition), and the driver that tiles a step's tokens into jobs (attention_tile.h).
//
// Pages are head-major ([kv head] first) because a job reads one kv head of consecutive positions:
// slot-major rows would be 256 bytes out of every n_kv x 256, a strided walk the hardware prefetchers
// do not follow across 4 KiB pages (measured: 0.4 GB/s; head-major streams).
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/attention_tile.h"
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

// Where (slot, head) lives in a page (attention_tile.h).
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

// One stored value back to f32: `elem` its element, `scales` its row's scales (fp8), i its index.
inline float load_value(const uint8_t* elem, const uint8_t* scales, int i, KvFormat fmt) {
  switch (fmt) {
    case KvFormat::f32: {
      float f;
      std::memcpy(&f, elem, 4);
      return f;
    }
    case KvFormat::bf16: {
      uint16_t b;
      std::memcpy(&b, elem, 2);
      return format::bf16_to_f32(b);
    }
    case KvFormat::fp8:
      return e4m3_table()[*elem] * format::ue8m0_to_f32(scales[i / 128]);
  }
  return 0;
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

void k_block_scalar(const AttentionTile& j, int p0, int lo, int hi, float* kt) {
  const size_t eb = size_t(j.elem_bytes());
  for (int i = 0; i < kKeyBlock; ++i) {
    const int p = p0 + i;
    if (p < lo || p >= hi) {
      for (int d = 0; d < j.hd; ++d) kt[d * kKeyBlock + i] = 0.0f;
      continue;
    }
    const uint8_t* row = j.row(j.k_pool, p);
    const uint8_t* sc = j.fmt == KvFormat::fp8 ? j.scales(j.k_pool, p) : nullptr;
    for (int d = 0; d < j.hd; ++d) kt[d * kKeyBlock + i] = load_value(row + d * eb, sc, d, j.fmt);
  }
}

void v_rows_scalar(const AttentionTile& j, int p0, int lo, int hi, float* vt) {
  const size_t eb = size_t(j.elem_bytes());
  for (int p = lo; p < hi; ++p) {
    const uint8_t* row = j.row(j.v_pool, p);
    const uint8_t* sc = j.fmt == KvFormat::fp8 ? j.scales(j.v_pool, p) : nullptr;
    for (int d = 0; d < j.hd; ++d) vt[size_t(p - p0) * j.hd + d] = load_value(row + d * eb, sc, d, j.fmt);
  }
}

namespace {

void qk_scalar(const float* const* q, int rows, const float* kt, int hd, float scale, float* const* s) {
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < kKeyBlock; ++i) {
      float acc = 0.0f;
      for (int d = 0; d < hd; ++d) acc = std::fma(q[r][d], kt[d * kKeyBlock + i], acc);
      s[r][i] = acc * scale;
    }
}

void pv_scalar(const float* const* w, int rows, const float* vt, int n, int hd, float* const* out) {
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < n; ++i)
      for (int d = 0; d < hd; ++d) out[r][d] = std::fma(w[r][i], vt[size_t(i) * hd + d], out[r][d]);
}

float exp_nonpositive(float x) {
  if (std::isnan(x)) return x;
  x = kExpMin > x ? kExpMin : x;
  const float n = std::nearbyint(x * kLog2e);
  const float r = std::fma(n, -kLn2Lo, std::fma(n, -kLn2Hi, x));
  float p = kExpTaylor[7];
  for (int i = 6; i >= 0; --i) p = std::fma(p, r, kExpTaylor[i]);
  return p * format::f32_from_bits(uint32_t(int32_t(n) + 127) << 23);
}

void softmax_scalar(float* row, int n) {
  float mx = row[0];
  for (int i = 1; i < n; ++i) mx = row[i] > mx ? row[i] : mx;
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; ++i) lane[i % 8] += row[i] = exp_nonpositive(row[i] - mx);
  const float z = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (int i = 0; i < n; ++i) row[i] /= z;
}

}  // namespace

const TileKernels kScalarTileKernels = {k_block_scalar, v_rows_scalar, qk_scalar, softmax_scalar, pv_scalar};

const TileKernels& tile_kernels() {
#if defined(__x86_64__)
  const mx8::cpu::Isa isa = mx8::cpu::active_isa();
  if (isa == mx8::cpu::Isa::avx2 || isa == mx8::cpu::Isa::avx512) return kAvx2TileKernels;
#elif defined(__aarch64__)
  if (mx8::cpu::active_isa() == mx8::cpu::Isa::neon) return kNeonTileKernels;
#endif
  return kScalarTileKernels;
}

namespace {

// The first key block a tile reads starts at base; each row's scores take span floats (whole blocks).
int score_base(const AttentionTile& j) {
  return j.first(0) / kKeyBlock * kKeyBlock;
}
size_t score_span(const AttentionTile& j) {
  return size_t(j.len(j.tokens - 1) - score_base(j) + kKeyBlock - 1) / kKeyBlock * kKeyBlock;
}

}  // namespace

size_t tile_scratch_floats(const AttentionTile& j) {
  return size_t(j.tokens) * j.group * score_span(j) + 2 * size_t(kKeyBlock) * j.hd;
}

void attend_tile(const AttentionTile& j, const TileKernels& k, const TileScratch& scratch) {
  const int rows = j.tokens * j.group, hd = j.hd;
  const int lo = j.first(0), hi = j.len(j.tokens - 1), base = score_base(j);
  const size_t span = score_span(j);
  // Row r is token r / group, head r % group.
  auto q_row = [&](int r) { return j.q + size_t(r / j.group) * j.row_stride + size_t(r % j.group) * hd; };
  auto out_row = [&](int r) { return j.out + size_t(r / j.group) * j.row_stride + size_t(r % j.group) * hd; };
  auto score_row = [&](int r) { return scratch.scores + size_t(r) * span; };
  const float* qs[kRowsPerCall];
  float* ss[kRowsPerCall];

  // Scores, a block of keys against every row that sees any of them.
  for (int p0 = base; p0 < hi; p0 += kKeyBlock) {
    k.k_block(j, p0, std::max(lo, p0), std::min(hi, p0 + kKeyBlock), scratch.kt);
    for (int r0 = 0; r0 < rows; r0 += kRowsPerCall) {
      const int n = std::min(kRowsPerCall, rows - r0);
      const int t_first = r0 / j.group, t_last = (r0 + n - 1) / j.group;
      if (p0 >= j.len(t_last) || p0 + kKeyBlock <= j.first(t_first)) continue;  // no row sees the block
      for (int r = 0; r < n; ++r) {
        qs[r] = q_row(r0 + r);
        ss[r] = score_row(r0 + r) + (p0 - base);
      }
      k.qk(qs, n, scratch.kt, hd, j.scale, ss);
    }
  }
  for (int r = 0; r < rows; ++r) {
    const int t = r / j.group;
    k.softmax(score_row(r) + (j.first(t) - base), j.len(t) - j.first(t));
    std::memset(out_row(r), 0, size_t(hd) * 4);
  }
  // Weighted V rows, in position order for every row. Rows that see the same positions of a block go
  // through one call; at the causal edge and a window's start each row takes its own positions.
  for (int p0 = base; p0 < hi; p0 += kKeyBlock) {
    k.v_rows(j, p0, std::max(lo, p0), std::min(hi, p0 + kKeyBlock), scratch.vt);
    for (int r0 = 0; r0 < rows; r0 += kRowsPerCall) {
      const int n = std::min(kRowsPerCall, rows - r0);
      int a[kRowsPerCall], b[kRowsPerCall];
      bool same = true;
      for (int r = 0; r < n; ++r) {
        const int t = (r0 + r) / j.group;
        a[r] = std::max(p0, j.first(t));
        b[r] = std::min(p0 + kKeyBlock, j.len(t));
        same = same && a[r] == a[0] && b[r] == b[0];
      }
      for (int r = 0; r < n; ++r) {
        qs[r] = score_row(r0 + r) + (a[r] - base);
        ss[r] = out_row(r0 + r);
      }
      if (same) {
        if (a[0] < b[0]) k.pv(qs, n, scratch.vt + size_t(a[0] - p0) * hd, b[0] - a[0], hd, ss);
        continue;
      }
      for (int r = 0; r < n; ++r)
        if (a[r] < b[r]) k.pv(qs + r, 1, scratch.vt + size_t(a[r] - p0) * hd, b[r] - a[r], hd, ss + r);
    }
  }
}

void attend_short_heads(const AttentionTile& j, float* att) {
  std::vector<float> kbuf(size_t(j.hd)), vbuf(size_t(j.hd));
  auto row_of = [&](const uint8_t* pool, int p, float* dst) {
    const uint8_t* row = j.row(pool, p);
    const uint8_t* sc = j.fmt == KvFormat::fp8 ? j.scales(pool, p) : nullptr;
    const size_t eb = size_t(j.elem_bytes());
    for (int d = 0; d < j.hd; ++d) dst[d] = load_value(row + d * eb, sc, d, j.fmt);
  };
  for (int t = 0; t < j.tokens; ++t) {
    const float* q = j.q + size_t(t) * j.row_stride;
    float* out = j.out + size_t(t) * j.row_stride;
    const int first = j.first(t), len = j.len(t), n = len - first;
    for (int p = first; p < len; ++p) {
      row_of(j.k_pool, p, kbuf.data());
      for (int g = 0; g < j.group; ++g) {
        const float* qg = q + size_t(g) * j.hd;
        float s = 0.0f;
        for (int i = 0; i < j.hd; ++i) s += qg[i] * kbuf[i];
        att[size_t(g) * n + (p - first)] = s * j.scale;
      }
    }
    softmax_rows(att, j.group, n);
    std::memset(out, 0, size_t(j.hd) * j.group * 4);
    for (int p = first; p < len; ++p) {
      row_of(j.v_pool, p, vbuf.data());
      for (int g = 0; g < j.group; ++g) {
        const float w = att[size_t(g) * n + (p - first)];
        float* og = out + size_t(g) * j.hd;
        for (int i = 0; i < j.hd; ++i) og[i] += w * vbuf[i];
      }
    }
  }
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

  // Query tiles: runs of tokens of one sequence at consecutive positions (a prompt chunk), up to 16
  // tokens and ~4 MiB of scores each, and small enough that every thread gets a few jobs.
  const int threads = pool ? pool->threads() : 1;
  const int max_tokens = std::clamp(a.n_tokens * a.n_kv_heads / (4 * threads), 1, 16);
  std::vector<std::pair<int, int>> tiles;  // (first token, tokens)
  for (int t = 0; t < a.n_tokens;) {
    int n = 1;
    while (t + n < a.n_tokens && n < max_tokens && a.seq[t + n] == a.seq[t] &&
           a.kv_len[t + n] == a.kv_len[t + n - 1] + 1 &&
           int64_t(n + 1) * group * (a.kv_len[t + n] + kKeyBlock) * 4 <= (int64_t(4) << 20))
      ++n;
    tiles.emplace_back(t, n);
    t += n;
  }
  const bool short_heads = hd < 64;
  const TileKernels& kernels = tile_kernels();
  // One job per (tile, kv head): each K/V entry is decoded once for the tile's tokens and the `group`
  // query heads that share it (GQA).
  mx8::cpu::parallel_for(pool, tiles.size() * size_t(a.n_kv_heads), 1, [&](size_t b, size_t e) {
    std::vector<float> scratch;
    for (size_t job = b; job < e; ++job) {
      const auto [t0, n] = tiles[job / size_t(a.n_kv_heads)];
      const int kvh = int(job % size_t(a.n_kv_heads));
      AttentionTile j;
      j.q = a.q + (size_t(t0) * a.n_heads + size_t(kvh) * group) * hd;  // the group's heads are consecutive
      j.out = a.out + (size_t(t0) * a.n_heads + size_t(kvh) * group) * hd;
      j.row_stride = size_t(a.n_heads) * hd;
      j.tokens = n;
      j.group = group;
      j.hd = hd;
      j.len0 = a.kv_len[t0];
      j.window = a.window;
      j.scale = a.scale;
      j.fmt = d.format;
      j.page_size = d.page_size;
      j.n_kv = d.n_kv_heads;
      j.kvh = kvh;
      j.k_pool = cache.page(a.layer, 0, 0);
      j.v_pool = cache.page(a.layer, 1, 0);
      j.page_bytes = cache.page_bytes();
      j.table = a.block_tables + size_t(a.seq[t0]) * a.max_pages_per_seq;
      if (short_heads) {
        scratch.resize(size_t(group) * (j.len0 + n));
        attend_short_heads(j, scratch.data());
        continue;
      }
      scratch.resize(tile_scratch_floats(j));
      const size_t block = size_t(kKeyBlock) * hd;
      attend_tile(j, kernels, {scratch.data() + 2 * block, scratch.data(), scratch.data() + block});
    }
  });
}

}  // namespace mx8::backend::cpu_impl
