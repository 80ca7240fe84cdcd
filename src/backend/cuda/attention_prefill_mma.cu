// Attention for prompt steps on mma.sync m16n8k16 (bf16 operands for a bf16 cache, f16 for fp8),
// the operands laid out as attention_mma.cuh says. It replaces attention_prefill.cu's TF32 kernel
// where pages hold a power of two of at least 16 positions (the engine's 16 do).
//
// A block serves 64 query rows (64 / G tokens x the G query heads of one kv head) and runs one pass per
// distinct sequence among its tokens. Its 12 warps are 3 key splits x 4 row groups: in a pass, split
// z takes the z-th third of the pass's K/V tiles (16 positions each) for all 64 rows, a warp 16 of
// them, and the splits' partial softmax states are merged at the pass's end (in shared memory, split
// order 0, 1, 2). A split's 4 warps copy its tiles into their own ring of shared-memory stages
// (cp.async, kStages - 1 tiles ahead, one 128-thread named barrier per tile, so the splits drift
// apart as separate blocks would) and read their operands from the stage just before multiplying
// them. Why: a 512-token prompt step has only 256 blocks of 64 rows, so warps per SM, not registers,
// bounded the kernel (latency-bound at 8 warps); the key splits make it 12, and staged tiles (no
// registers for tiles in flight) keep a warp at 168 registers so that 12 fit.
//
// Arithmetic: the query rows here are real rows, so q's parts are separate mma: three bf16 parts for
// a bf16 cache (hi + mid + lo, ~24 bits), two f16 parts for fp8 (hi + lo, 22 bits, q first scaled per
// row by a power of two into [2^14, 2^15)). S = sum over the parts of Q_part K^T, per n-tile in two
// accumulators (the high part's and the others'). The probabilities take the same number of parts
// into O += P V, straight from the S accumulators (the P fragment's keys 2t, 2t + 1, 2t + 8, 2t + 9
// are the score columns the lane holds). K and V codes are exact, the accumulation f32: the CPU's f32
// attention up to rounding. fp8 scales as in attention_split_mma.cu: K's on the score, V's folded
// into p against the warp's running maximum of V scales.
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_prefill_mma.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/ptx/cp_async.cuh"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

using namespace attn_mma;

constexpr int kRows = 64;           // query rows per block
constexpr int kWarps = kRows / 16;  // warps per key split: 16 rows (the mma's m) each
constexpr int kSplits = 3;          // key splits per block
constexpr int kSplitThreads = kWarps * 32;
constexpr int kThreads = kSplits * kSplitThreads;
constexpr int kStages = 3;  // tiles in a split's ring: one read, two in flight

using mx8::cuda::ptx::cp_async16;
using mx8::cuda::ptx::cp_async_commit;
using mx8::cuda::ptx::cp_async_wait;

// q's and p's parts: three bf16 (24 bits) or two f16 (22 bits) per value, or with rounded operands
// (AttentionArgs::round_operands) one, as FlashAttention takes them.
template <KvFormat F, bool kRound>
constexpr int kParts = kRound               ? 1
                       : F == KvFormat::fp8 ? 2
                                            : 3;

// One staged tile: its 16 K and 16 V rows, 16-byte chunk c of row r at r * kCpr + (c ^ swizzle(r)),
// and (fp8) its 16 K and 16 V scale bytes.
template <KvFormat F>
struct KvStage {
  static constexpr int kCpr = kHd * kElemBytes<F> / 16;  // chunks per row: 16 (bf16), 8 (fp8)
  uint4 k[kTile * kCpr], v[kTile * kCpr];
  uint4 ksc, vsc;
  int ok;  // the tile's page is inside the cache
};

// The XOR that spreads a warp's 16-byte reads over the banks: of the 8 lanes that share a read cycle,
// the K reads (rows g, g + 1 of lanes 4g + t, chunks t + 4i) differ in chunk bit 2 by row parity, the V
// reads (rows 2t + c, chunks g) in chunk bits 1..2 by row bits 1..2.
__device__ __forceinline__ int swizzled(int cpr, int row, int c) {
  return row * cpr + (c ^ ((row & 6) ^ ((row & 1) << 2)));
}

