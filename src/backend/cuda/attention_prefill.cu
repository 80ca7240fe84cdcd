// Attention for prompt steps (many query tokens) on the tensor cores: one block serves 64 query rows
// (token, head) of one kv head, 64 / G tokens of its GQA group, and streams the K/V positions they
// attend to through shared memory once for all of them. The decode kernels (attention_decode.cu) read
// every K/V row once per query token; at a 4096-position context a 512-token prompt step spent
// 9.6 ms per layer there (H200), the matmuls 0.4 ms.
//
// Where pages hold a power of two of at least 16 positions, attention_prefill_mma.cu's m16n8k16
// kernel takes the call instead (1.2-1.33x faster from 4096 cached positions on the H200); this
// TF32 kernel serves the other page sizes and MX8_CUDA_PREFILL_MMA=0.
//
// Arithmetic: mma.sync m16n8k8 with TF32 inputs and f32 accumulation, products exact:
//   * S = Q K^T: q (f32) is split into hi = tf32(q) and lo = q - hi (the mma reads lo's top 19 bits,
//     so q keeps ~22 significant bits); K is exact in TF32 (bf16 codes, or E4M3 codes with the
//     row's power-of-two scale applied to the scores);
//   * the online softmax (running max and sum per row, as the decode kernels do) in f32 with expf;
//   * O += P V: p split into hi + lo the same way (times the V row's power-of-two scale first for
//     fp8), V exact in TF32.
// So the result differs from the CPU's f32 attention by rounding only (tested against it).
//
// Fragments (PTX ISA, mma.m16n8k8 .tf32; lane = 4 g + t): A a0 (row g, k t), a1 (g + 8, t),
// a2 (g, t + 4), a3 (g + 8, t + 4); B b0 (k t, col g), b1 (k t + 4, g); C c0, c1 (row g, cols 2t,
// 2t + 1), c2, c3 (row g + 8, same cols). For P V the 8 keys of a k step are taken in the order
// {0, 2, 4, 6, 1, 3, 5, 7}: slot t is key 2t and slot t + 4 key 2t + 1, which are exactly the score
// columns a lane holds (c0 / c1), so P goes from the S accumulators to the A operand without
// shuffles (V's B fragment reads keys 2t and 2t + 1 to match).
//
// Shared memory rows are 128 + 4 floats: the fragment loads (row g, column t) and (key 2t, dim g)
// then hit 32 different banks.
//
// A block's tokens may belong to several sequences (a batch of prompts): it runs one pass over the
// K/V of each distinct sequence among them, the other rows masked, and each row is written at the
// end of its own sequence's pass.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/attention_prefill_mma.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kHd = 128;          // head_dim
constexpr int kRows = 64;         // query rows per block: 4 warps x the mma's 16
constexpr int kKeys = 32;         // K/V positions per shared-memory tile
constexpr int kStride = kHd + 4;  // floats per staged row (bank-conflict-free fragments)
constexpr int kThreads = 128;

struct PrefillSmem {
  float q[2][kRows][kStride];  // hi, lo parts of the block's query rows
  float k[kKeys][kStride];
  float v[kKeys][kStride];
  float k_scale[kKeys], v_scale[kKeys];  // fp8: the rows' UE8M0 scales (1 otherwise)
  int tok_seq[kRows], tok_len[kRows];    // per local token (at most kRows tokens: G = 1)
  int seg_lo, seg_hi;                    // the current pass's key range
};

__device__ __forceinline__ float tf32_hi(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return __uint_as_float(r);
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], float a0, float a1, float a2, float a3, float b0,
                                         float b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a0)), "r"(__float_as_uint(a1)), "r"(__float_as_uint(a2)),
        "r"(__float_as_uint(a3)), "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
}

// A thread's share of one K/V tile as loaded: 32 values (a quarter row) of K and of V at one
// position, raw (bf16: 4 x 16 bytes each; E4M3: 2 x 16 bytes), and fp8's row scales. Loaded a tile
// ahead, while the current tile is multiplied.
struct TileShare {
  uint4 k[4], v[4];
  float ks, vs;
};

