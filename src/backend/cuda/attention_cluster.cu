// Decode attention over a thread block cluster per (token, kv head): attention_cluster_kernel, its
// knobs and its layout per call (attention_cluster.cuh).
#include "backend/cuda/attention_cluster.cuh"

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend/cuda/device_info.h"
#include "backend/cuda/ptx/cluster.cuh"
#include "backend/cuda/warp_uniform.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

// ---- attention, cluster-split (head_dim 128, decode and short prefill chunks) ---------------------
//
// attention_gqa_kernel with one block per kv head leaves most SMs idle at batch 1 and runs its
// positions as a chain of dependent rounds (table, then K/V rows, then the softmax) on those few
// SMs: 14.5 us per layer at ~126 positions (ncu, H200, Llama-3-8B shapes, 8 blocks). This kernel
// spreads one (token, kv head) over a thread block cluster of n_hs * S blocks (at most 8 by
// default, 16 allowed):
// - head split: block hs of the n_hs serves query heads [hs * Gb, (hs + 1) * Gb) of the group
//   (Gb = 1 by default, 2 or 4: fewer registers and less softmax/merge work per thread; the
//   sibling blocks read the same K/V rows, mostly from L2);
// - position split: the S blocks of a head split take the positions round-robin by stream (stream
//   j of block z, 32 streams per block, takes positions 32 z + j, 32 z + j + 32 S, ...), so the
//   work adapts to the actual length (read on the device; a recorded step only knows the block
//   table's capacity) and up to 32 S positions cost one round of loads.
// Streams are attention_gqa_kernel's (8 lanes, 16 dims each, own online softmax per query head),
// merged in the warp, then across the block's warps in shared memory, then across the S blocks of
// the cluster through distributed shared memory: each block merges a slice of the Gb * 128
// outputs; the others push their partials for it into its shared memory, and it sums them in the
// order z = 0 .. S-1 (deterministic; one cluster barrier).
// Llama-3-8B at ~126 positions (G = 4: clusters of 4 x 2 blocks, 64 blocks): 9.5-10 us in ncu,
// decode 305 -> 319 tok/s (FP8 weights, graphs on).
// The table entries and the K/V rows of a stream's first two rounds are loaded before anything else
// (the q load, the rope + kv_write prologue, the cluster barrier), so their DRAM latency overlaps it.
// With nk.q set (rope_kv_write_attention, one token): block 0 of the cluster rotates k and stores
// K/V head kvh (warps 0 and 1, rope_angle + rope_rotate + write_head as the composed ops), every
// block rotates its own copy of its query heads into shared memory (the same bits as rope_kernel),
// and a cluster barrier orders the stores before every read of the cache; a preloaded row that is
// the slot just written is loaded again after it. The rope angles are computed before the wait and
// each pair is rotated in registers by the thread that loads it, so q and k cost one round trip each
// (H200, decode FP8 at ~130 positions: 391 -> 394 tok/s with the second round). Block z = 0 of each
// head split writes the rotated q back (after the barrier, when every sibling has read the raw q).
constexpr int kCluWarps = 8;
constexpr int kCluStreams = kCluWarps * 4;
constexpr int kCluMaxS = 16;
// Rounds of a stream's K/V rows loaded before the prologue: with up to 32 S kPreRounds positions,
// nothing is left to load after the cluster barrier but the new token's row.
constexpr int kPreRounds = 2;

using mx8::cuda::ptx::cluster_arrive_relaxed;
using mx8::cuda::ptx::cluster_peer;
using mx8::cuda::ptx::cluster_sync_all;
using mx8::cuda::ptx::cluster_wait;

