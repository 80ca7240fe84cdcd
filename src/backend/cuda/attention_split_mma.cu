// Split decode attention on the tensor cores: the per-split partial results of one (token, kv head)
// for long contexts, where the SIMT split kernel (attention_gqa_kernel<..., kSplit>) spent ~45 warp
// instructions per position and ran at a third of the bandwidth its K/V bytes allow (H200, 65536
// positions: ~175 us per layer against ~64 for a bf16 cache's bytes). This one takes ~71 us there
// for a bf16 cache and ~77 for fp8, whose half as many bytes it does not turn into time: at two warps
// per scheduler it waits on its own dependency chains, ~6 cycles per instruction, and neither three
// times the bytes in flight (shared-memory rings) nor 10% fewer instructions made it faster. So fp8
// caches take attention_split_fp8.cu (half the mma, ~66 us) unless MX8_CUDA_SPLIT_FP8T=0
// (docs/CUDA_BACKEND.md, "Twenty-third session" and "Twenty-fourth session").
//
// A block takes one split of one (token, kv head); its 4 warps take the split's 16-position tiles
// round robin (a tile is 16 positions of one page: pages hold a power of two of at least 16), each
// keeping an online softmax per query head and the output in mma accumulators; the warps are merged
// at the end into the record attention_merge_kernel reads.
//
// Arithmetic: mma.sync m16n8k16 with f32 accumulation, bf16 operands for a bf16 cache and f16 for
// fp8 (E4M3 codes are exact in f16; one cvt per pair). The 16 rows of the A operand are three parts
// of up to four query heads: row h the high part of head h, row h + 4 the middle, row h + 8 the low
// (x = hi + mid + lo, each rounded to 16 bits: ~24 significant bits), rows 12..15 zero. So
//   * S = Q K^T: K's codes are exact, q enters as its three parts, and the three rows' scores are
//     added (rows h and h + 8 are on the same lane, row h + 4 sixteen lanes away);
//   * O += P V: the probabilities enter as their three parts in the same rows, V exactly; the rows'
//     outputs are added once at the end.
// Nothing but f32 rounding separates the result from the CPU's f32 attention. fp8 scales: K's
// per-position scale multiplies the score; V's is folded into the probability relative to the largest
// V scale seen so far (a second running maximum, as the softmax's, so the f16 parts keep their
// precision), the output rescaled by a power of two when that maximum grows. For f16, q is first
// multiplied by a power of two that puts its largest magnitude in [2^14, 2^15).
//
// The operands' layouts are attention_mma.cuh's.
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_split_mma.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

using namespace attn_mma;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

// x's share of the lane's two A rows: rows g < 4 take the high part (row g) and the low part (row
// g + 8); rows 4..7 the middle part, rows 12..15 zero (the "upper" lanes, g >= 4).
template <bool kF16>
__device__ __forceinline__ void split3(float x, bool upper, float& row_a, float& row_b) {
  const float hi = round16<kF16>(x), r = x - hi, mid = round16<kF16>(r);
  row_a = upper ? mid : hi;
  row_b = upper ? 0.0f : r - mid;
}

// The four A values of one k step (reduction indices 2t, 2t + 1, 2t + 8, 2t + 9 of rows g, g + 8).
template <bool kF16>
__device__ __forceinline__ uint4 a_fragment(float x0, float x1, float x2, float x3, bool upper) {
  float a0, b0, a1, b1, a2, b2, a3, b3;
  split3<kF16>(x0, upper, a0, b0);
  split3<kF16>(x1, upper, a1, b1);
  split3<kF16>(x2, upper, a2, b2);
  split3<kF16>(x3, upper, a3, b3);
  return make_uint4(pack16<kF16>(a0, a1), pack16<kF16>(b0, b1), pack16<kF16>(a2, a3), pack16<kF16>(b2, b3));
}

// One warp's running state for its query heads: lane (g, t) keeps head g & 3's max and its share of
// the sum, and the O accumulators of rows g and g + 8.
struct WarpState {
  float o[kNTiles][4];
  float m, l;
  int vmax;  // fp8: the largest V scale byte so far (-1000: none)
};

// S = Q K^T for the tile's two n-tiles of 8 keys.
template <KvFormat F>
__device__ __forceinline__ void tile_scores(const KvTile<F>& x, const uint4 (&qa)[kKSteps][32], int lane,
                                            float (&s)[2][4]) {
  constexpr bool kF16 = F == KvFormat::fp8;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) s[nt][i] = 0.0f;