// A lane's softmax state over the keys of its split: lane (g, t) holds rows g (index 0) and g + 8 (1).
struct RowState {
  float o[kNTiles][4];  // c0, c1: row g; c2, c3: row g + 8
  float m[2], l[2];     // m in log2 units; l summed over the lane's keys (over the row's once merged)
  int vmax;             // fp8: the largest V scale byte so far (-1000: none); o is in its units

  // Several states' merged maximum and V unit, and each state's terms added onto them.
  struct Merged {
    float m[2];
    int vmax;
    __device__ void take(const RowState& s) {
      m[0] = fmaxf(m[0], s.m[0]), m[1] = fmaxf(m[1], s.m[1]);
      vmax = max(vmax, s.vmax);
    }
    // sum += s's terms (sum = them where `first`: sum may then be s itself).
    __device__ void add(const RowState& s, RowState& sum, bool first) const {
      float fl[2], fo[2];
#pragma unroll
      for (int row = 0; row < 2; ++row) {
        fl[row] = s.m[row] == -INFINITY ? 0.0f : exp2f(s.m[row] - m[row]);
        fo[row] = fl[row] * pow2i(s.vmax - vmax);  // bf16: -1000 - -1000
        sum.l[row] = (first ? 0.0f : sum.l[row]) + s.l[row] * fl[row];
      }
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) sum.o[nt][c] = (first ? 0.0f : sum.o[nt][c]) + s.o[nt][c] * fo[c >> 1];
    }
  };
};

template <KvFormat F, bool kRound>
struct PrefillMmaSmem {
  uint4 qa[kWarps][kParts<F, kRound>][kKSteps][32];  // each row group's q fragments, per part and k step
  union {
    KvStage<F> stage[kSplits][kStages];      // during a pass: each split's ring
    RowState part[kSplits - 1][kWarps][32];  // at its end: splits 1.. for split 0 to merge
  } u;
  int tok_seq[kRows], tok_len[kRows];  // per local token (at most kRows tokens: G = 1)
};

// A split's copies of tile `base` on `page` into stage st (thread tid of the split's kSplitThreads). A
// bad page copies page 0 and says so in st.ok (the tile's keys are then masked).
template <KvFormat F>
__device__ __forceinline__ void stage_tile(const uint8_t* kpool, const uint8_t* vpool, const TileGeom& tg,
                                           int base, int page, KvStage<F>& st, int tid) {
  constexpr int kCpr = KvStage<F>::kCpr;
  const TileAddr a = tile_addr<F>(tg, base, page);
#pragma unroll
  for (int i = tid; i < kTile * kCpr; i += kSplitThreads) {
    const int d = swizzled(kCpr, i / kCpr, i % kCpr);
    cp_async16(&st.k[d], kpool + a.row0 + 16 * size_t(i));
    cp_async16(&st.v[d], vpool + a.row0 + 16 * size_t(i));
  }
  if constexpr (F == KvFormat::fp8) {
    const size_t sc0 = a.page_off + tg.scale_off + a.slot0;  // 16 scale bytes, 16-aligned
    if (tid == 0) cp_async16(&st.ksc, kpool + sc0);
    if (tid == 32) cp_async16(&st.vsc, vpool + sc0);
  }
  if (tid == 0) st.ok = a.ok;
}

// Lane (g, t)'s K chunk n of a staged tile in KvTile's order (rows g, g + 8, chunks t, t + 4, ...).
template <KvFormat F>
__device__ __forceinline__ uint4 staged_k_chunk(const KvStage<F>& st, int gq, int tq, int n) {
  constexpr int kPerRow = KvTile<F>::kChunks / 2;
  return st.k[swizzled(KvStage<F>::kCpr, gq + 8 * (n / kPerRow), tq + 4 * (n % kPerRow))];
}

// A staged tile's page flag and (fp8) lane t's keys' scale bytes (lane_key(t, 0..3)).
template <KvFormat F>
__device__ __forceinline__ void staged_flags(const KvStage<F>& st, int tq, KvTile<F>& x) {
  x.ok = st.ok != 0;
  if constexpr (F == KvFormat::fp8) {
    auto pair = [&](const uint4& b, int i) {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(&b);
      return uint32_t(h[i]) | (uint32_t(h[i + 4]) << 16);  // keys 2t, 2t + 1 and 2t + 8, 2t + 9
    };
    x.ksc = pair(st.ksc, tq);
    x.vsc = pair(st.vsc, tq);
  }
}

