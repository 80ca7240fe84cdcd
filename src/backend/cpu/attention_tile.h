// CPU attention over query tiles. A tile is `tokens` consecutive query tokens of one sequence (token t
// sees positions [first(t), len0 + t): a prompt chunk, or one decode token) and the `group` query
// heads that share kv head `kvh`. Each K/V row decoded serves every row of the tile (tokens x group),
// which is what makes long prompts cheaper than one job per token. A job is a run of kv heads of one
// tile, for all its positions or for one segment of them (attention_cpu decides).
//
// Page layout (backend-private, and the CUDA backend's too, byte for byte: tests compare them): K and
// V pages alike hold [kv head][slot][head_dim] elements in the cache's format, then for fp8 the UE8M0
// scales [kv head][slot][ceil(head_dim / 128)]. The score kernels want one key per vector lane, so
// they transpose each block of keys once into a small f32 buffer that every row of the tile reads.
//
// Arithmetic, for heads of 64 or more (every ISA gives the same bits, so results depend neither on
// the machine nor on how tokens are tiled, split into jobs or threaded):
//   score(r, p) = (sum over d in order of fma(q[r][d], k[p][d], acc), from +0) * scale
//   Positions fall into segments [s * kSegment, (s + 1) * kSegment). Over the positions of each
//   segment that row r sees: m = the largest score, e(p) = exp_nonpositive(score - m) (below), z = the
//   e(p) summed in 8 lanes (the segment's i-th seen position into lane i % 8, in order) and the lanes
//   added as ((0 + 1) + (2 + 3)) + ((4 + 5) + (6 + 7)), o[d] = fma(e(p), v[p][d], o[d]) over p in
//   increasing order, from +0.
//   The segments a row sees merge in increasing order into (M, Z, O), starting from the first one's
//   (m, z, o): M' = max(M, m), a = exp_nonpositive(M - M'), b = exp_nonpositive(m - M'),
//   Z' = Z * a + z * b, O'[d] = O[d] * a + o[d] * b (products rounded, then the sum).
//   out[r][d] = O[d] / Z.
// Segments bound a job's score buffer, and let a decode step's long context be split over the
// threads by position (each job then reads whole pages, every kv head's rows, in one pass).
// Heads under 64 keep the scalar one-token kernel (llama2.c's plain sums), see attend_short_heads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mx8/backend/backend.h"

namespace mx8::backend::cpu_impl {

struct AttentionTile {
  const float* q = nullptr;  // token t, head g at q + t * row_stride + g * hd
  float* out = nullptr;      // the same layout as q
  size_t row_stride = 0;
  int tokens = 1, group = 1, hd = 0;
  int len0 = 0;    // positions token 0 sees; token t sees len0 + t
  int window = 0;  // > 0: a token sees only its last `window` positions
  float scale = 1;
  KvFormat fmt = KvFormat::f32;
  int page_size = 0, n_kv = 0, kvh = 0;
  const uint8_t* k_pool = nullptr;
  const uint8_t* v_pool = nullptr;
  size_t page_bytes = 0;
  const int32_t* table = nullptr;

