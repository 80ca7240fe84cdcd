// One segment of a query tile's attention for a run of kv heads, and the merge of segment states
// (attention_tile.h has the arithmetic). The per-ISA kernels do the work; this file only walks the
// key blocks: heads inner, so a job that holds every kv head reads each page's K (then V) in one pass.
#include <algorithm>
#include <cstring>

#include "backend/cpu/attention_tile.h"

namespace mx8::backend::cpu_impl {

size_t segment_scratch_floats(const AttentionTile& j, int heads) {
  return size_t(heads) * j.tokens * j.group * kSegment + 2 * size_t(kKeyBlock) * j.hd;
}

bool sees_segment(const AttentionTile& j, int t, int s, int* a, int* b) {
  *a = std::max(s * kSegment, j.first(t));
  *b = std::min((s + 1) * kSegment, j.len(t));
  return *a < *b;
}

void segment_partials(const AttentionTile* heads, int n, int s, const TileKernels& k,
                      const TileScratch& scratch, float* part) {
  const AttentionTile& j = heads[0];  // the heads differ only in kvh, q and out
  const int rows = j.tokens * j.group, hd = j.hd;
  const size_t stride = size_t(kPartialHead) + hd;
  // Token 0 sees the segment's earliest positions and the last token its latest (first and len grow
  // with t), so [lo, hi) covers every position a row reads here.
  const int lo = std::max(s * kSegment, j.first(0)), hi = std::min((s + 1) * kSegment, j.len(j.tokens - 1));
  if (lo >= hi) return;
  const int base = lo / kKeyBlock * kKeyBlock;
  // Row r is token r / group, head r % group.
  auto q_row = [&](const AttentionTile& h, int r) {
    return h.q + size_t(r / j.group) * j.row_stride + size_t(r % j.group) * hd;
  };
  auto score_row = [&](int h, int r) { return scratch.scores + (size_t(h) * rows + r) * kSegment; };
  auto state = [&](int h, int r) { return part + (size_t(h) * rows + r) * stride; };
  const float* qs[kMaxRowsPerCall];
  float* ss[kMaxRowsPerCall];

  // Scores, a block of keys against every row that sees any of them.
  for (int p0 = base; p0 < hi; p0 += kKeyBlock) {
    for (int h = 0; h < n; ++h) {
      k.k_block(heads[h], p0, std::max(lo, p0), std::min(hi, p0 + kKeyBlock), scratch.kt);
      for (int r0 = 0; r0 < rows; r0 += k.rows_per_call) {
        const int m = std::min(k.rows_per_call, rows - r0);
        const int t_first = r0 / j.group, t_last = (r0 + m - 1) / j.group;
        if (p0 >= j.len(t_last) || p0 + kKeyBlock <= j.first(t_first)) continue;  // no row sees the block
        for (int r = 0; r < m; ++r) {
          qs[r] = q_row(heads[h], r0 + r);
          ss[r] = score_row(h, r0 + r) + (p0 - base);
        }
        k.qk(qs, m, scratch.kt, hd, j.scale, ss);
      }
    }
  }
  for (int h = 0; h < n; ++h)
    for (int r = 0; r < rows; ++r) {
      int a, b;
      if (!sees_segment(j, r / j.group, s, &a, &b)) continue;
      float* st = state(h, r);
      k.exp_sum(score_row(h, r) + (a - base), b - a, &st[0], &st[1]);
      std::memset(st + kPartialHead, 0, size_t(hd) * 4);
    }
  // Weighted V rows, in position order for every row. Rows that see the same positions of a block go
  // through one call; at the causal edge and a window's start each row takes its own positions. A
  // tile of one call's rows (a decode step) reads V from the cache; larger ones decode it once.
  const bool from_cache = k.pv_cache && rows <= k.rows_per_call;
  auto weigh_v = [&](const AttentionTile& h, const float* const* w, int m, int a, int b, int p0,
                     float* const* o) {
    if (from_cache) return k.pv_cache(w, m, h, a, b - a, scratch.vt, o);
    k.pv(w, m, scratch.vt + size_t(a - p0) * hd, b - a, hd, o);
  };
  for (int p0 = base; p0 < hi; p0 += kKeyBlock) {
    for (int h = 0; h < n; ++h) {
      if (!from_cache) k.v_rows(heads[h], p0, std::max(lo, p0), std::min(hi, p0 + kKeyBlock), scratch.vt);
      for (int r0 = 0; r0 < rows; r0 += k.rows_per_call) {
        const int m = std::min(k.rows_per_call, rows - r0);
        int a[kMaxRowsPerCall], b[kMaxRowsPerCall];
        bool same = true;
        for (int r = 0; r < m; ++r) {
          const int t = (r0 + r) / j.group;
          a[r] = std::max({p0, lo, j.first(t)});
          b[r] = std::min({p0 + kKeyBlock, hi, j.len(t)});
          same = same && a[r] == a[0] && b[r] == b[0];
        }
        for (int r = 0; r < m; ++r) {
          qs[r] = score_row(h, r0 + r) + (a[r] - base);
          ss[r] = state(h, r0 + r) + kPartialHead;
        }
        if (same) {
          if (a[0] < b[0]) weigh_v(heads[h], qs, m, a[0], b[0], p0, ss);
          continue;
        }
        for (int r = 0; r < m; ++r)
          if (a[r] < b[r]) weigh_v(heads[h], qs + r, 1, a[r], b[r], p0, ss + r);
      }
    }
  }
}

void merge_partial(float* state, const float* part, int hd, bool first) {
  if (first) {
    std::memcpy(state, part, (size_t(kPartialHead) + hd) * 4);
    return;
  }
  const float M = state[0], m = part[0];
  const float top = m > M ? m : M;
  const float a = exp_nonpositive(M - top), b = exp_nonpositive(m - top);
  state[0] = top;
  for (int i = 1; i < kPartialHead + hd; ++i) state[i] = state[i] * a + part[i] * b;
}

void finish_row(const float* state, int hd, float* out) {
  for (int d = 0; d < hd; ++d) out[d] = state[kPartialHead + d] / state[1];
}

}  // namespace mx8::backend::cpu_impl
