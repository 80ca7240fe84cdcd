// What the tensor-core attention kernels share (attention_split_mma.cu for decode, attention_prefill_mma.cu
// for prompt steps): mma.sync m16n8k16 with f32 accumulation on bf16 operands for a bf16 KV cache and
// f16 for fp8 (E4M3 codes are exact in f16, one cvt per pair), K/V tiles of 16 positions of one page
// loaded straight into the operand registers, and the helpers that build operands from them.
//
// The reduction dimension of each product may be permuted freely as long as both operands agree, so
// every operand is read in the order that makes its global loads coalesced and its fragments
// shuffle-free:
//   * S: lane (g, t) (lane = 4 g + t) holds K rows g and g + 8 of the tile, 16-byte chunks t, t + 4,
//     ... of each (bf16: dims 32 i + 8 t + [0, 8) for i < 4; fp8: 64 i + 16 t + [0, 16) for i < 2);
//     k step j takes four of those dims (base_dim below), and the q fragments take the same;
//   * P V: the keys are the reduction; lane (g, t) holds V rows 2t, 2t + 1, 2t + 8, 2t + 9 (the keys
//     of its P fragment, which are the score columns its S accumulators hold) at dims 8 g + [0, 8) and
//     64 + 8 g + [0, 8) (bf16) or 16 g + [0, 16) (fp8); n-tile nt, column g is dim out_dim(nt, g).
//
// q and the probabilities enter as parts of 16 bits each (hi = round(x), mid = round(x - hi), ...),
// so that the products keep 22-24 bits; how the parts are laid out is each kernel's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/attention_common.cuh"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl::attn_mma {

constexpr int kHd = 128;           // head_dim
constexpr int kTile = 16;          // positions per K/V tile
constexpr int kKSteps = kHd / 16;  // k steps of S = Q K^T
constexpr int kNTiles = kHd / 8;   // n-tiles of O = P V
constexpr uint32_t kFull = 0xffffffffu;

// Pages a tile can take: a power of two of at least kTile positions (a tile then lies in one page, and
// a position's page and slot are a shift and a mask).
inline bool page_size_ok(int page_size) {
  return page_size >= kTile && (page_size & (page_size - 1)) == 0;
}

template <bool kF16>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  if constexpr (kF16)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

template <bool kF16>
__device__ __forceinline__ float round16(float x) {
  if constexpr (kF16)
    return __half2float(__float2half_rn(x));
  else
    return __bfloat162float(__float2bfloat16_rn(x));
}

// Two values as one 32-bit operand register (lo in the low half: the lower k or n index).
template <bool kF16>
__device__ __forceinline__ uint32_t pack16(float lo, float hi) {
  if constexpr (kF16) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

// E4M3 pair (low byte first) as f16x2, exact.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t two_bytes) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two_bytes & 0xffffu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The first of the four dims of k step j that lane t's S fragments hold (see the file comment).
template <KvFormat F>
__device__ __forceinline__ int base_dim(int j, int t) {
  if constexpr (F == KvFormat::bf16)
    return 32 * (j >> 1) + 8 * t + 4 * (j & 1);
  else
    return 64 * (j >> 2) + 16 * t + 4 * (j & 3);
}

// The output dim of n-tile nt, column n of O = P V.
template <KvFormat F>
__device__ __forceinline__ int out_dim(int nt, int n) {
  if constexpr (F == KvFormat::bf16)
    return 64 * (nt >> 3) + 8 * n + (nt & 7);
  else
    return 16 * n + nt;
}

// 2^e for an integer e, 0 below the normal range (such a term is < 2^-126 of the largest one).
__device__ __forceinline__ float pow2i(int e) {
  return e < -126 ? 0.0f : __int_as_float((e + 127) << 23);
}

// Scores are kept in log2 units (one MUFU.EX2 per probability; expf is ~10 instructions): rounding
// s log2(e) moves p by ~|s| 2^-24 relative. Records for the shared merge go back to natural units.
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;

// The exponent c for which 2^c puts a row's largest finite magnitude amax in [2^14, 2^15), so that its
// f16 parts keep their precision (0 for a zero or non-finite row).
__device__ __forceinline__ int f16_scale_exp(float amax) {
  return amax > 0.0f && amax <= 3.4e38f ? min(126, max(-126, 14 - ilogbf(amax))) : 0;
}

// The four values of k step j (from base_dim(j, t)) of q's row `row` (nullptr: zeros), and their
// largest magnitude folded into amax.
template <KvFormat F>
__device__ __forceinline__ void load_q_row(const float* row, int t, float (&q)[kKSteps][4], float& amax) {
#pragma unroll
  for (int j = 0; j < kKSteps; ++j) {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row) v = *reinterpret_cast<const float4*>(row + base_dim<F>(j, t));
    q[j][0] = v.x, q[j][1] = v.y, q[j][2] = v.z, q[j][3] = v.w;
    amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
  }
}

