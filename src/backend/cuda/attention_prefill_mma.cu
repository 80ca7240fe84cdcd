// Attention for prompt steps on mma.sync m16n8k16 (bf16 operands for a bf16 cache, f16 for fp8),
// the operands laid out as attention_mma.cuh says. It replaces attention_prefill.cu's TF32 kernel
// where pages hold a power of two of at least 16 positions (the engine's 16 do).
//
// A block serves 64 query rows (64 / G tokens x the G query heads of one kv head), a warp 16 of them,
// as attention_prefill.cu's kernel does, and runs one pass per distinct sequence among its tokens. In
// a pass each warp streams the sequence's K/V tiles of 16 positions straight into its operand
// registers (the next tile's loads issued before the current one is multiplied; the block's 4 warps
// read the same tiles, mostly from L1), with no shared-memory staging and no block barrier.
//
// Arithmetic: the query rows here are real rows, so q's parts are separate mma: three bf16 parts for
// a bf16 cache (hi + mid + lo, ~24 bits), two f16 parts for fp8 (hi + lo, 22 bits, q first scaled per
// row by a power of two into [2^14, 2^15)). S = sum over the parts of Q_part K^T, in one accumulator
// per part (independent mma chains). The probabilities take the same number of parts into O += P V,
// straight from the S accumulators (the P fragment's keys 2t, 2t + 1, 2t + 8, 2t + 9 are the score
// columns the lane holds). K and V codes are exact, the accumulation f32: the CPU's f32 attention up
// to rounding. fp8 scales as in attention_split_mma.cu: K's on the score, V's folded into p against
// the warp's running maximum of V scales.
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_prefill_mma.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

using namespace attn_mma;

constexpr int kRows = 64;  // query rows per block: 4 warps x the mma's 16
constexpr int kWarps = kRows / 16;
constexpr int kThreads = kWarps * 32;

// q's parts: three bf16 (24 bits) or two f16 (22 bits) per value.
template <KvFormat F>
constexpr int kParts = F == KvFormat::fp8 ? 2 : 3;

template <KvFormat F>
struct PrefillMmaSmem {
  uint4 qa[kWarps][kParts<F>][kKSteps][32];  // each warp's q fragments, per part and k step
  int tok_seq[kRows], tok_len[kRows];        // per local token (at most kRows tokens: G = 1)
};

// x as its parts (hi first), each rounded to the operand type.
template <KvFormat F>
__device__ __forceinline__ void parts_of(float x, float (&part)[kParts<F>]) {
  constexpr bool kF16 = F == KvFormat::fp8;
#pragma unroll
  for (int i = 0; i < kParts<F>; ++i) {
    part[i] = round16<kF16>(x);
    x -= part[i];
  }
}

// The parts of an A fragment from rows g (x: reduction indices 2t, 2t + 1; z: 2t + 8, 2t + 9) and
// g + 8 (y, w).
template <KvFormat F>
__device__ __forceinline__ void a_fragments(const float (&x)[2], const float (&y)[2], const float (&z)[2],
                                            const float (&w)[2], uint4 (&a)[kParts<F>]) {
  constexpr bool kF16 = F == KvFormat::fp8;
  float px[2][kParts<F>], py[2][kParts<F>], pz[2][kParts<F>], pw[2][kParts<F>];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    parts_of<F>(x[e], px[e]);
    parts_of<F>(y[e], py[e]);
    parts_of<F>(z[e], pz[e]);
    parts_of<F>(w[e], pw[e]);
  }
#pragma unroll
  for (int i = 0; i < kParts<F>; ++i)
    a[i] = make_uint4(pack16<kF16>(px[0][i], px[1][i]), pack16<kF16>(py[0][i], py[1][i]),
                      pack16<kF16>(pz[0][i], pz[1][i]), pack16<kF16>(pw[0][i], pw[1][i]));
}

// A warp's state in a pass: lane (g, t) holds rows g (index 0) and g + 8 (index 1).
struct RowState {
  float o[kNTiles][4];  // c0, c1: row g; c2, c3: row g + 8
  float m[2], l[2];
  int vmax;  // fp8: the largest V scale byte so far (-1000: none)
};

// The lane's eight scores of a tile (rows g, g + 8 x its four keys) in log2 units (sscale holds
// log2 e), -inf where kMasked and the row does not attend the key; each row's max over them; fp8: the
// largest V scale byte among the pass's keys.
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
      v *= sscale[row];
      if constexpr (kMasked) v = x.ok && pos >= lo_r[row] && pos < hi_r[row] ? v : -INFINITY;
      sc[nt][c] = v;
      mx[row] = fmaxf(mx[row], v);
    }
}