// Lane (g, t)'s V chunks of a staged tile in KvTile's order, half h of them (rows lane_key(t, 0..3) at
// chunk g + 8 h; fp8 has only h = 0), rows without `keep` zeroed (as masked_v does: a stale row may
// hold NaN codes). Halves, so that a bf16 tile's V takes 16 registers at a time.
template <KvFormat F>
__device__ __forceinline__ void staged_v(const KvStage<F>& st, int gq, int tq, int h, const bool (&keep)[4],
                                         uint4 (&v)[KvTile<F>::kChunks]) {
  constexpr int kCpr = KvStage<F>::kCpr, kHalves = KvTile<F>::kChunks / 4;
#pragma unroll
  for (int r = 0; r < 4; ++r)
    v[kHalves * r + h] = keep[r] ? st.v[swizzled(kCpr, lane_key(tq, r), gq + 8 * h)] : make_uint4(0, 0, 0, 0);
}

// x as its parts (hi first), each rounded to the operand type.
template <KvFormat F, int P>
__device__ __forceinline__ void parts_of(float x, float (&part)[P]) {
  constexpr bool kF16 = F == KvFormat::fp8;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    part[i] = round16<kF16>(x);
    x -= part[i];
  }
}

// The parts of an A fragment from rows g (x: reduction indices 2t, 2t + 1; z: 2t + 8, 2t + 9) and
// g + 8 (y, w).
template <KvFormat F, int P>
__device__ __forceinline__ void a_fragments(const float (&x)[2], const float (&y)[2], const float (&z)[2],
                                            const float (&w)[2], uint4 (&a)[P]) {
  constexpr bool kF16 = F == KvFormat::fp8;
  float px[2][P], py[2][P], pz[2][P], pw[2][P];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    parts_of<F, P>(x[e], px[e]);
    parts_of<F, P>(y[e], py[e]);
    parts_of<F, P>(z[e], pz[e]);
    parts_of<F, P>(w[e], pw[e]);
  }
#pragma unroll
  for (int i = 0; i < P; ++i)
    a[i] = make_uint4(pack16<kF16>(px[0][i], px[1][i]), pack16<kF16>(py[0][i], py[1][i]),
                      pack16<kF16>(pz[0][i], pz[1][i]), pack16<kF16>(pw[0][i], pw[1][i]));
}

// The lane's eight scores of a tile (rows g, g + 8 x its four keys) in log2 units (bf16: q holds the
// scale and log2 e already; fp8: sscale, with q's power of two undone), -inf where kMasked and the row does
// not attend the key; each row's max over them; fp8: the largest V scale byte among the pass's keys.
template <KvFormat F, bool kMasked>
__device__ __forceinline__ void tile_scores(const KvTile<F>& x, const float (&s)[2][2][4], int tq, int base,
                                            const int (&lo_r)[2], const int (&hi_r)[2], int seg_lo,
                                            int seg_hi, const float (&sscale)[2], float (&sc)[2][4],
                                            float (&mx)[2], int& vtile) {
  constexpr bool kF16 = F == KvFormat::fp8;
  mx[0] = mx[1] = -INFINITY;
  vtile = -1000;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int row = c >> 1, r = 2 * nt + (c & 1), pos = base + lane_key(tq, r);
      float v = s[0][nt][c] + s[1][nt][c];
      if constexpr (kF16) {
        v *= format::ue8m0_to_f32((x.ksc >> (8 * r)) & 0xffu);
        if (row == 0 && (!kMasked || (x.ok && pos >= seg_lo && pos < seg_hi)))
          vtile = max(vtile, int((x.vsc >> (8 * r)) & 0xffu));
      }
      if constexpr (kF16) v *= sscale[row];
      if constexpr (kMasked) v = x.ok && pos >= lo_r[row] && pos < hi_r[row] ? v : -INFINITY;
      sc[nt][c] = v;
      mx[row] = fmaxf(mx[row], v);
    }
}