// A split-attention block's record (m[G] in natural-log units, l[G], unnormalized output[G][128], as the
// merge kernel reads it) from its W warps' states, merged in warp order by thread d (one per dim): m
// in log2 units; fp8 (kF16): each warp's output in units of its largest V scale byte v (< 0: none).
template <int G, int W, bool kF16>
__device__ __forceinline__ void write_split_record(const float (&m_s)[W][G], const float (&l_s)[W][G],
                                                   const float (&o_s)[W][G][kHd], const int (&v_s)[W],
                                                   float* rec, int d) {
#pragma unroll
  for (int hh = 0; hh < G; ++hh) {
    float M = -INFINITY;
#pragma unroll
    for (int i = 0; i < W; ++i) M = fmaxf(M, m_s[i][hh]);
    float L = 0.0f, o = 0.0f;
#pragma unroll
    for (int i = 0; i < W; ++i) {
      if (m_s[i][hh] == -INFINITY) continue;
      const float f = exp2f(m_s[i][hh] - M);
      L += l_s[i][hh] * f;
      o += o_s[i][hh][d] * (kF16 ? f * format::ue8m0_to_f32(uint32_t(max(v_s[i], 0))) : f);
    }
    if (d == 0) rec[hh] = M * kLn2, rec[G + hh] = L;
    rec[2 * G + hh * kHd + d] = o;
  }
}

// The keys of the tile a lane's S accumulators and P fragment hold: r = 0..3 is key 2t, 2t + 1,
// 2t + 8, 2t + 9 (accumulator n-tile r >> 1, column 2t + (r & 1)).
__device__ __forceinline__ int lane_key(int t, int r) {
  return 2 * t + (r & 1) + 8 * (r >> 1);
}

// A lane's share of one tile, loaded a tile ahead of its use.
template <KvFormat F>
struct KvTile {
  static constexpr int kChunks = F == KvFormat::bf16 ? 8 : 4;
  uint4 k[kChunks];   // rows g, g + 8: 16-byte chunks t, t + 4, ... (bf16: 4 per row; fp8: 2)
  uint4 v[kChunks];   // bf16: [key r][dims 8g.., 64 + 8g..]; fp8: [key r] dims 16g..
  uint32_t ksc, vsc;  // fp8: the UE8M0 scale bytes of lane_key(t, 0..3)
  bool ok;            // the page is inside the cache
};

// Where a block's tiles lie: the page size is a power of two, so a position's page and slot are a
// shift and a mask (an integer division costs ~20 instructions per tile).
struct TileGeom {
  size_t page_bytes;
  uint32_t head_off;   // the kv head's first row in a page
  uint32_t scale_off;  // fp8: its first scale byte in a page
  int ps_shift, n_pages;
};

// A lane's loads relative to a tile's first row, the same for every tile.
struct LaneOffsets {
  uint32_t k[2];  // K rows g, g + 8 at chunk t
  uint32_t v[4];  // V rows lane_key(t, 0..3) at dims 8 g (bf16) or 16 g (fp8)
  uint32_t sc;    // fp8: the scale byte of key 2t
};

// Where tile `base` on `page` lies: its page's offset in the pool (page 0 for a bad page, whose keys
// the caller masks) and its first row's.
struct TileAddr {
  size_t page_off, row0;
  uint32_t slot0;
  bool ok;
};
template <KvFormat F>
__device__ __forceinline__ TileAddr tile_addr(const TileGeom& tg, int base, int page) {
  TileAddr a;
  a.ok = page >= 0 && page < tg.n_pages;
  a.page_off = size_t(a.ok ? page : 0) * tg.page_bytes;
  a.slot0 = uint32_t(base) & ((1u << tg.ps_shift) - 1);
  a.row0 = a.page_off + tg.head_off + a.slot0 * (kHd * kElemBytes<F>);
  return a;
}

// A lane's K and V rows of a tile (K's 16 rows at krows, V's at vrows).
template <KvFormat F>
__device__ __forceinline__ void load_rows(const uint8_t* krows, const uint8_t* vrows, const LaneOffsets& lo,
                                          KvTile<F>& x) {
  constexpr int kPerRow = KvTile<F>::kChunks / 2;
  auto ld = [](const uint8_t* a) { return *reinterpret_cast<const uint4*>(a); };
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int i = 0; i < kPerRow; ++i) x.k[kPerRow * r + i] = ld(krows + lo.k[r] + 64 * i);
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    if constexpr (F == KvFormat::bf16) {
      x.v[2 * r] = ld(vrows + lo.v[r]);
      x.v[2 * r + 1] = ld(vrows + lo.v[r] + 128);
    } else {
      x.v[r] = ld(vrows + lo.v[r]);
    }
  }
}