template <KvFormat F>
__device__ __forceinline__ void fetch_share(const uint8_t* kpool, const uint8_t* vpool, const KvGeom& g,
                                            const int32_t* table, int pos, int end, int kvh, int d0,
                                            uint32_t* err, TileShare& t) {
  constexpr int kChunks = F == KvFormat::bf16 ? 4 : 2;
  t.ks = t.vs = 1.0f;
  bool ok = pos < end;
  int page = 0;
  if (ok) {
    page = table[pos / g.ps];
    if (page < 0 || page >= g.n_pages) {
      atomicOr(err, kErrAttnPage);
      ok = false;
    }
  }
  if (!ok) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) t.k[i] = t.v[i] = make_uint4(0, 0, 0, 0);
    return;
  }
  const int slot = pos % g.ps;
  const size_t off = size_t(page) * g.page_bytes, e = elem_off<F>(g, slot, kvh) + size_t(d0) * kElemBytes<F>;
  const uint4* kp = reinterpret_cast<const uint4*>(kpool + off + e);
  const uint4* vp = reinterpret_cast<const uint4*>(vpool + off + e);
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    t.k[i] = kp[i];
    t.v[i] = vp[i];
  }
  if constexpr (F == KvFormat::fp8) {
    t.ks = format::ue8m0_to_f32(kpool[off + scale_off(g, slot, kvh)]);
    t.vs = format::ue8m0_to_f32(vpool[off + scale_off(g, slot, kvh)]);
  }
}

// 32 raw values as f32 codes into shared memory: bf16 widened, E4M3 decoded without its scale (the
// scores and probabilities take it).
template <KvFormat F>
__device__ __forceinline__ void widen(const uint4 (&raw)[4], float* dst) {
  float v[32];
  if constexpr (F == KvFormat::bf16) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t w[4] = {raw[i].x, raw[i].y, raw[i].z, raw[i].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[8 * i + 2 * j] = __uint_as_float(w[j] << 16);
        v[8 * i + 2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint32_t w[4] = {raw[i].x, raw[i].y, raw[i].z, raw[i].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        // E4M3 -> f16 is exact (hardware cvt), f16 -> f32 exact.
        const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[j] & 0xffffu), __NV_E4M3);
        const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[j] >> 16), __NV_E4M3);
        const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
        v[16 * i + 4 * j] = a.x, v[16 * i + 4 * j + 1] = a.y, v[16 * i + 4 * j + 2] = b.x;
        v[16 * i + 4 * j + 3] = b.y;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 32; i += 4)
    *reinterpret_cast<float4*>(dst + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
}