// One tile into the warp's rows: S, the online softmax, O += P V. [lo_r, hi_r): row r's positions;
// [seg_lo, seg_hi): the pass's (their union).
template <KvFormat F, int P>
__device__ __forceinline__ void prefill_tile(const KvStage<F>& st, const uint4 (&qa)[P][kKSteps][32],
                                             int lane, int base, const int (&lo_r)[2], const int (&hi_r)[2],
                                             int seg_lo, int seg_hi, const float (&sscale)[2], RowState& w) {
  constexpr bool kF16 = F == KvFormat::fp8;
  const int gq = lane >> 2, tq = lane & 3;
  KvTile<F> x;
  staged_flags<F>(st, tq, x);

  // S: the high part in one accumulator per n-tile, the others in a second (four independent chains;
  // one per part and n-tile spilled the bf16 kernel at 255 registers).
  float s[2][2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) s[i][nt][c] = 0.0f;
#pragma unroll
  for (int j = 0; j < kKSteps; ++j) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      // Each K chunk is read from the stage where its first k step needs it (registers: 3 blocks/SM).
      constexpr int kStepsPerChunk = kF16 ? 4 : 2;
      if (j % kStepsPerChunk == 0) {
        const int n = (KvTile<F>::kChunks / 2) * nt + j / kStepsPerChunk;
        x.k[n] = staged_k_chunk<F>(st, gq, tq, n);
      }
      uint32_t b0, b1;
      k_fragment<F>(x, nt, j, b0, b1);
#pragma unroll
      for (int i = 0; i < P; ++i) mma16816<kF16>(s[i == 0 ? 0 : 1][nt], qa[i][j][lane], b0, b1);
    }
  }

  // Scores: accumulator c of n-tile nt is row c >> 1, key lane_key(t, 2 nt + (c & 1)). Tiles that
  // every row of the warp attends to whole (most of a long prompt's) skip the per-key masks.
  const bool whole = __all_sync(kFull, x.ok && base >= lo_r[0] && base + kTile <= hi_r[0] &&
                                           base >= lo_r[1] && base + kTile <= hi_r[1]);
  float sc[2][4], mx[2];
  int vtile;
  if (whole)
    tile_scores<F, false>(x, s, tq, base, lo_r, hi_r, seg_lo, seg_hi, sscale, sc, mx, vtile);
  else
    tile_scores<F, true>(x, s, tq, base, lo_r, hi_r, seg_lo, seg_hi, sscale, sc, mx, vtile);
  float m_new[2];
#pragma unroll
  for (int row = 0; row < 2; ++row) {
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(kFull, mx[row], 1));
    mx[row] = fmaxf(mx[row], __shfl_xor_sync(kFull, mx[row], 2));
    m_new[row] = fmaxf(w.m[row], mx[row]);
  }
  int v_new = w.vmax;
  if constexpr (kF16) {
    vtile = max(vtile, __shfl_xor_sync(kFull, vtile, 1));
    vtile = max(vtile, __shfl_xor_sync(kFull, vtile, 2));
    v_new = max(w.vmax, vtile);
  }
  // Rescale only when a maximum grew; the vote keeps the branch uniform.
  if (__any_sync(kFull, m_new[0] != w.m[0] || m_new[1] != w.m[1] || v_new != w.vmax)) {
    float co[2];
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      const float corr = m_new[row] == w.m[row]  ? 1.0f
                         : w.m[row] == -INFINITY ? 0.0f
                                                 : exp2f(w.m[row] - m_new[row]);
      co[row] = kF16 ? corr * pow2i(w.vmax - v_new) : corr;
      w.l[row] *= corr;
      w.m[row] = m_new[row];
    }
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      w.o[nt][0] *= co[0], w.o[nt][1] *= co[0];
      w.o[nt][2] *= co[1], w.o[nt][3] *= co[1];
    }
    w.vmax = v_new;
  }

  // Probabilities (fp8: times V's scale relative to the largest) as the parts of the P V A operand.
  float pv[2][4];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int row = c >> 1;
      const float m_sub = w.m[row] == -INFINITY ? 0.0f : w.m[row];  // every score -inf then
      const float pr = exp2f(sc[nt][c] - m_sub);
      w.l[row] += pr;
      pv[nt][c] = pr;
      if constexpr (kF16) {
        const int b = int((x.vsc >> (8 * (2 * nt + (c & 1)))) & 0xffu);
        if (sc[nt][c] != -INFINITY) pv[nt][c] = b == 255 ? NAN : pr * pow2i(b - w.vmax);
      }
    }
  uint4 pa[P];
  a_fragments<F, P>({pv[0][0], pv[0][1]}, {pv[0][2], pv[0][3]}, {pv[1][0], pv[1][1]}, {pv[1][2], pv[1][3]},
                    pa);

  bool keep[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int pos = base + lane_key(tq, r);
    keep[r] = x.ok && pos >= seg_lo && pos < seg_hi;
  }
  uint4 v[KvTile<F>::kChunks];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    constexpr int kPerHalf = kNTiles * 4 / KvTile<F>::kChunks;  // bf16: dims 0..63, then 64..127
    if (nt % kPerHalf == 0) staged_v<F>(st, gq, tq, nt / kPerHalf, keep, v);
    uint32_t b0, b1;
    v_fragment<F>(v, nt, b0, b1);