  int len(int t) const { return len0 + t; }
  int first(int t) const { return window > 0 && len(t) > window ? len(t) - window : 0; }
  int elem_bytes() const { return fmt == KvFormat::f32 ? 4 : fmt == KvFormat::bf16 ? 2 : 1; }
  // Row `slot` of page `page` (the sequence's page index, not the pool's) in a K or V pool: its hd
  // elements, and for fp8 its ceil(hd / 128) scales.
  const uint8_t* row_at(const uint8_t* pool, int page, int slot) const {
    return pool + size_t(table[page]) * page_bytes + (size_t(kvh) * page_size + slot) * hd * elem_bytes();
  }
  const uint8_t* scales_at(const uint8_t* pool, int page, int slot) const {
    return pool + size_t(table[page]) * page_bytes + size_t(page_size) * n_kv * hd +
           (size_t(kvh) * page_size + slot) * ((hd + 127) / 128);
  }
  // Position p's row and scales.
  const uint8_t* row(const uint8_t* pool, int p) const { return row_at(pool, p / page_size, p % page_size); }
  const uint8_t* scales(const uint8_t* pool, int p) const {
    return scales_at(pool, p / page_size, p % page_size);
  }
  // Positions p, p + 1, ... of one pool, with one division for the first: a decode step walks every
  // key of every kv head, and row() and scales() divide by the page size each time.
  struct Cursor {
    const AttentionTile* j;
    const uint8_t* pool;
    int page, slot;
    const uint8_t* row() const { return j->row_at(pool, page, slot); }
    const uint8_t* scales() const { return j->scales_at(pool, page, slot); }
    void next() {
      if (++slot == j->page_size) slot = 0, ++page;
    }
  };
  Cursor cursor(const uint8_t* pool, int p) const { return {this, pool, p / page_size, p % page_size}; }
};

// exp(x) for x <= 0 by operations every ISA has, so that vector kernels give the scalar one's bits:
// x = max(x, kExpMin); n = nearbyint(x * log2(e)); r = x - n ln2 (two FMAs, ln2 in two parts);
// exp(r) by its Taylor polynomial to r^7 in Horner's FMAs (|r| <= ln2 / 2: the first term left out is
// below 6e-9 relative, so the result is within ~2 ulp); times 2^n built in the exponent field. A NaN
// stays NaN. Scores below the largest by more than 87 (weights under 2^-125) come out as ~2^-126.
constexpr float kExpMin = -87.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;  // ln 2 to 10 bits: n * kLn2Hi is exact
constexpr float kLn2Lo = -2.12194440054690583e-4f;
constexpr float kExpTaylor[8] = {1.0f,         1.0f,          0.5f,          1.0f / 6.0f,
                                 1.0f / 24.0f, 1.0f / 120.0f, 1.0f / 720.0f, 1.0f / 5040.0f};

// Keys are handled in blocks of kKeyBlock positions starting at multiples of kKeyBlock.
constexpr int kKeyBlock = 16;
// Positions per segment (a multiple of kKeyBlock): a merge costs about a position's work per row.
constexpr int kSegment = 512;

// The most query rows a kernel set takes per qk / pv call (TileKernels::rows_per_call).
constexpr int kMaxRowsPerCall = 8;

// The per-ISA pieces of segment_partials. Rows are at most rows_per_call per call.
struct TileKernels {
  // kt[d * 16 + i] = K of position p0 + i, dimension d, for p0 + i in [lo, hi); other lanes are
  // unspecified (their scores are never used). Reads only rows of positions in [lo, hi).
  void (*k_block)(const AttentionTile& j, int p0, int lo, int hi, float* kt);
  // vt[(p - p0) * hd + d] = V of position p, dimension d, for p in [lo, hi).
  void (*v_rows)(const AttentionTile& j, int p0, int lo, int hi, float* vt);
  // s[r][i] = score of q[r] against lane i of kt, i < 16.
  void (*qk)(const float* const* q, int rows, const float* kt, int hd, float scale, float* const* s);
  // row[0 .. n) of one row's scores in a segment to e(p) in place; *m and *z as defined above.
  void (*exp_sum)(float* row, int n, float* m, float* z);
  // out[r][d] = fma(w[r][i], vt[i * hd + d], out[r][d]) for i = 0 .. n - 1 in order.
  void (*pv)(const float* const* w, int rows, const float* vt, int n, int hd, float* const* out);
  // pv on the V rows of positions [p, p + n) of one key block, read from the cache: for a tile of at
  // most rows_per_call rows, whose one pv call per block would read v_rows' f32 copy only once. vt is
  // scratch for a kernel that falls back to v_rows and pv. Optional (null: v_rows and pv).
  void (*pv_cache)(const float* const* w, int rows, const AttentionTile& j, int p, int n, float* vt,
                   float* const* out) = nullptr;
  // Query rows per call, at most kMaxRowsPerCall: enough independent FMA chains to cover the FMA
  // latency on every FMA unit, few enough for their accumulators to stay in registers. 8-lane
  // kernels take 4 (8 accumulators of AVX2's 16 registers; 6 rows ran a prompt chunk 20% slower).
  int rows_per_call = 4;
};
extern const TileKernels kScalarTileKernels;  // the definition
#if defined(__x86_64__)
extern const TileKernels kAvx2TileKernels;    // AVX2 + FMA; the same bits
extern const TileKernels kAvx512TileKernels;  // AVX-512 scores and weighted V, AVX2's others; the same bits
#endif
#if defined(__aarch64__)
extern const TileKernels kNeonTileKernels;  // the same bits
#endif
// The kernels for the active ISA (mx8::cpu::active_isa()).
const TileKernels& tile_kernels();
void k_block_scalar(const AttentionTile& j, int p0, int lo, int hi, float* kt);
void v_rows_scalar(const AttentionTile& j, int p0, int lo, int hi, float* vt);

float exp_nonpositive(float x);

// Scratch a thread reuses across jobs.
struct TileScratch {
  float* scores = nullptr;  // [heads][tokens * group][kSegment]
  float* kt = nullptr;      // [hd][kKeyBlock]
  float* vt = nullptr;      // [kKeyBlock][hd]
};
// Floats segment_partials needs in scratch for `heads` kv heads of tile j (scores, kt and vt).
size_t segment_scratch_floats(const AttentionTile& j, int heads);

// A row's state over a segment, or merged over segments: m, z, then o[hd] (kPartialHead + hd floats).
constexpr int kPartialHead = 2;
// Whether token t of tile j sees any position of segment s; [*a, *b) the positions it sees there.
bool sees_segment(const AttentionTile& j, int t, int s, int* a, int* b);
// Segment s of the tiles heads[0 .. n) (the same tokens, one kv head each): for each head h and row
// r = token * group + query head that sees any of the segment, its (m, z, o) at
// part + (h * rows + r) * (kPartialHead + hd). Other rows' entries are left alone.
void segment_partials(const AttentionTile* heads, int n, int s, const TileKernels& k,
                      const TileScratch& scratch, float* part);
// Merges a row's segment state `part` into `state` (the definition above); first: state := part.
void merge_partial(float* state, const float* part, int hd, bool first);
// out[d] = O[d] / Z of a merged state.
void finish_row(const float* state, int hd, float* out);

// Heads under 64: one token of the tile at a time in llama2.c's order (plain sums, separate multiply
// and add); `att` holds group * (len0 + tokens) floats.
void attend_short_heads(const AttentionTile& j, float* att);

}  // namespace mx8::backend::cpu_impl