#pragma unroll
  for (int j = 0; j < kKSteps; ++j) {
    const uint4 a = qa[j][lane];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      uint32_t b0, b1;
      k_fragment<F>(x, nt, j, b0, b1);
      mma16816<kF16>(s[nt], a, b0, b1);
    }
  }
}

// The tile's scores into the online softmax, then O += P V. Scores are in log2 units (sscale holds
// log2 e), so each probability is one exp2. kWhole: every key of the tile is in [lo, hi) on a good page
// (most tiles), so no key needs a mask.
template <KvFormat F, bool kWhole>
__device__ __forceinline__ void tile_softmax_pv(const KvTile<F>& x, const float (&s)[2][4], int lane,
                                                int base, int lo, int hi, float sscale, WarpState& w) {
  constexpr bool kF16 = F == KvFormat::fp8;
  const int gq = lane >> 2, tq = lane & 3;
  const bool upper = gq >= 4;

  // Scores of the lane's four keys (head g & 3), masked to [lo, hi).
  float sc[4], mx = -INFINITY;
  int vtile = -1000;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int nt = r >> 1, e = r & 1;
    float v = s[nt][e] + s[nt][2 + e];
    v += __shfl_xor_sync(kFull, v, 16);
    const int pos = base + lane_key(tq, r);
    const bool valid = kWhole || (x.ok && pos >= lo && pos < hi);
    if constexpr (kF16) {
      v *= format::ue8m0_to_f32((x.ksc >> (8 * r)) & 0xffu);
      if (valid) vtile = max(vtile, int((x.vsc >> (8 * r)) & 0xffu));
    }
    sc[r] = valid ? v * sscale : -INFINITY;
    mx = fmaxf(mx, sc[r]);
  }
  mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 2));
  const float m_new = fmaxf(w.m, mx);
  int v_new = w.vmax;
  if constexpr (kF16) {
    vtile = max(vtile, __shfl_xor_sync(kFull, vtile, 1));
    vtile = max(vtile, __shfl_xor_sync(kFull, vtile, 2));
    v_new = max(w.vmax, vtile);
  }
  // Rescale only when a maximum grew (rare past the first tiles); the vote keeps the branch uniform.
  if (__any_sync(kFull, m_new != w.m || v_new != w.vmax)) {
    const float corr = m_new == w.m ? 1.0f : w.m == -INFINITY ? 0.0f : exp2f(w.m - m_new);
    const float co = kF16 ? corr * pow2i(w.vmax - v_new) : corr;
    w.l *= corr;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) w.o[nt][i] *= co;
    w.m = m_new;
    w.vmax = v_new;
  }

  // Probabilities (times V's scale relative to the largest, fp8) as the P V A fragment. While no key
  // was valid yet, m is -inf and every score too.
  const float m_sub = w.m == -INFINITY ? 0.0f : w.m;
  float pv[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const float pr = exp2f(sc[r] - m_sub);  // exp2f(-inf) = 0 for masked keys
    w.l += pr;
    pv[r] = pr;
    if constexpr (kF16) {
      const int b = int((x.vsc >> (8 * r)) & 0xffu);
      if (sc[r] != -INFINITY) pv[r] = b == 255 ? NAN : pr * pow2i(b - w.vmax);
    }
  }
  const uint4 pa = a_fragment<kF16>(pv[0], pv[1], pv[2], pv[3], upper);

  uint4 v[KvTile<F>::kChunks];
  if constexpr (kWhole) {
#pragma unroll
    for (int i = 0; i < KvTile<F>::kChunks; ++i) v[i] = x.v[i];
  } else {
    masked_v<F>(x, base, lo, hi, tq, v);
  }
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
    uint32_t b0, b1;
    v_fragment<F>(v, nt, b0, b1);
    mma16816<kF16>(w.o[nt], pa, b0, b1);
  }
}

// One tile: S, then the softmax and O += P V. bf16 tiles whose keys are all attended skip the masks
// (H200, 65536 positions: 76.2 -> 70.9 us per layer with log2 units, 9% fewer instructions). The fp8
// kernel does not: with that path it ran 10% fewer instructions and took 80.4 us against 79.5
// (.carry/lead/t7.sh); its time follows where ptxas puts the two tiles' loads at 250 registers, not
// its instruction count.
template <KvFormat F>
__device__ __forceinline__ void tile_step(const KvTile<F>& x, const uint4 (&qa)[kKSteps][32], int lane,
                                          int base, int lo, int hi, float sscale, WarpState& w) {
  float s[2][4];
  tile_scores<F>(x, qa, lane, s);
  const bool whole = x.ok && base >= lo && base + kTile <= hi;  // the same on every lane
  if (F == KvFormat::bf16 && whole)
    tile_softmax_pv<F, true>(x, s, lane, base, lo, hi, sscale, w);
  else
    tile_softmax_pv<F, false>(x, s, lane, base, lo, hi, sscale, w);
}