template <KvFormat F>
__global__ void __launch_bounds__(kThreads, 2)
    attention_prefill_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p, int n_tokens,
                             uint32_t* err) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  PrefillSmem& sm = *reinterpret_cast<PrefillSmem*>(smem_raw);
  const int G = p.group, tpb = kRows / G;  // tokens per block
  const int kvh = int(blockIdx.y), t0 = int(blockIdx.x) * tpb;
  const int tid = int(threadIdx.x), warp = tid >> 5, lane = tid & 31, gq = lane >> 2, tq = lane & 3;
  const int ntok = min(tpb, n_tokens - t0);

  // The block's query rows (row r = local token r / G, query head kvh G + r % G), split hi + lo.
  for (int i = tid; i < kRows * kHd; i += kThreads) {
    const int r = i / kHd, d = i % kHd, lt = r / G;
    const float x = lt < ntok ? p.q[(size_t(t0 + lt) * p.n_heads + size_t(kvh) * G + r % G) * kHd + d] : 0.0f;
    const float hi = tf32_hi(x);
    sm.q[0][r][d] = hi;
    sm.q[1][r][d] = x - hi;
  }
  stage_block_tokens(p, g, t0, ntok, kRows, tid, kThreads, kvh == 0, err, sm.tok_seq, sm.tok_len);
  __syncthreads();

  // This lane's two rows (g and g + 8 of the warp's 16).
  const int r0 = warp * 16 + gq, r1 = r0 + 8;
  const int lt0 = r0 / G, lt1 = r1 / G;
  for (int first = 0; first < ntok; ++first) {
    if (!starts_pass(sm.tok_seq, first)) continue;
    const int sq = sm.tok_seq[first];

    // The pass's key range: the union of its rows' [first attended, kv_len).
    if (tid == 0) {
      int lo = INT32_MAX, hi = 0;
      for (int lt = first; lt < ntok; ++lt)
        if (sm.tok_seq[lt] == sq) {
          lo = min(lo, first_attended(p, sm.tok_len[lt]));
          hi = max(hi, sm.tok_len[lt]);
        }
      sm.seg_lo = lo;
      sm.seg_hi = hi;
    }
    __syncthreads();
    const int seg_lo = sm.seg_lo, seg_hi = sm.seg_hi;
    const bool act0 = lt0 < ntok && sm.tok_seq[lt0] == sq, act1 = lt1 < ntok && sm.tok_seq[lt1] == sq;
    const int hi0 = act0 ? sm.tok_len[lt0] : 0, hi1 = act1 ? sm.tok_len[lt1] : 0;
    const int lo0 = act0 ? first_attended(p, hi0) : 0, lo1 = act1 ? first_attended(p, hi1) : 0;
    const int32_t* table = p.block_tables + size_t(sq) * p.max_pages_per_seq;

    float o[kHd / 8][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    // Tile staging: thread = (key, quarter of the row); the next tile's share is loaded before the
    // current one is multiplied.
    const int key = tid >> 2, d0 = (tid & 3) * 32;
    const int kb0 = seg_lo / kKeys * kKeys;
    TileShare next;
    fetch_share<F>(kpool, vpool, g, table, kb0 + key, seg_hi, kvh, d0, err, next);
    for (int kb = kb0; kb < seg_hi; kb += kKeys) {
      __syncthreads();  // the previous tile is no longer read
      widen<F>(next.k, &sm.k[key][d0]);
      widen<F>(next.v, &sm.v[key][d0]);
      if (d0 == 0) {
        sm.k_scale[key] = next.ks;
        sm.v_scale[key] = next.vs;
      }
      __syncthreads();
      if (kb + kKeys < seg_hi)
        fetch_share<F>(kpool, vpool, g, table, kb + kKeys + key, seg_hi, kvh, d0, err, next);

      // S = Q K^T for the warp's 16 rows x 32 keys; the hi and lo products in separate accumulators,
      // so that eight independent mma chains are in flight instead of four.
      float s[kKeys / 8][4] = {}, sl[kKeys / 8][4] = {};
#pragma unroll 4
      for (int ks = 0; ks < kHd / 8; ++ks) {
        const int c = ks * 8 + tq;
        float ah[4], al[4];
        ah[0] = sm.q[0][r0][c], ah[1] = sm.q[0][r1][c], ah[2] = sm.q[0][r0][c + 4],
        ah[3] = sm.q[0][r1][c + 4];
        al[0] = sm.q[1][r0][c], al[1] = sm.q[1][r1][c], al[2] = sm.q[1][r0][c + 4],
        al[3] = sm.q[1][r1][c + 4];
#pragma unroll
        for (int nt = 0; nt < kKeys / 8; ++nt) {
          const float b0 = sm.k[nt * 8 + gq][c], b1 = sm.k[nt * 8 + gq][c + 4];
          mma_tf32(s[nt], ah[0], ah[1], ah[2], ah[3], b0, b1);
          mma_tf32(sl[nt], al[0], al[1], al[2], al[3], b0, b1);
        }
      }
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[nt][c] += sl[nt][c];

      // Scores (times the softmax scale and fp8's K row scale), masked to each row's range; the
      // online softmax update of rows g (h = 0) and g + 8 (h = 1).
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int h = c >> 1, key = nt * 8 + 2 * tq + (c & 1), pos = kb + key;
          const bool in = h == 0 ? (pos >= lo0 && pos < hi0) : (pos >= lo1 && pos < hi1);
          float x = s[nt][c];
          if constexpr (F == KvFormat::fp8) x *= sm.k_scale[key];
          x = in ? x * p.scale : -INFINITY;
          s[nt][c] = x;
          mx[h] = fmaxf(mx[h], x);
        }
      float corr[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        const float mn = fmaxf(m[h], mx[h]);
        corr[h] = mn == -INFINITY ? 1.0f : expf(m[h] - mn);  // m = -inf: nothing to rescale
        m[h] = mn;
      }
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int h = c >> 1;
          const float e = s[nt][c] == -INFINITY ? 0.0f : expf(s[nt][c] - m[h]);
          sum[h] += e;
          s[nt][c] = e;
        }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 1);
        sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 2);
        l[h] = l[h] * corr[h] + sum[h];
      }
#pragma unroll
      for (int nt = 0; nt < kHd / 8; ++nt) {
        o[nt][0] *= corr[0], o[nt][1] *= corr[0];
        o[nt][2] *= corr[1], o[nt][3] *= corr[1];
      }

      // O += P V: k step j = keys 8j .. 8j + 7, slot t = key 2t, slot t + 4 = key 2t + 1.