// Tile `base` on `page`. No branch: a bad page reads page 0 and marks the tile (its keys are masked).
template <KvFormat F>
__device__ __forceinline__ void fetch_tile(const uint8_t* kpool, const uint8_t* vpool, const TileGeom& tg,
                                           const LaneOffsets& lo, int base, int page, KvTile<F>& x) {
  const TileAddr a = tile_addr<F>(tg, base, page);
  x.ok = a.ok;
  load_rows<F>(kpool + a.row0, vpool + a.row0, lo, x);
  if constexpr (F == KvFormat::fp8) {
    const size_t sc0 = a.page_off + tg.scale_off + a.slot0 + lo.sc;
    auto ld2 = [](const uint8_t* a) { return uint32_t(*reinterpret_cast<const uint16_t*>(a)); };
    x.ksc = ld2(kpool + sc0) | (ld2(kpool + sc0 + 8) << 16);
    x.vsc = ld2(vpool + sc0) | (ld2(vpool + sc0 + 8) << 16);
  }
}

// K's B fragment of k step j, n-tile nt (keys 8 nt + g): dims base_dim(j, t) + {0, 1} and {2, 3}.
template <KvFormat F>
__device__ __forceinline__ void k_fragment(const KvTile<F>& x, int nt, int j, uint32_t& b0, uint32_t& b1) {
  if constexpr (F == KvFormat::bf16) {
    const uint4& c = x.k[4 * nt + (j >> 1)];
    b0 = word(c, 2 * (j & 1));
    b1 = word(c, 2 * (j & 1) + 1);
  } else {
    const uint32_t wd = word(x.k[2 * nt + (j >> 2)], j & 3);
    b0 = e4m3x2_to_f16x2(wd);
    b1 = e4m3x2_to_f16x2(wd >> 16);
  }
}

// V's B fragment of n-tile nt (dims out_dim(nt, g)) from a lane's V rows v (KvTile::v, possibly with
// masked rows zeroed): keys (2t, 2t + 1) and (2t + 8, 2t + 9).
template <KvFormat F>
__device__ __forceinline__ void v_fragment(const uint4 (&v)[KvTile<F>::kChunks], int nt, uint32_t& b0,
                                           uint32_t& b1) {
  if constexpr (F == KvFormat::bf16) {
    const int hf = nt >> 3, e8 = nt & 7;
    const uint32_t sel = (e8 & 1) ? 0x7632u : 0x5410u;
    b0 = __byte_perm(word(v[hf], e8 >> 1), word(v[2 + hf], e8 >> 1), sel);
    b1 = __byte_perm(word(v[4 + hf], e8 >> 1), word(v[6 + hf], e8 >> 1), sel);
  } else {
    // Byte nt & 3 of word nt >> 2 of each key pair, paired and widened.
    const int b = nt & 3, wi = nt >> 2;
    const uint32_t sel = uint32_t(b) | uint32_t(4 + b) << 4;
    b0 = e4m3x2_to_f16x2(__byte_perm(word(v[0], wi), word(v[1], wi), sel));
    b1 = e4m3x2_to_f16x2(__byte_perm(word(v[2], wi), word(v[3], wi), sel));
  }
}

// The lane's V rows of tile `base` with the rows of keys outside [lo, hi) (or all, on a bad page)
// zeroed: stale rows may hold NaN codes, and 0 x NaN is NaN. Only tiles at the range's ends have them.
template <KvFormat F>
__device__ __forceinline__ void masked_v(const KvTile<F>& x, int base, int lo, int hi, int t,
                                         uint4 (&v)[KvTile<F>::kChunks]) {
#pragma unroll
  for (int i = 0; i < KvTile<F>::kChunks; ++i) v[i] = x.v[i];
  if (x.ok && base >= lo && base + kTile <= hi) return;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int pos = base + lane_key(t, r);
    if (!x.ok || pos < lo || pos >= hi) {
      if constexpr (F == KvFormat::bf16)
        v[2 * r] = v[2 * r + 1] = make_uint4(0, 0, 0, 0);
      else
        v[r] = make_uint4(0, 0, 0, 0);
    }
  }
}

// The block's tile geometry for kv head kvh, and lane (g, t)'s offsets.
template <KvFormat F>
__device__ __forceinline__ TileGeom tile_geom(const KvGeom& g, int kvh) {
  return TileGeom{g.page_bytes, uint32_t(kvh * g.ps * kHd * kElemBytes<F>),
                  uint32_t(g.ps * g.n_kv * kHd + kvh * g.ps), 31 - __clz(g.ps), g.n_pages};
}
template <KvFormat F>
__device__ __forceinline__ LaneOffsets lane_offsets(int gq, int tq) {
  LaneOffsets lo;
#pragma unroll
  for (int r = 0; r < 2; ++r) lo.k[r] = uint32_t((gq + 8 * r) * kHd * kElemBytes<F> + 16 * tq);
#pragma unroll
  for (int r = 0; r < 4; ++r) lo.v[r] = uint32_t(lane_key(tq, r) * kHd * kElemBytes<F> + 16 * gq);
  lo.sc = uint32_t(2 * tq);
  return lo;
}

}  // namespace mx8::backend::cuda_impl::attn_mma