// Table entry and K/V rows (this lane's 16 dims) of position `pos` of head kvh; false when the
// position is outside [lo, hi) or on a bad page (then kv and vv are zeros).
template <KvFormat F, bool kL2 = false>
__device__ __forceinline__ bool clu_load(const uint8_t* kpool, const uint8_t* vpool, const KvGeom& g,
                                         const int32_t* table, int pos, int lo, int hi, int kvh, int d0,
                                         float* kv, float* vv, int& slot_id, bool& bad_page) {
  bool valid = pos >= lo && pos < hi;
  int page = 0;
  if (valid) {
    page = table[pos / g.ps];
    if (page < 0 || page >= g.n_pages) {
      bad_page = true;
      valid = false;
    }
  }
  slot_id = -1;
  if (valid) {
    const int slot = pos % g.ps;
    slot_id = page * g.ps + slot;
    const size_t off = size_t(page) * g.page_bytes;
    load16<F, kL2>(kpool + off + elem_off<F>(g, slot, kvh), kpool + off + scale_off(g, slot, kvh), d0, kv);
    load16<F, kL2>(vpool + off + elem_off<F>(g, slot, kvh), vpool + off + scale_off(g, slot, kvh), d0, vv);
  } else {
#pragma unroll
    for (int i = 0; i < kGqaDims; ++i) kv[i] = vv[i] = 0.0f;
  }
  return valid;
}