#pragma unroll
      for (int j = 0; j < kKeys / 8; ++j) {
        const int ke = 8 * j + 2 * tq, ko = ke + 1;
        float pa[4] = {s[j][0], s[j][2], s[j][1], s[j][3]};  // (g, ke), (g + 8, ke), (g, ko), (g + 8, ko)
        if constexpr (F == KvFormat::fp8) {
          pa[0] *= sm.v_scale[ke], pa[1] *= sm.v_scale[ke];
          pa[2] *= sm.v_scale[ko], pa[3] *= sm.v_scale[ko];
        }
        float ph[4], pl[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          ph[i] = tf32_hi(pa[i]);
          pl[i] = pa[i] - ph[i];
        }
#pragma unroll
        for (int nt = 0; nt < kHd / 8; ++nt) {
          const float b0 = sm.v[ke][nt * 8 + gq], b1 = sm.v[ko][nt * 8 + gq];
          mma_tf32(o[nt], ph[0], ph[1], ph[2], ph[3], b0, b1);
          mma_tf32(o[nt], pl[0], pl[1], pl[2], pl[3], b0, b1);
        }
      }
    }

    // The rows of this pass: out = o / l.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (!(h == 0 ? act0 : act1)) continue;
      const int r = h == 0 ? r0 : r1;
      float* out = p.out + (size_t(t0 + r / G) * p.n_heads + size_t(kvh) * G + r % G) * kHd;
      const float inv = 1.0f / l[h];
#pragma unroll
      for (int nt = 0; nt < kHd / 8; ++nt)
        *reinterpret_cast<float2*>(out + nt * 8 + 2 * tq) =
            make_float2(o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv);
    }
  }
}

}  // namespace

bool attention_prefill_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("MX8_CUDA_PREFILL_ATTN");
    return !(e && e[0] == '0');
  }();
  return on;
}

bool attention_prefill_applies(const CudaKvCache& c, const AttentionArgs& a) {
  const KvCacheDesc& d = c.desc();
  const int group = a.n_heads / a.n_kv_heads;
  return attention_prefill_enabled() && !a.one_token_per_seq && a.n_tokens > kPrefillMinTokens &&
         d.head_dim == kHd && (d.format == KvFormat::bf16 || d.format == KvFormat::fp8) && group >= 1 &&
         kRows % group == 0 && c.page_bytes() % 16 == 0 &&
         reinterpret_cast<uintptr_t>(c.pool(a.layer, 0)) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(c.pool(a.layer, 1)) % 16 == 0;
}

namespace {
template <KvFormat F>
void launch_prefill(CudaKvCache& c, const AttentionArgs& a, const AttnParams& p, uint32_t* err,
                    cudaStream_t s) {
  auto* kernel = attention_prefill_kernel<F>;
  static const bool smem_set = [&] {  // over the default 48 KB, once per kernel
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(PrefillSmem))),
          "attention_prefill_kernel shared memory");
    return true;
  }();
  (void)smem_set;
  const int tpb = kRows / p.group;
  const dim3 grid(unsigned((a.n_tokens + tpb - 1) / tpb), unsigned(a.n_kv_heads));
  launch_smem("attention_prefill_kernel", kernel, grid, dim3(kThreads), sizeof(PrefillSmem), s,
              c.pool(a.layer, 0), c.pool(a.layer, 1), geom_of(c), p, a.n_tokens, err);
}
}  // namespace

void launch_attention_prefill(CudaKvCache& c, const AttentionArgs& a, uint32_t* err, cudaStream_t s) {
  const AttnParams p{a.q,   a.out,    a.n_heads,      a.n_heads / a.n_kv_heads, a.scale,
                     a.seq, a.kv_len, a.block_tables, a.max_pages_per_seq,      a.window};
  if (launch_attention_prefill_mma(c, a, p, err, s)) {
    check_launch("attention (prefill, m16n8k16)");
    return;
  }
  if (c.desc().format == KvFormat::fp8)
    launch_prefill<KvFormat::fp8>(c, a, p, err, s);
  else
    launch_prefill<KvFormat::bf16>(c, a, p, err, s);
  check_launch("attention (prefill)");
}

}  // namespace mx8::backend::cuda_impl