#pragma unroll
    for (int i = 0; i < P; ++i) mma16816<kF16>(w.o[nt], pa[i], b0, b1);
  }
}

// The named barrier of key split z's kSplitThreads threads (barrier 0 is __syncthreads).
__device__ __forceinline__ void split_barrier(int z) {
  asm volatile("bar.sync %0, %1;" ::"r"(z + 1), "n"(kSplitThreads) : "memory");
}

// Split 0's state w combined with the other splits' states of the same lane (the same rows and output
// dims), in split order: m the largest, l scaled to it, o too and (fp8) from each split's V unit to the
// largest V scale byte among them.
__device__ __forceinline__ void merge_splits(const RowState (&part)[kSplits - 1][kWarps][32], int warp,
                                             int lane, RowState& w) {
  RowState::Merged r{{w.m[0], w.m[1]}, w.vmax};
#pragma unroll
  for (int z = 0; z < kSplits - 1; ++z) r.take(part[z][warp][lane]);
  r.add(w, w, true);
#pragma unroll
  for (int z = 0; z < kSplits - 1; ++z) r.add(part[z][warp][lane], w, false);
  w.m[0] = r.m[0], w.m[1] = r.m[1];
  w.vmax = r.vmax;
}

template <KvFormat F, bool kRound>
__global__ void __launch_bounds__(kThreads, 1)
    attention_prefill_mma_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p,
                                 int n_tokens, uint32_t* err) {
  constexpr bool kF16 = F == KvFormat::fp8;
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int P = kParts<F, kRound>;
  PrefillMmaSmem<F, kRound>& sm = *reinterpret_cast<PrefillMmaSmem<F, kRound>*>(smem_raw);
  const int G = p.group, tpb = kRows / G;  // tokens per block
  const int kvh = int(blockIdx.y), t0 = int(blockIdx.x) * tpb;
  const int tid = int(threadIdx.x), lane = tid & 31, gq = lane >> 2, tq = lane & 3;
  const int split = tid / kSplitThreads, stid = tid % kSplitThreads, warp = stid >> 5;  // warp: row group
  const int ntok = min(tpb, n_tokens - t0);

  stage_block_tokens(p, g, t0, ntok, kRows, tid, kThreads, kvh == 0, err, sm.tok_seq, sm.tok_len);

  // The lane's rows g and g + 8 of the warp's 16 (row r: local token r / G, query head kvh G + r % G):
  // q as A fragments of its parts, each row first scaled into f16's range for fp8. Every split finds
  // its rows' score scale; split 0 stores the fragments.
  const int rr[2] = {warp * 16 + gq, warp * 16 + gq + 8};
  const int lt_r[2] = {rr[0] / G, rr[1] / G};
  float sscale[2];
  {
    float q[2][kKSteps][4], amax[2] = {0.0f, 0.0f};
#pragma unroll
    for (int row = 0; row < 2; ++row)
#pragma unroll
      for (int j = 0; j < kKSteps; ++j) {
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (lt_r[row] < ntok)
          v = *reinterpret_cast<const float4*>(
              p.q + (size_t(t0 + lt_r[row]) * p.n_heads + size_t(kvh) * G + rr[row] % G) * kHd +
              base_dim<F>(j, tq));
        q[row][j][0] = v.x, q[row][j][1] = v.y, q[row][j][2] = v.z, q[row][j][3] = v.w;
        amax[row] = fmaxf(amax[row], fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
      }
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      float mul = p.scale * kLog2e;  // bf16: no register for the scale in the tile loop
      sscale[row] = 1.0f;
      if constexpr (kF16) {
        amax[row] = fmaxf(amax[row], __shfl_xor_sync(kFull, amax[row], 1));
        amax[row] = fmaxf(amax[row], __shfl_xor_sync(kFull, amax[row], 2));
        const int c = f16_scale_exp(amax[row]);
        mul = pow2i(c);
        sscale[row] = p.scale * kLog2e * pow2i(-c);
      }
#pragma unroll
      for (int j = 0; j < kKSteps; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) q[row][j][e] *= mul;
    }
#pragma unroll
    for (int j = 0; j < kKSteps; ++j) {
      uint4 a[P];
      a_fragments<F, P>({q[0][j][0], q[0][j][1]}, {q[1][j][0], q[1][j][1]}, {q[0][j][2], q[0][j][3]},
                        {q[1][j][2], q[1][j][3]}, a);
#pragma unroll
      for (int i = 0; i < P; ++i)
        if (split == 0) sm.qa[warp][i][j][lane] = a[i];
    }
  }
  __syncthreads();  // tok_seq / tok_len for every warp; the warp's fragments for its lanes

  const TileGeom tg = tile_geom<F>(g, kvh);
  for (int first = 0; first < ntok; ++first) {
    if (!starts_pass(sm.tok_seq, first)) continue;
    const int sq = sm.tok_seq[first];

    // The pass's key range (the union of its rows' [first attended, kv_len)) and the lane's rows'.
    int seg_lo = INT32_MAX, seg_hi = 0;
    for (int lt = first; lt < ntok; ++lt)
      if (sm.tok_seq[lt] == sq) {
        seg_lo = min(seg_lo, first_attended(p, sm.tok_len[lt]));
        seg_hi = max(seg_hi, sm.tok_len[lt]);
      }
    bool act[2];
    int lo_r[2], hi_r[2];
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      act[row] = lt_r[row] < ntok && sm.tok_seq[lt_r[row]] == sq;
      hi_r[row] = act[row] ? sm.tok_len[lt_r[row]] : 0;
      lo_r[row] = act[row] ? first_attended(p, hi_r[row]) : 0;
    }
    const bool warp_in_pass = __any_sync(kFull, act[0] || act[1]);

    RowState w;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) w.o[nt][c] = 0.0f;
    w.m[0] = w.m[1] = -INFINITY;
    w.l[0] = w.l[1] = 0.0f;
    w.vmax = -1000;

    // The split's ring: of the pass's n tiles (from position base0), the split takes tiles [n z / 3,
    // n (z + 1) / 3), each into the next of its kStages stages, issued kStages - 1 tiles ahead; a
    // tile's page is read one issue ahead of its copies. Every warp of the split takes part in the
    // copies and barriers; only warps with rows in the pass multiply.
    const int32_t* table = p.block_tables + size_t(sq) * p.max_pages_per_seq;
    auto page_at = [&](int b) { return b < seg_hi ? table[b >> tg.ps_shift] : 0; };
    const int base0 = seg_lo / kTile * kTile, n_tiles = (seg_hi - base0 + kTile - 1) / kTile;
    const int n_mine = n_tiles * (split + 1) / kSplits - n_tiles * split / kSplits;
    const int pad = (n_tiles + kSplits - 1) / kSplits - n_mine;
    const int b_end = base0 + n_tiles * (split + 1) / kSplits * kTile;  // past the split's last tile
    KvStage<F>* ring = sm.u.stage[split];
    auto issue = [&](int b, int page, int stage) {
      if (b < b_end) stage_tile<F>(kpool, vpool, tg, b, page, ring[stage], stid);
      cp_async_commit();  // an empty group past the end keeps the wait count uniform
    };
    int b = b_end - n_mine * kTile, stage = 0;
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) issue(b + i * kTile, page_at(b + i * kTile), i);
    int page_next = page_at(b + (kStages - 1) * kTile);
    for (; b < b_end; b += kTile) {
      cp_async_wait<kStages - 2>();  // this thread's copies of tile b have landed
      split_barrier(split);          // the split's have; its warps are done with the previous stage
      const int stage_next = stage == 0 ? kStages - 1 : stage - 1;  // (stage + kStages - 1) % kStages
      issue(b + (kStages - 1) * kTile, page_next, stage_next);
      page_next = page_at(b + kStages * kTile);
      if (warp_in_pass) {
        const KvStage<F>& st = ring[stage];
        if (st.ok == 0 && lane == 0) atomicOr(err, kErrAttnPage);  // once per bad tile and warp
        prefill_tile<F, P>(st, sm.qa[warp], lane, b, lo_r, hi_r, seg_lo, seg_hi, sscale, w);
      }
      stage = stage == kStages - 1 ? 0 : stage + 1;
    }
    // Splits with one tile fewer pass their barrier as often as the others: compute-sanitizer's
    // racecheck orders accesses by each thread's count of barriers passed, and reports the merge below
    // as a race when the counts differ (barrier 0 orders it all the same).
    for (int i = 0; i < pad; ++i) split_barrier(split);
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      w.l[row] += __shfl_xor_sync(kFull, w.l[row], 1);
      w.l[row] += __shfl_xor_sync(kFull, w.l[row], 2);
    }

    // The merge: splits 1.. leave their states where the rings were, split 0 adds them in split order.
    __syncthreads();  // every split is done with its ring
    if (split > 0 && warp_in_pass) sm.u.part[split - 1][warp][lane] = w;
    __syncthreads();
    if (split == 0 && warp_in_pass) merge_splits(sm.u.part, warp, lane, w);
    __syncthreads();  // the next pass's copies overwrite the states
    if (split > 0 || !warp_in_pass) continue;

    // The rows of this pass: out = o / l (fp8: o in units of the largest V scale).
    const float vunit = kF16 ? format::ue8m0_to_f32(uint32_t(max(w.vmax, 0))) : 1.0f;
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      if (!act[row]) continue;
      float* out = p.out + (size_t(t0 + lt_r[row]) * p.n_heads + size_t(kvh) * G + rr[row] % G) * kHd;
      const float f = vunit / w.l[row];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) out[out_dim<F>(nt, 2 * tq + e)] = w.o[nt][2 * row + e] * f;
    }
  }
}