template <KvFormat F, int Gb>
__global__ void __launch_bounds__(kCluWarps * 32)
    attention_cluster_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p,
                             uint32_t* err, NewKv nk, CluParams cp, ActQuantOut qo) {
  pdl_trigger();
  // cp.early (one token, nk.q set): everything the first round reads before the wait is stable while
  // the previous kernel runs. The block table, lengths and sequence ids are copies the host staged
  // before the step's first kernel, and every K/V row but the new token's was written by an earlier
  // step; the new token's row is loaded again after the cluster barrier below. Not with a separate
  // kv_write before this kernel (chunks of tokens): its rows would be read too early.
  const bool fresh = nk.q != nullptr;
  const bool wait_late = cp.early && fresh;
  if (!wait_late) pdl_wait();
  __shared__ __align__(16) float q_s[Gb][kGqaHd];
  __shared__ float k_s[kGqaHd];  // block 0 (fresh): the new token's rotated k, for write_head
  __shared__ float m_s[kCluWarps][Gb], l_s[kCluWarps][Gb];
  __shared__ __align__(16) float acc_s[kCluWarps][Gb][kGqaHd];
  // S > 1: the partials of the S blocks for the outputs this block merges (written by the others).
  __shared__ float ml_s[kCluMaxS][2 * Gb];                      // [z]: m[Gb], l[Gb]
  __shared__ __align__(16) float po_s[Gb * kGqaHd + kCluMaxS];  // [z][per]: acc of this block's outputs
  const int C = cp.n_hs * cp.S;
  const int c = int(blockIdx.x) % C;  // rank in the cluster (clusters are C consecutive blocks along x)
  const int kvh = int(blockIdx.x) / C, hs = c / cp.S, z = c % cp.S, t = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = mx8::cuda::warp_uniform(int(threadIdx.x >> 5));
  const int sub = lane & 7, d0 = sub * kGqaDims;
  const size_t qrow = size_t(t) * p.n_heads + size_t(kvh) * cp.group + size_t(hs) * Gb;  // first q head

  const int len = p.kv_len[t];
  const int sq = p.seq[t];
  const bool bad_len = !token_ok(p, g, len, sq);
  const int32_t* table = p.block_tables + size_t(bad_len ? 0 : sq) * p.max_pages_per_seq;
  const int stride = kCluStreams * cp.S;
  const int base0 = z * kCluStreams + warp * 4;  // the warp's first position (its 4 streams: + 0..3)
  const int hi = bad_len ? 0 : len;
  const int lo = first_attended(p, hi);
  // Blocks push their partials into each other's shared memory at the end (S > 1); without the
  // prologue's cluster barrier, this split barrier says that all have started.
  const bool early_arrive = cp.S > 1 && !fresh;
  if (early_arrive) cluster_arrive_relaxed();

  // The first kPreRounds rounds: issued before the prologue (positions past the length load nothing).
  bool bad_page = false;
  float kv[kPreRounds][kGqaDims], vv[kPreRounds][kGqaDims];
  int slot_id[kPreRounds];
  bool valid[kPreRounds];
#pragma unroll
  for (int r = 0; r < kPreRounds; ++r)
    valid[r] = clu_load<F>(kpool, vpool, g, table, base0 + r * stride + (lane >> 3), lo, hi, kvh, d0, kv[r],
                           vv[r], slot_id[r], bad_page);
  // The new token's rope angles, also before the wait: its position comes with the same host-staged
  // upload as the table, and inv_freq is a constant table. Each pair is rotated by one thread, which
  // loads its two values after the wait, so q and k each take one round trip: q pair qt % 64 of head
  // qt / 64 by the block's last Gb * 64 threads (block 0's warps 0 and 1, which store K and V, are
  // free of them where Gb < 4), k pairs lane and lane + 32 by block 0's warp 0.
  int32_t pos = 0, new_slot = -1;
  const int qt = int(threadIdx.x) - (kCluWarps * 32 - Gb * (kGqaHd / 2));
  const bool k_warp = fresh && c == 0 && warp == 0;
  RopeAngle aq{}, ak[2]{};
  if (fresh) {
    pos = nk.positions[t];
    new_slot = nk.slots[t];
    if (qt >= 0) aq = rope_angle(qt % (kGqaHd / 2), pos, nk.r);
    if (k_warp)
#pragma unroll
      for (int i = 0; i < 2; ++i) ak[i] = rope_angle(lane + 32 * i, pos, nk.r);
  }
  if (wait_late) pdl_wait();

  if (fresh) {
    if (k_warp) {
      float* kr = nk.k + (size_t(t) * g.n_kv + kvh) * kGqaHd;
      float v[2][2];
      int at[2][2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        at[i][0] = rope_i0(lane + 32 * i, nk.r), at[i][1] = rope_i1(lane + 32 * i, nk.r);
        v[i][0] = kr[at[i][0]], v[i][1] = kr[at[i][1]];
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        rope_rotate(v[i][0], v[i][1], ak[i]);
#pragma unroll
        for (int e = 0; e < 2; ++e) kr[at[i][e]] = k_s[at[i][e]] = v[i][e];
      }
      __syncwarp();  // the warp's rotated k is read back by other lanes
      write_head<F>(const_cast<uint8_t*>(kpool), g, k_s, new_slot, kvh, lane, err);
    } else if (c == 0 && warp == 1) {
      write_head<F>(const_cast<uint8_t*>(vpool), g, nk.v + (size_t(t) * g.n_kv + kvh) * kGqaHd, new_slot, kvh,
                    lane, err);
    }
    if (qt >= 0) {
      const int h = qt / (kGqaHd / 2), j = qt % (kGqaHd / 2);
      const int i0 = rope_i0(j, nk.r), i1 = rope_i1(j, nk.r);
      float v0 = p.q[(qrow + h) * kGqaHd + i0], v1 = p.q[(qrow + h) * kGqaHd + i1];
      rope_rotate(v0, v1, aq);
      q_s[h][i0] = v0;
      q_s[h][i1] = v1;
    }
    // The cache stores of block 0 before every block's reads (the cluster barrier orders global
    // memory at cluster scope); the raw q read by every block before block z = 0 overwrites it.
    if (C > 1)
      cluster_sync_all();
    else
      __syncthreads();
    if (z == 0)
      for (int i = threadIdx.x; i < Gb * kGqaHd; i += blockDim.x)
        nk.q[qrow * kGqaHd + i] = q_s[i / kGqaHd][i % kGqaHd];
#pragma unroll
    for (int r = 0; r < kPreRounds; ++r)
      if (valid[r] && slot_id[r] == new_slot)
        valid[r] = clu_load<F, true>(kpool, vpool, g, table, base0 + r * stride + (lane >> 3), lo, hi, kvh,
                                     d0, kv[r], vv[r], slot_id[r], bad_page);
  } else {
    for (int i = threadIdx.x; i < Gb * kGqaHd; i += blockDim.x)
      q_s[i / kGqaHd][i % kGqaHd] = p.q[qrow * kGqaHd + i];
    __syncthreads();
  }
  if (bad_len) {
    if (threadIdx.x == 0 && c == 0) atomicOr(err, kErrAttnKvLen);
    if (early_arrive) cluster_wait();
    return;  // uniform over the cluster (every block reads the same length)
  }

  float q[Gb][kGqaDims], acc[Gb][kGqaDims], m[Gb], l[Gb];
  start_streams<Gb>(&q_s[0][0], d0, q, acc, m, l);

  // The warp's rounds of its 4 streams, in order (the bounds are uniform over the warp, so the shuffles
  // have all 32 lanes; an invalid stream computes on zeros and skips its update).
#pragma unroll
  for (int r = 0; r < kPreRounds; ++r)
    if (base0 + r * stride < hi) attend_row<Gb>(q, kv[r], vv[r], valid[r], p.scale, m, l, acc);
#pragma unroll 2
  for (int base = base0 + kPreRounds * stride; base < hi; base += stride) {
    valid[0] = clu_load<F>(kpool, vpool, g, table, base + (lane >> 3), lo, hi, kvh, d0, kv[0], vv[0],
                           slot_id[0], bad_page);
    attend_row<Gb>(q, kv[0], vv[0], valid[0], p.scale, m, l, acc);
  }
  if (__any_sync(0xffffffffu, bad_page) && lane == 0) atomicOr(err, kErrAttnPage);

  merge_streams<Gb>(m, l, acc);
  stash_warp(m_s, l_s, acc_s, warp, lane, d0, m, l, acc);
  __syncthreads();
  // Across the block's warps; S == 1: the result, else the block's partial goes to the block that
  // merges output e (block w = e / per of the head split), into its po_s[z][e - w * per], with
  // m and l to all S of them. A quantized output needs whole heads in a block: S divides Gb then
  // (launch_cluster_attention's condition), and per is a multiple of 128.
  const int per = (Gb * kGqaHd + cp.S - 1) / cp.S;
  // The block's merged outputs [e0, e1) of its heads, staged for quantize_heads (S == 1: po_s, unused
  // then; else acc_s, whose last reader was combine_warps, before the cluster barrier).
  float* oq = cp.S == 1 ? po_s : &acc_s[0][0][0];
  // Each warp quantizes whole heads of oq (head qrow + e0 / 128 + i of the token is tile i of oq).
  auto quantize_heads = [&](int e0, int e1) {
    __syncthreads();
    const int64_t k = int64_t(p.n_heads) * kGqaHd;
    const int64_t head0 = int64_t(qrow) - int64_t(t) * p.n_heads + e0 / kGqaHd;
    for (int i = warp; i < (e1 - e0) / kGqaHd; i += kCluWarps)
      quantize_tile(qo, reinterpret_cast<const float4*>(oq + i * kGqaHd)[lane], lane, t, head0 + i, k);
  };
  if (early_arrive) cluster_wait();
  for (int e = threadIdx.x; e < Gb * kGqaHd; e += blockDim.x) {
    const int h = e / kGqaHd, d = e % kGqaHd;
    float M, L, o;
    combine_warps(m_s, l_s, acc_s, h, d, M, L, o);
    if (cp.S == 1) {
      p.out[(qrow + h) * kGqaHd + d] = o / L;
      if (qo.codes) oq[e] = o / L;
    } else {
      const int w = e / per;
      cluster_peer(po_s, hs * cp.S + w)[z * per + e - w * per] = o;
      if (d == 0)
        for (int w2 = 0; w2 < cp.S; ++w2) {
          float* ml = cluster_peer(&ml_s[0][0], hs * cp.S + w2) + z * 2 * Gb;
          ml[h] = M;
          ml[Gb + h] = L;
        }
    }
  }
  if (cp.S == 1) {
    if (qo.codes) quantize_heads(0, Gb * kGqaHd);
    return;
  }
  // Block z merges outputs [z * per, (z + 1) * per) from the S partials, in the order 0 .. S-1.
  cluster_sync_all();  // the pushes above are visible (nothing remote is touched after this)
  const int e_end = min(Gb * kGqaHd, (z + 1) * per);
  for (int e = z * per + int(threadIdx.x); e < e_end; e += blockDim.x) {
    const int h = e / kGqaHd;
    float M = -INFINITY;
#pragma unroll
    for (int zz = 0; zz < kCluMaxS; ++zz)
      if (zz < cp.S) M = fmaxf(M, ml_s[zz][h]);
    float L = 0.0f, o = 0.0f;
#pragma unroll
    for (int zz = 0; zz < kCluMaxS; ++zz) {
      if (zz < cp.S) {
        const float f = ml_s[zz][h] == -INFINITY ? 0.0f : expf(ml_s[zz][h] - M);
        L += ml_s[zz][Gb + h] * f;
        o += po_s[zz * per + e - z * per] * f;
      }
    }
    p.out[(qrow + h) * kGqaHd + e % kGqaHd] = o / L;
    if (qo.codes) oq[e - z * per] = o / L;
  }
  if (qo.codes) quantize_heads(z * per, e_end);
}