// Tiles in flight per warp besides the one being multiplied: a bf16 tile holds 64 registers per lane,
// so one (233 registers in all); an fp8 tile 32, so two (249; H200, 65536 positions: 77.4 -> 75.9 us
// per layer, FP8 decode 212 -> 223 tok/s, .carry/lead/s5.sh and s6.sh). Two blocks per SM either way:
// the fp8 kernel with one tile ahead fits three at 167 registers, and was slower (99 us).
template <KvFormat F>
constexpr int kAhead = F == KvFormat::fp8 ? 2 : 1;

template <KvFormat F, int G>
__global__ void __launch_bounds__(kThreads, 2)
    attention_split_mma_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p,
                               uint32_t* err, float* part, int split_len, int n_splits) {
  static_assert(G == 1 || G == 2 || G == 4, "three parts of up to four heads fill the 16 rows");
  constexpr bool kF16 = F == KvFormat::fp8;
  pdl_trigger();
  pdl_wait();
  __shared__ uint4 qa_s[kKSteps][32];
  __shared__ float qinv_s[4];
  __shared__ float m_s[kWarps][G], l_s[kWarps][G], o_s[kWarps][G][kHd];
  __shared__ int v_s[kWarps];
  const int kvh = blockIdx.x, t = blockIdx.y, z = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int h = gq & 3;  // the lane's query head (rows h, h + 4, h + 8)
  const bool upper = gq >= 4;

  TokenSpan span;
  if (!token_span(p, g, t, z, split_len, err, span)) return;
  const int32_t* table = span.table;
  const int split0 = span.split0, lo = span.lo, hi = span.hi;

  // q's A fragments, once per block (warp 0; heads past G are zero rows).
  if (warp == 0) {
    float q[kKSteps][4], amax = 0.0f;
    load_q_row<F>(h < G ? p.q + (size_t(t) * p.n_heads + size_t(kvh) * G + h) * kHd : nullptr, tq, q, amax);
    float mul = 1.0f;
    if constexpr (kF16) {
      amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, 1));
      amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, 2));
      // f16 holds magnitudes below 65504: scale by 2^c so that the largest lies in [2^14, 2^15).
      const int c = f16_scale_exp(amax);
      mul = pow2i(c);
      if (tq == 0 && !upper) qinv_s[h] = pow2i(-c);
    } else {
      if (tq == 0 && !upper) qinv_s[h] = 1.0f;
    }
