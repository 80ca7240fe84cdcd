// Paged KV cache writes and attention on the CPU: the page layout, the scalar kernels (the
// definition), and the driver that tiles a step's tokens into jobs (attention_tile.h).
//
// Pages are head-major ([kv head] first) because a job reads a run of kv heads over consecutive
// positions: slot-major rows would be 256 bytes out of every n_kv x 256 for one head, a strided walk
// the hardware prefetchers do not follow across 4 KiB pages (measured: 0.4 GB/s), where head-major
// gives each head's rows of a page in one piece, and a job that holds every head the whole page.
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
  AttentionTile::Cursor c = j.cursor(j.k_pool, std::max(lo, p0));
  for (int i = 0; i < kKeyBlock; ++i) {
    const int p = p0 + i;
    if (p < lo || p >= hi) {
      for (int d = 0; d < j.hd; ++d) kt[d * kKeyBlock + i] = 0.0f;
      continue;
    }
    const uint8_t* row = c.row();
    const uint8_t* sc = j.fmt == KvFormat::fp8 ? c.scales() : nullptr;
    for (int d = 0; d < j.hd; ++d) kt[d * kKeyBlock + i] = load_value(row + d * eb, sc, d, j.fmt);
    c.next();
  }
}

void v_rows_scalar(const AttentionTile& j, int p0, int lo, int hi, float* vt) {
  const size_t eb = size_t(j.elem_bytes());
  AttentionTile::Cursor c = j.cursor(j.v_pool, lo);
  for (int p = lo; p < hi; ++p, c.next()) {
    const uint8_t* row = c.row();
    const uint8_t* sc = j.fmt == KvFormat::fp8 ? c.scales() : nullptr;
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

void exp_sum_scalar(float* row, int n, float* m, float* z) {
  float mx = row[0];
  for (int i = 1; i < n; ++i) mx = row[i] > mx ? row[i] : mx;
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; ++i) lane[i % 8] += row[i] = exp_nonpositive(row[i] - mx);
  *m = mx;
  *z = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

}  // namespace

float exp_nonpositive(float x) {
  if (std::isnan(x)) return x;
  x = kExpMin > x ? kExpMin : x;
  const float n = std::nearbyint(x * kLog2e);
  const float r = std::fma(n, -kLn2Lo, std::fma(n, -kLn2Hi, x));
  float p = kExpTaylor[7];
  for (int i = 6; i >= 0; --i) p = std::fma(p, r, kExpTaylor[i]);
  return p * format::f32_from_bits(uint32_t(int32_t(n) + 127) << 23);
}

const TileKernels kScalarTileKernels = {k_block_scalar, v_rows_scalar, qk_scalar, exp_sum_scalar, pv_scalar};

const TileKernels& tile_kernels() {
#if defined(__x86_64__)
  const mx8::cpu::Isa isa = mx8::cpu::active_isa();
  if (isa == mx8::cpu::Isa::avx512) return kAvx512TileKernels;
  if (isa == mx8::cpu::Isa::avx2) return kAvx2TileKernels;
#elif defined(__aarch64__)
  if (mx8::cpu::active_isa() == mx8::cpu::Isa::neon) return kNeonTileKernels;
#endif
  return kScalarTileKernels;
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
  const int threads = pool ? pool->threads() : 1;

  // Query tiles: runs of tokens of one sequence at consecutive positions (a prompt chunk), up to 16
  // tokens each, and small enough that every thread gets a few.
  const int max_tokens = std::clamp(a.n_tokens * a.n_kv_heads / (4 * threads), 1, 16);
  std::vector<std::pair<int, int>> tiles;  // (first token, tokens)
  for (int t = 0; t < a.n_tokens;) {
    int n = 1;
    while (t + n < a.n_tokens && n < max_tokens && a.seq[t + n] == a.seq[t] &&
           a.kv_len[t + n] == a.kv_len[t + n - 1] + 1)
      ++n;
    tiles.emplace_back(t, n);
    t += n;
  }
  auto make_tile = [&](size_t ti, int kvh) {
    const auto [t0, n] = tiles[ti];
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
    return j;
  };
  // The segments tile ti touches: [first_segment[ti], last_segment[ti]] (token 0 starts them, the last
  // token ends them).
  std::vector<int> first_segment(tiles.size()), last_segment(tiles.size());
  for (size_t ti = 0; ti < tiles.size(); ++ti) {
    const AttentionTile j = make_tile(ti, 0);
    first_segment[ti] = j.first(0) / kSegment;
    last_segment[ti] = (j.len(j.tokens - 1) - 1) / kSegment;
  }
  const size_t stride = size_t(kPartialHead) + hd;

  // Jobs. Where the tiles alone give every thread two, a job is a tile and a run of kv heads and walks
  // its segments in order; the runs are as long as still leave every thread two jobs, since a job
  // holding every kv head reads whole pages. Otherwise, where the segments do (a decode step of few
  // sequences at a long context), a job is one segment of a tile for every kv head, its states kept
  // and merged once all jobs are done.
  const bool short_heads = hd < 64;
  const int64_t wanted = 2 * threads;
  int64_t n_segments = 0;
  size_t partial_floats = 0;
  std::vector<size_t> partial_at(tiles.size());
  for (size_t ti = 0; ti < tiles.size(); ++ti) {
    const int segments = last_segment[ti] - first_segment[ti] + 1;
    n_segments += segments;
    partial_at[ti] = partial_floats;
    partial_floats += size_t(segments) * a.n_kv_heads * tiles[ti].second * group * stride;
  }
  const int64_t n_tiles = int64_t(tiles.size());
  // 32 MiB of states at most (a decode step at 128k positions takes 4 MiB a sequence with Llama-3-8B's
  // heads).
  const bool split =
      !short_heads && n_tiles < wanted && n_segments >= wanted && partial_floats <= (size_t(8) << 20);
  int runs = 1;  // runs of kv heads: a divisor of n_kv_heads
  while (!split && runs < a.n_kv_heads && (a.n_kv_heads % runs != 0 || n_tiles * runs < wanted)) ++runs;
  const int run_heads = a.n_kv_heads / runs;
  const TileKernels& kernels = tile_kernels();

  // A job's scratch (scores, kt, vt, then `extra` floats) and its tiles, one per kv head of its run.
  struct JobScratch {
    std::vector<float> floats;
    std::vector<AttentionTile> heads;
  };
  auto prepare = [&](JobScratch& js, size_t ti, int run, size_t extra) {
    js.heads.clear();
    for (int h = 0; h < run_heads; ++h) js.heads.push_back(make_tile(ti, run * run_heads + h));
    const AttentionTile& j = js.heads[0];
    const size_t need =
        (short_heads ? size_t(group) * (j.len0 + j.tokens) : segment_scratch_floats(j, run_heads)) + extra;
    if (js.floats.size() < need) js.floats.resize(need);
    const size_t block = size_t(kKeyBlock) * hd;
    return TileScratch{js.floats.data() + 2 * block, js.floats.data(), js.floats.data() + block};
  };
  auto out_row = [&](const AttentionTile& j, int r) {
    return j.out + size_t(r / group) * j.row_stride + size_t(r % group) * hd;
  };

  if (!split) {
    mx8::cpu::parallel_for(pool, tiles.size() * size_t(runs), 1, [&](size_t b, size_t e) {
      JobScratch js;
      const std::vector<AttentionTile>& heads = js.heads;
      for (size_t job = b; job < e; ++job) {
        const size_t ti = job / size_t(runs);
        const int rows = tiles[ti].second * group;
        const size_t states = size_t(run_heads) * rows * stride;
        const TileScratch ts = prepare(js, ti, int(job % size_t(runs)), short_heads ? 0 : 2 * states);
        if (short_heads) {
          for (const AttentionTile& j : heads) attend_short_heads(j, js.floats.data());
          continue;
        }
        float* state = js.floats.data() + segment_scratch_floats(heads[0], run_heads);
        float* part = state + states;
        const AttentionTile& j = heads[0];
        for (int s = first_segment[ti]; s <= last_segment[ti]; ++s) {
          segment_partials(heads.data(), run_heads, s, kernels, ts, part);
          for (int h = 0; h < run_heads; ++h)
            for (int r = 0; r < rows; ++r) {
              int lo, hi;
              const size_t at = (size_t(h) * rows + r) * stride;
              if (sees_segment(j, r / group, s, &lo, &hi))
                merge_partial(state + at, part + at, hd, s == j.first(r / group) / kSegment);
            }
        }
        for (int h = 0; h < run_heads; ++h)
          for (int r = 0; r < rows; ++r)
            finish_row(state + (size_t(h) * rows + r) * stride, hd, out_row(heads[h], r));
      }
    });
    return;
  }

  // Split: every (tile, segment) first, then each row's segments merged in order.
  // States of tile ti: [segment - first_segment][kv head][row][stride] from partial_at[ti].
  std::vector<float> partials(partial_floats);
  float* const states = partials.data();
  std::vector<std::pair<int, int>> jobs;  // (tile, segment)
  for (size_t ti = 0; ti < tiles.size(); ++ti)
    for (int s = first_segment[ti]; s <= last_segment[ti]; ++s) jobs.emplace_back(int(ti), s);
  auto states_of = [&](size_t ti, int s, int kvh) {
    const int rows = tiles[ti].second * group;
    return states + partial_at[ti] + (size_t(s - first_segment[ti]) * a.n_kv_heads + kvh) * rows * stride;
  };
  mx8::cpu::parallel_for(pool, jobs.size(), 1, [&](size_t b, size_t e) {
    JobScratch js;
    for (size_t job = b; job < e; ++job) {
      const auto [ti, s] = jobs[job];
      const TileScratch ts = prepare(js, size_t(ti), 0, 0);
      segment_partials(js.heads.data(), run_heads, s, kernels, ts, states_of(size_t(ti), s, 0));
    }
  });
  mx8::cpu::parallel_for(pool, tiles.size() * size_t(a.n_kv_heads), 1, [&](size_t b, size_t e) {
    for (size_t job = b; job < e; ++job) {
      const size_t ti = job / size_t(a.n_kv_heads);
      const int kvh = int(job % size_t(a.n_kv_heads)), rows = tiles[ti].second * group;
      const AttentionTile j = make_tile(ti, kvh);
      for (int r = 0; r < rows; ++r) {
        const int t = r / group, s0 = j.first(t) / kSegment;
        float* state = states_of(ti, s0, kvh) + size_t(r) * stride;
        int lo, hi;
        for (int s = s0 + 1; s <= last_segment[ti]; ++s)
          if (sees_segment(j, t, s, &lo, &hi))
            merge_partial(state, states_of(ti, s, kvh) + size_t(r) * stride, hd, false);
        finish_row(state, hd, out_row(j, r));
      }
    }
  });
}

}  // namespace mx8::backend::cpu_impl