// Launches `kernel` on `s` as clusters of `cluster_x` blocks along x (with the PDL attribute when
// enabled) and checks the launch.
template <typename... KArgs, typename... Args>
void launch_cluster(const char* op, void (*kernel)(KArgs...), dim3 grid, dim3 block, unsigned cluster_x,
                    cudaStream_t s, Args... args) {
  check(mx8::cuda::launch_ex(kernel, grid, block, 0, s, cluster_x, pdl_enabled(), args...), op);
}

// attention_cluster_kernel's knobs, read once (A/B measurements): MX8_CUDA_CLUSTER_ATTN=0 turns it
// off (the grouped kernel as before); MX8_CUDA_CLUSTER_ATTN_MAX_C caps the blocks of a cluster
// (default 8, the portable cluster size; up to 16, where the device schedules it);
// MX8_CUDA_CLUSTER_ATTN_GB forces query heads per block (1, 2 or 4, where it divides the group);
// MX8_CUDA_CLUSTER_ATTN_POS is the positions of block table capacity per split above 160 (default
// 32: one round of a block's streams); MX8_CUDA_CLUSTER_ATTN_VERBOSE prints the layouts chosen;
// MX8_CUDA_CLUSTER_ATTN_EARLY=0 loads the first K/V round after griddepcontrol.wait in the one-token
// fused path too (default: before it).
struct CluKnobs {
  bool on = true, early = true;
  int max_c = 8, gb = 0, pos = 32;
};
const CluKnobs& clu_knobs() {
  static const CluKnobs k = [] {
    CluKnobs r;
    auto num = [](const char* name, int def) {
      const char* e = std::getenv(name);
      if (!e || !*e) return def;
      char* end = nullptr;
      const long v = std::strtol(e, &end, 10);
      if (*end != '\0') throw Error(std::string(name) + "=" + e + ": not an integer");
      return int(v);
    };
    r.on = num("MX8_CUDA_CLUSTER_ATTN", 1) != 0;
    r.early = num("MX8_CUDA_CLUSTER_ATTN_EARLY", 1) != 0;
    r.max_c = std::max(1, std::min(kCluMaxS, num("MX8_CUDA_CLUSTER_ATTN_MAX_C", r.max_c)));
    r.gb = num("MX8_CUDA_CLUSTER_ATTN_GB", 0);
    r.pos = std::max(1, num("MX8_CUDA_CLUSTER_ATTN_POS", r.pos));
    return r;
  }();
  return k;
}
std::atomic<int> g_cluster_splits{0};  // tests: force the position splits (0: the heuristic)
std::atomic<int> g_cluster_gb{0};      // tests: force the query heads per block (0: the default)