template <KvFormat F, bool kRound>
void launch_prefill_mma(CudaKvCache& c, const AttentionArgs& a, const AttnParams& p, uint32_t* err,
                        cudaStream_t s) {
  auto* kernel = attention_prefill_mma_kernel<F, kRound>;
  constexpr size_t kSmem = sizeof(PrefillMmaSmem<F, kRound>);
  static const bool smem_set = [&] {  // over the default 48 KB, once per kernel
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem)),
          "attention_prefill_mma_kernel shared memory");
    return true;
  }();
  (void)smem_set;
  const int tpb = kRows / p.group;
  const dim3 grid{unsigned((a.n_tokens + tpb - 1) / tpb), unsigned(a.n_kv_heads)};
  launch_smem("attention_prefill_mma_kernel", kernel, grid, dim3(kThreads), kSmem, s, c.pool(a.layer, 0),
              c.pool(a.layer, 1), geom_of(c), p, a.n_tokens, err);
}

std::atomic<bool> g_prefill_mma{true};

}  // namespace

bool attention_prefill_mma_enabled() {
  return g_prefill_mma.load(std::memory_order_relaxed);
}
void set_attention_prefill_mma_enabled(bool on) {
  g_prefill_mma.store(on, std::memory_order_relaxed);
}

bool launch_attention_prefill_mma(CudaKvCache& c, const AttentionArgs& a, const AttnParams& p, uint32_t* err,
                                  cudaStream_t s) {
  if (!attention_prefill_mma_enabled() || !page_size_ok(c.desc().page_size)) return false;
  const bool fp8 = c.desc().format == KvFormat::fp8;
  if (a.round_operands)
    fp8 ? launch_prefill_mma<KvFormat::fp8, true>(c, a, p, err, s)
        : launch_prefill_mma<KvFormat::bf16, true>(c, a, p, err, s);
  else
    fp8 ? launch_prefill_mma<KvFormat::fp8, false>(c, a, p, err, s)
        : launch_prefill_mma<KvFormat::bf16, false>(c, a, p, err, s);
  return true;
}

}  // namespace mx8::backend::cuda_impl