#pragma unroll
    for (int j = 0; j < kKSteps; ++j)
      qa_s[j][lane] = a_fragment<kF16>(q[j][0] * mul, q[j][1] * mul, q[j][2] * mul, q[j][3] * mul, upper);
  }
  __syncthreads();
  const float sscale = p.scale * kLog2e * qinv_s[h];

  WarpState w;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int i = 0; i < 4; ++i) w.o[nt][i] = 0.0f;
  w.m = -INFINITY;
  w.l = 0.0f;
  w.vmax = -1000;

  // The warp's tiles: warp, warp + 4, ... from the tile holding lo. The next tile's loads are issued
  // before the current one is multiplied, and the page of the one after that is looked up then too: a
  // load whose address waits for a page number just asked for would stall the warp there.
  bool bad_page = false;
  constexpr int kStep = kWarps * kTile;
  int base = split0 + ((lo - split0) / kTile + warp) * kTile;
  const TileGeom tg = tile_geom<F>(g, kvh);
  const LaneOffsets lof = lane_offsets<F>(gq, tq);
  auto page_at = [&](int b) { return b < hi ? table[b >> tg.ps_shift] : 0; };
  auto fetch = [&](int b, int page, KvTile<F>& x) { fetch_tile<F>(kpool, vpool, tg, lof, b, page, x); };
  if constexpr (kAhead<F> == 1) {
    KvTile<F> cur;
    if (base < hi) fetch(base, page_at(base), cur);
    int page_next = page_at(base + kStep);
    while (base < hi) {
      const int next = base + kStep;
      const int page_after = page_at(next + kStep);
      KvTile<F> nxt;
      if (next < hi) fetch(next, page_next, nxt);
      bad_page |= !cur.ok;
      tile_step<F>(cur, qa_s, lane, base, lo, hi, sscale, w);
      cur = nxt;
      base = next;
      page_next = page_after;
    }
  } else {
    // Two tiles in flight, the loop unrolled over three buffers (a copy would wait for the loads).
    int page_next = page_at(base + 2 * kStep);
    auto step = [&](const KvTile<F>& x, KvTile<F>& nx) {
      const int nb = base + 2 * kStep;
      const int page_after = page_at(nb + kStep);
      if (nb < hi) fetch(nb, page_next, nx);
      bad_page |= !x.ok;
      tile_step<F>(x, qa_s, lane, base, lo, hi, sscale, w);
      base += kStep;
      page_next = page_after;
      return base < hi;
    };
    KvTile<F> t0, t1, t2;
    if (base < hi) fetch(base, page_at(base), t0);
    if (base + kStep < hi) fetch(base + kStep, page_at(base + kStep), t1);
    while (base < hi) {
      if (!step(t0, t2) || !step(t1, t0) || !step(t2, t1)) break;
    }
  }
  if (bad_page && lane == 0) atomicOr(err, kErrAttnPage);

    // The three rows of each head summed; lanes g < 4 then hold head g's output and sum.
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float v = w.o[nt][e] + w.o[nt][2 + e];
      w.o[nt][e] = v + __shfl_xor_sync(kFull, v, 16);
    }
  w.l += __shfl_xor_sync(kFull, w.l, 1);
  w.l += __shfl_xor_sync(kFull, w.l, 2);
  if (!upper && h < G) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) o_s[warp][h][out_dim<F>(nt, 2 * tq + e)] = w.o[nt][e];
    if (tq == 0) m_s[warp][h] = w.m, l_s[warp][h] = w.l;
  }
  if (lane == 0) v_s[warp] = w.vmax;
  __syncthreads();

  // The warps in order, into the split's record (as attention_gqa_kernel<..., kSplit> writes it).
  write_split_record<G, kWarps, kF16>(m_s, l_s, o_s, v_s,
                                      part + ((size_t(t) * gridDim.x + kvh) * n_splits + z) * (G * (2 + kHd)),
                                      threadIdx.x);
}

template <KvFormat F>
void launch_group(int group, const uint8_t* kp, const uint8_t* vp, const KvGeom& g, const AttnParams& p,
                  int n_kv, int n_tokens, uint32_t* err, float* part, int split_len, int n_splits,
                  cudaStream_t s) {
  const dim3 grid{unsigned(n_kv), unsigned(n_tokens), unsigned(n_splits)};
  switch (group) {
    case 1:
      launch("attention_split_mma_kernel", attention_split_mma_kernel<F, 1>, grid, dim3(kThreads), s, kp, vp,
             g, p, err, part, split_len, n_splits);
      break;
    case 2:
      launch("attention_split_mma_kernel", attention_split_mma_kernel<F, 2>, grid, dim3(kThreads), s, kp, vp,
             g, p, err, part, split_len, n_splits);
      break;
    default:
      launch("attention_split_mma_kernel", attention_split_mma_kernel<F, 4>, grid, dim3(kThreads), s, kp, vp,
             g, p, err, part, split_len, n_splits);
      break;
  }
}

std::atomic<bool> g_fp8_transposed{true};

}  // namespace

bool split_fp8_transposed_enabled() {
  return g_fp8_transposed.load(std::memory_order_relaxed);
}
void set_split_fp8_transposed_enabled(bool on) {
  g_fp8_transposed.store(on, std::memory_order_relaxed);
}

bool split_mma_applies(KvFormat f, int group, int page_size) {
  return (f == KvFormat::bf16 || f == KvFormat::fp8) && (group == 1 || group == 2 || group == 4) &&
         attn_mma::page_size_ok(page_size);
}

void launch_split_mma_partials(KvFormat f, const uint8_t* kp, const uint8_t* vp, const KvGeom& g,
                               const AttnParams& p, int n_kv, int n_tokens, uint32_t* err, float* part,
                               int split_len, int n_splits, cudaStream_t s) {
  if (f == KvFormat::bf16)
    launch_group<KvFormat::bf16>(p.group, kp, vp, g, p, n_kv, n_tokens, err, part, split_len, n_splits, s);
  else if (split_fp8_transposed_enabled())
    launch_split_fp8_partials(kp, vp, g, p, n_kv, n_tokens, err, part, split_len, n_splits, s);
  else
    launch_group<KvFormat::fp8>(p.group, kp, vp, g, p, n_kv, n_tokens, err, part, split_len, n_splits, s);
}

}  // namespace mx8::backend::cuda_impl