// One tile into the warp's rows: S, the online softmax, O += P V. [lo_r, hi_r): row r's positions;
// [seg_lo, seg_hi): the pass's (their union).
template <KvFormat F>
__device__ __forceinline__ void prefill_tile(const KvTile<F>& x, const uint4 (&qa)[kParts<F>][kKSteps][32],
                                             int lane, int base, const int (&lo_r)[2], const int (&hi_r)[2],
                                             int seg_lo, int seg_hi, const float (&sscale)[2], RowState& w) {
  constexpr bool kF16 = F == KvFormat::fp8;
  constexpr int P = kParts<F>;
  const int tq = lane & 3;

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
  a_fragments<F>({pv[0][0], pv[0][1]}, {pv[0][2], pv[0][3]}, {pv[1][0], pv[1][1]}, {pv[1][2], pv[1][3]}, pa);

  uint4 v[KvTile<F>::kChunks];
  masked_v<F>(x, base, seg_lo, seg_hi, tq, v);
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    uint32_t b0, b1;
    v_fragment<F>(v, nt, b0, b1);
#pragma unroll
    for (int i = 0; i < P; ++i) mma16816<kF16>(w.o[nt], pa[i], b0, b1);
  }
}

template <KvFormat F>
__global__ void __launch_bounds__(kThreads, 2)
    attention_prefill_mma_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p,
                                 int n_tokens, uint32_t* err) {
  constexpr bool kF16 = F == KvFormat::fp8;
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  PrefillMmaSmem<F>& sm = *reinterpret_cast<PrefillMmaSmem<F>*>(smem_raw);
  const int G = p.group, tpb = kRows / G;  // tokens per block
  const int kvh = int(blockIdx.y), t0 = int(blockIdx.x) * tpb;
  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
  const int ntok = min(tpb, n_tokens - t0);

  stage_block_tokens(p, g, t0, ntok, kRows, tid, kThreads, kvh == 0, err, sm.tok_seq, sm.tok_len);

  // The lane's rows g and g + 8 of the warp's 16 (row r: local token r / G, query head kvh G + r % G):
  // q as A fragments of its parts, each row first scaled into f16's range for fp8.
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
      float mul = 1.0f;
      sscale[row] = p.scale * kLog2e;
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
      uint4 a[kParts<F>];
      a_fragments<F>({q[0][j][0], q[0][j][1]}, {q[1][j][0], q[1][j][1]}, {q[0][j][2], q[0][j][3]},
                     {q[1][j][2], q[1][j][3]}, a);
#pragma unroll
      for (int i = 0; i < kParts<F>; ++i) sm.qa[warp][i][j][lane] = a[i];
    }
  }
  __syncthreads();  // tok_seq / tok_len for every warp; the warp's fragments for its lanes

  const TileGeom tg = tile_geom<F>(g, kvh);
  const LaneOffsets lof = lane_offsets<F>(gq, tq);
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
    if (!__any_sync(kFull, act[0] || act[1])) continue;  // none of the warp's rows is in this pass

    RowState w;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) w.o[nt][c] = 0.0f;
    w.m[0] = w.m[1] = -INFINITY;
    w.l[0] = w.l[1] = 0.0f;
    w.vmax = -1000;

    const int32_t* table = p.block_tables + size_t(sq) * p.max_pages_per_seq;
    auto page_at = [&](int b) { return b < seg_hi ? table[b >> tg.ps_shift] : 0; };
    bool bad_page = false;
    int base = seg_lo / kTile * kTile;
    KvTile<F> cur;
    if (base < seg_hi) fetch_tile<F>(kpool, vpool, tg, lof, base, page_at(base), cur);
    int page_next = page_at(base + kTile);
    while (base < seg_hi) {
      const int next = base + kTile;
      const int page_after = page_at(next + kTile);
      KvTile<F> nxt;
      if (next < seg_hi) fetch_tile<F>(kpool, vpool, tg, lof, next, page_next, nxt);
      bad_page |= !cur.ok;
      prefill_tile<F>(cur, sm.qa[warp], lane, base, lo_r, hi_r, seg_lo, seg_hi, sscale, w);
      cur = nxt;
      base = next;
      page_next = page_after;
    }
    if (bad_page && lane == 0) atomicOr(err, kErrAttnPage);

      // The rows of this pass: out = o / l (fp8: o in units of the largest V scale).
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      w.l[row] += __shfl_xor_sync(kFull, w.l[row], 1);
      w.l[row] += __shfl_xor_sync(kFull, w.l[row], 2);
    }
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

template <KvFormat F>
void launch_prefill_mma(CudaKvCache& c, const AttentionArgs& a, const AttnParams& p, uint32_t* err,
                        cudaStream_t s) {
  auto* kernel = attention_prefill_mma_kernel<F>;
  constexpr size_t kSmem = sizeof(PrefillMmaSmem<F>);
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
  if (c.desc().format == KvFormat::fp8)
    launch_prefill_mma<KvFormat::fp8>(c, a, p, err, s);
  else
    launch_prefill_mma<KvFormat::bf16>(c, a, p, err, s);
  return true;
}

}  // namespace mx8::backend::cuda_impl