// Clusters of more than 8 blocks (non-portable) for the kernel (F, gb): allowed and schedulable?
// Asked once per kernel.
template <KvFormat F, int Gb>
bool big_clusters_ok(int C) {
  static std::atomic<int> known[kCluMaxS + 1] = {};
  int v = known[C].load(std::memory_order_relaxed);
  if (v == 0) {
    auto* kern = attention_cluster_kernel<F, Gb>;
    bool ok = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
    if (ok) {
      cudaLaunchAttribute attrs[2];
      const cudaLaunchConfig_t cfg = mx8::cuda::launch_config(dim3(unsigned(C)), dim3(kCluWarps * 32), 0,
                                                              nullptr, unsigned(C), false, attrs);
      int n = 0;
      ok = cudaOccupancyMaxActiveClusters(&n, kern, &cfg) == cudaSuccess && n > 0;
      if (std::getenv("MX8_CUDA_CLUSTER_ATTN_VERBOSE"))
        std::fprintf(stderr, "attention_cluster_kernel: clusters of %d blocks: %d active at most\n", C, n);
    }
    cudaGetLastError();  // a refusal is an answer, not a sticky error
    v = ok ? 1 : 2;
    known[C].store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

template <int Gb>
bool big_clusters_ok_any(KvFormat f, int C) {
  switch (f) {
    case KvFormat::f32:
      return big_clusters_ok<KvFormat::f32, Gb>(C);
    case KvFormat::bf16:
      return big_clusters_ok<KvFormat::bf16, Gb>(C);
    default:
      return big_clusters_ok<KvFormat::fp8, Gb>(C);
  }
}

template <KvFormat F>
void launch_cluster_attention_f(int gb, const uint8_t* kp, const uint8_t* vp, const KvGeom& g,
                                const AttnParams& p, int n_kv, int n_tokens, uint32_t* err, const NewKv& nk,
                                const CluParams& cp, const ActQuantOut& qo, cudaStream_t s) {
  const unsigned C = unsigned(cp.n_hs * cp.S);
  const dim3 grid(unsigned(n_kv) * C, unsigned(n_tokens)), block(kCluWarps * 32);
  switch (gb) {
    case 1:
      launch_cluster("attention_cluster_kernel", attention_cluster_kernel<F, 1>, grid, block, C, s, kp, vp, g,
                     p, err, nk, cp, qo);
      break;
    case 2:
      launch_cluster("attention_cluster_kernel", attention_cluster_kernel<F, 2>, grid, block, C, s, kp, vp, g,
                     p, err, nk, cp, qo);
      break;
    default:
      launch_cluster("attention_cluster_kernel", attention_cluster_kernel<F, 4>, grid, block, C, s, kp, vp, g,
                     p, err, nk, cp, qo);
      break;
  }
}

}  // namespace

CluPlan cluster_plan(const CudaKvCache& c, const AttentionArgs& a) {
  CluPlan pl;
  const CluKnobs& k = clu_knobs();
  const int G = a.n_heads / a.n_kv_heads;
  if (!k.on || c.desc().head_dim != kGqaHd || c.page_bytes() % 16 != 0 ||
      reinterpret_cast<uintptr_t>(c.pool(a.layer, 0)) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(c.pool(a.layer, 1)) % 16 != 0 || reinterpret_cast<uintptr_t>(a.q) % 16 != 0)
    return pl;
  // One query head per block where the group allows (G <= 8): measured fastest (H200, batch-1
  // decode at ~130 positions, tok/s with Gb 1 / 2 / 4: 318.8 / 310.8 / 301.8, the grouped kernel
  // 305): the per-thread softmax and merge work and the registers (95 / 128 / 200) scale with Gb,
  // and the repeated K/V reads of the sibling blocks are L2 hits. That holds while the launch's blocks
  // fit one per SM; a batched decode step (a token of each of many sequences) takes more heads per block
  // instead, so that its blocks run in one wave (H200, Llama-3-8B FP8, ~100 positions, same binary: batch
  // 16 4153 / 4173 -> 4431 / 4448 tok/s with 4 heads per block, 4300 / 4291 with 2, attention 17.7 ->
  // 11.1 us a layer; batch 4 stays at 1 head: 1292 / 1297 against 1231 / 1233 with 4; `.carry/lead/k4.sh`).
  int gb = G <= 8 ? 1 : G % 2 == 0 && G <= 16 ? 2 : 4;
  while (gb < 4 && G % (2 * gb) == 0 &&
         int64_t(a.n_kv_heads) * (G / gb) * std::max(1, a.n_tokens) > mx8::cuda::num_sms())
    gb *= 2;
  const int want =
      g_cluster_gb.load(std::memory_order_relaxed) ? g_cluster_gb.load(std::memory_order_relaxed) : k.gb;
  if ((want == 1 || want == 2 || want == 4) && G % want == 0 && G / want <= 8) gb = want;
  if (G % gb != 0) return pl;
  const int n_hs = G / gb;
  if (n_hs > 8) return pl;
  const int64_t cap = int64_t(a.max_pages_per_seq) * c.desc().page_size;
  // Up to kOneSplitCap positions of capacity a block's warps take every position themselves (the
  // first two rounds loaded before the prologue, the rest one round trip each), which costs less than
  // merging the splits through distributed shared memory and a second cluster barrier (H200, Llama-3-8B
  // decode FP8, same call: capacity 160 at 8..136 positions 394.0 / 394.1 tok/s with 2 splits, 399.4 /
  // 398.8 with 1; capacity 288 at 136..264 positions 387.4 / 385.9 with 2, 379.8 / 381.1 with 1).
  constexpr int64_t kOneSplitCap = 160;
  int64_t S = cap <= kOneSplitCap ? 1 : (cap + k.pos - 1) / k.pos;
  const int64_t blocks = int64_t(a.n_kv_heads) * n_hs * std::max(1, a.n_tokens);
  S = std::min<int64_t>(S, std::max<int64_t>(1, 2 * mx8::cuda::num_sms() / blocks));
  S = std::min<int64_t>(S, std::max(1, k.max_c / n_hs));
  if (const int forced = g_cluster_splits.load(std::memory_order_relaxed); forced > 0) S = forced;
  S = std::max<int64_t>(1, std::min<int64_t>(S, kCluMaxS / n_hs));
  while (n_hs * S > 8) {
    const int C = int(n_hs * S);
    const bool ok = gb == 4   ? big_clusters_ok_any<4>(c.desc().format, C)
                    : gb == 2 ? big_clusters_ok_any<2>(c.desc().format, C)
                              : big_clusters_ok_any<1>(c.desc().format, C);
    if (ok) break;
    --S;
  }
  pl.cp = CluParams{G, n_hs, int(S), k.early};
  pl.gb = gb;
  if (std::getenv("MX8_CUDA_CLUSTER_ATTN_VERBOSE")) {
    static std::atomic<int> printed{0};
    if (printed.fetch_add(1) < 4)
      std::fprintf(stderr,
                   "attention_cluster_kernel: capacity %lld, %d tokens, group %d: %d heads/block, %d x %d "
                   "blocks per cluster\n",
                   (long long)cap, a.n_tokens, G, gb, n_hs, int(S));
  }
  return pl;
}

void launch_cluster_attention(KvFormat f, const CluPlan& pl, const uint8_t* kp, const uint8_t* vp,
                              const KvGeom& g, const AttnParams& p, int n_kv, int n_tokens, uint32_t* err,
                              const NewKv& nk, const ActQuantOut& qo, cudaStream_t s) {
  if (qo.codes && pl.gb % pl.cp.S != 0)
    throw Error("cuda backend: a quantized attention output with " + std::to_string(pl.cp.S) +
                " position splits of " + std::to_string(pl.gb) + " heads per block (not whole heads)");
  switch (f) {
    case KvFormat::f32:
      launch_cluster_attention_f<KvFormat::f32>(pl.gb, kp, vp, g, p, n_kv, n_tokens, err, nk, pl.cp, qo, s);
      break;
    case KvFormat::bf16:
      launch_cluster_attention_f<KvFormat::bf16>(pl.gb, kp, vp, g, p, n_kv, n_tokens, err, nk, pl.cp, qo, s);
      break;
    case KvFormat::fp8:
      launch_cluster_attention_f<KvFormat::fp8>(pl.gb, kp, vp, g, p, n_kv, n_tokens, err, nk, pl.cp, qo, s);
      break;
  }
  check_launch("attention");
}

void set_cluster_attention_splits(int s) {
  g_cluster_splits.store(s, std::memory_order_relaxed);
}
void set_cluster_attention_heads_per_block(int gb) {
  g_cluster_gb.store(gb, std::memory_order_relaxed);
}

}  // namespace mx8::backend::cuda_impl
