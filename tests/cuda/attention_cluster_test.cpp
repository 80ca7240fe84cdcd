// The CUDA backend's cluster-split attention (attention_cluster_kernel in attention_cluster.cu: one
// (token, kv head) spread over a thread block cluster, positions round-robin over its blocks,
// partial softmaxes merged through distributed shared memory) against the CPU backend, over the
// launch shapes it takes: lengths 1, 2, 31, 32, 33, 255, 256, 257 (one and two rounds of the 32
// streams of a block and of all S blocks, blocks without positions), ragged batches, bf16 / fp8 /
// f32 KV, GQA groups 1, 2, 4, 8 (4, 2 and 1 query heads per block; 8 = two head splits per
// cluster), forced split counts including ones that do not divide the outputs, and the fused
// rope + kv_write + attention launch. Skips without a GPU.
//
// Tolerance: the output is a convex combination of V rows; scores are dot products summed in other
// orders and the softmax is online, merged at three levels (warp, block, cluster) with rescaled
// partial sums, which moves results by a few u (2^-24) of max|V| - the bound of the other attention
// tests, |gpu - cpu| <= 2e-5 max|V|, holds with a wide margin. V is N(0, 1), so max|V| < 6 with
// overwhelming probability (fp8 keeps that). A position missed or counted twice, or a wrong merge
// weight, moves outputs by ~1/len of max|V| (>= 4e-3 at 257 positions): 30x the tolerance.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/backend_cpu.h"
#include "backend/cuda/backend_cuda.cuh"
#include "cuda/backend_pair_test.h"
#include "mx8/backend/backend.h"

namespace mx8::backend {
namespace {

constexpr double kTol = 2e-5 * 6;  // 2e-5 max|V|, max|V| < 6 (see the top)

class ClusterAttention : public test::BackendPair {
 protected:
  void TearDown() override {
    cuda_impl::set_cluster_attention_splits(0);
    cuda_impl::set_cluster_attention_heads_per_block(0);
    BackendPair::TearDown();
  }

  // A cache of `n_seq` sequences of up to max_len positions on both backends (pages shuffled, as
  // a KV manager hands them out after churn), every position written with N(0, 1) K and V.
  struct Caches {
    std::unique_ptr<KvCache> c, g;
    std::vector<int32_t> tables;
    int max_pages = 0;
  };
  Caches make_caches(KvFormat f, int n_kv, int ps, int n_seq, int max_len, int spare_pages = 1) {
    Caches cs;
    cs.max_pages = (max_len + ps - 1) / ps + spare_pages;  // capacity above the longest length
    const int n_pages = n_seq * cs.max_pages;
    const KvCacheDesc d{f, 1, n_kv, 128, ps, n_pages};
    cs.c = cpu->create_kv_cache(d);
    cs.g = gpu->create_kv_cache(d);
    std::vector<int32_t> perm(static_cast<size_t>(n_pages));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    cs.tables.assign(size_t(n_pages), 0);
    for (size_t i = 0; i < perm.size(); ++i) cs.tables[i] = perm[i];
    std::vector<int32_t> slots;
    for (int s = 0; s < n_seq; ++s)
      for (int p = 0; p < max_len; ++p)
        slots.push_back(cs.tables[size_t(s * cs.max_pages + p / ps)] * ps + p % ps);
    const int64_t T = int64_t(slots.size());
    auto k = normal(size_t(T) * size_t(n_kv * 128)), v = normal(size_t(T) * size_t(n_kv * 128));
    Pair pk = put(k), pv = put(v), psl = put(slots);
    cpu->kv_write(*cs.c, 0, (const float*)pk.c, (const float*)pv.c, (const int32_t*)psl.c, T);
    gpu->kv_write(*cs.g, 0, (const float*)pk.g, (const float*)pv.g, (const int32_t*)psl.g, T);
    return cs;
  }

  // Attention of tokens (seq[i], kv_len[i]) on both backends; outputs compared within kTol.
  void check(Caches& cs, int n_kv, int group, const std::vector<int32_t>& seq,
             const std::vector<int32_t>& kv_len, const std::string& what, int window = 0) {
    const int n_heads = n_kv * group, nq = int(seq.size());
    auto q = normal(size_t(nq) * size_t(n_heads * 128));
    std::vector<float> poison(q.size(), -777.0f);
    Pair pq = put(q), pseq = put(seq), plen = put(kv_len), pbt = put(cs.tables), pout = put(poison);
    AttentionArgs a;
    a.n_tokens = nq;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv;
    a.head_dim = 128;
    a.scale = 1.0f / std::sqrt(128.0f);
    a.layer = 0;
    a.max_pages_per_seq = cs.max_pages;
    a.window = window;
    AttentionArgs ac = a, ag = a;
    ac.q = (const float*)pq.c, ac.out = (float*)pout.c, ac.seq = (const int32_t*)pseq.c;
    ac.kv_len = (const int32_t*)plen.c, ac.block_tables = (const int32_t*)pbt.c;
    ag.q = (const float*)pq.g, ag.out = (float*)pout.g, ag.seq = (const int32_t*)pseq.g;
    ag.kv_len = (const int32_t*)plen.g, ag.block_tables = (const int32_t*)pbt.g;
    cpu->attention(*cs.c, ac);
    gpu->attention(*cs.g, ag);
    auto r_c = get_cpu<float>(pout, q.size()), r_g = get_gpu<float>(pout, q.size());
    for (size_t i = 0; i < r_c.size(); ++i) {
      ASSERT_FALSE(std::isnan(r_g[i])) << what << ": output " << i;
      ASSERT_NEAR(r_g[i], r_c[i], kTol)
          << what << ": output " << i << " (token " << i / size_t(n_heads * 128) << ")";
    }
  }
};

const std::vector<int32_t> kLengths = {1, 2, 31, 32, 33, 255, 256, 257};

// Batch-1 decode shapes (one token per call, the block table's capacity just above the length, as
// the engine's), every length, every group, bf16 and fp8 KV; then the same lengths as one ragged
// batch of 8 tokens of 8 sequences.
TEST_F(ClusterAttention, DecodeLengthsAndGroupsMatchCpu) {
  SCOPED_TRACE(trace());
  const int n_kv = 2;
  for (KvFormat f : {KvFormat::bf16, KvFormat::fp8}) {
    auto cs = make_caches(f, n_kv, 16, int(kLengths.size()), 257);
    for (int group : {1, 2, 4, 8}) {
      const std::string fg = std::string(kv_format_name(f)) + " group " + std::to_string(group);
      for (size_t s = 0; s < kLengths.size(); ++s)
        check(cs, n_kv, group, {int32_t(s)}, {kLengths[s]}, fg + " length " + std::to_string(kLengths[s]));
      std::vector<int32_t> seq(kLengths.size());
      std::iota(seq.begin(), seq.end(), 0);
      check(cs, n_kv, group, seq, kLengths, fg + " ragged batch");
    }
  }
}

// f32 KV, and page sizes that do not divide the 32-position rounds (bf16: fp8 pages of 5 or 7
// slots are not 16-byte multiples, which the cluster kernel requires).
// Sliding windows (Mistral): each token attends to its last `window` positions; 1 (itself only),
// 31 and 33 (around one round of a block's streams), 100 (streams of some blocks all outside).
TEST_F(ClusterAttention, SlidingWindowsMatchCpu) {
  SCOPED_TRACE(trace());
  const int n_kv = 2;
  for (KvFormat f : {KvFormat::bf16, KvFormat::fp8}) {
    auto cs = make_caches(f, n_kv, 16, int(kLengths.size()), 257);
    for (int window : {1, 31, 33, 100})
      for (size_t s = 0; s < kLengths.size(); ++s) {
        check(cs, n_kv, 4, {int32_t(s)}, {kLengths[s]},
              std::string(kv_format_name(f)) + " window " + std::to_string(window) + " length " +
                  std::to_string(kLengths[s]),
              window);
        if (HasFatalFailure()) return;
      }
  }
}

TEST_F(ClusterAttention, F32AndOddPagesMatchCpu) {
  SCOPED_TRACE(trace());
  for (int ps : {16, 5, 7}) {
    for (KvFormat f : {KvFormat::f32, KvFormat::bf16}) {
      auto cs = make_caches(f, 3, ps, 2, 257, 2);
      for (int group : {2, 4}) {
        const std::string w = std::string(kv_format_name(f)) + " page " + std::to_string(ps) + " group " +
                              std::to_string(group);
        check(cs, 3, group, {0}, {257}, w + " length 257");
        check(cs, 3, group, {1, 0, 1}, {33, 1, 256}, w + " ragged");
      }
    }
  }
}

// Forced layouts: 1, 2 and 4 query heads per block (1 is the default), position splits 1 (one
// block per head split), splits that do not divide the 128 * Gb outputs (3, 5, 7), 8 and 16
// (clusters over 8 blocks where the device schedules them; else fewer splits).
TEST_F(ClusterAttention, ForcedLayoutsMatchCpu) {
  SCOPED_TRACE(trace());
  const int n_kv = 2;
  auto cs = make_caches(KvFormat::bf16, n_kv, 16, int(kLengths.size()), 257);
  std::vector<int32_t> seq(kLengths.size());
  std::iota(seq.begin(), seq.end(), 0);
  for (int gb : {1, 2, 4}) {
    cuda_impl::set_cluster_attention_heads_per_block(gb);
    for (int S : {1, 2, 3, 5, 7, 8, 16}) {
      cuda_impl::set_cluster_attention_splits(S);
      for (int group : {1, 4, 8}) {
        const std::string w = "heads/block " + std::to_string(gb) + " splits " + std::to_string(S) +
                              " group " + std::to_string(group);
        check(cs, n_kv, group, {5}, {256}, w + " length 256");
        check(cs, n_kv, group, seq, kLengths, w + " ragged batch");
      }
    }
  }
}

// rope_kv_write_attention at one token (the cluster kernel with the rope + kv_write prologue), with
// 1, 2 and 4 query heads per block, against the GPU's own composed rope_kv_write + attention, bit
// for bit on q, k, the output and every cache byte (same rope_pair / write_head, same kernel and
// split layout on both sides), and its output against the CPU's attention over the same cache
// bytes and rotated q (kTol). The capacity takes several position splits by default; forced to one
// split (the default up to 160 positions of capacity) a warp takes up to 9 rounds, so at length 257
// the new token's row is met in a round loaded after the prologue, not in a preloaded one.
TEST_F(ClusterAttention, FusedRopeKvWriteMatchesComposedAndCpu) {
  SCOPED_TRACE(trace());
  const int n_kv = 2, ps = 16, pages = 20;  // capacity 320 positions
  for (int splits : {0, 1})
    for (int gb : {1, 2, 4}) {
      cuda_impl::set_cluster_attention_splits(splits);
      cuda_impl::set_cluster_attention_heads_per_block(gb);
      for (KvFormat f : {KvFormat::bf16, KvFormat::fp8}) {
        for (int group : {1, 2, 4, 8}) {
          for (int32_t len : kLengths) {
            if (gb != 1 && len != 1 && len != 33 && len != 257) continue;  // the default (gb 1) takes all
            const std::string what = std::string(kv_format_name(f)) + " splits " + std::to_string(splits) +
                                     " heads/block " + std::to_string(gb) + " group " +
                                     std::to_string(group) + " length " + std::to_string(len);
            const int n_heads = n_kv * group, history = len - 1;
            const KvCacheDesc d{f, 1, n_kv, 128, ps, pages};
            auto fused = gpu->create_kv_cache(d), composed = gpu->create_kv_cache(d);
            std::vector<int32_t> table(static_cast<size_t>(pages));
            std::iota(table.begin(), table.end(), 0);
            std::shuffle(table.begin(), table.end(), rng);
            auto slot_of = [&](int p) { return table[size_t(p / ps)] * ps + p % ps; };
            if (history > 0) {
              std::vector<int32_t> hs;
              for (int p = 0; p < history; ++p) hs.push_back(slot_of(p));
              auto hk = normal(size_t(history * n_kv * 128)), hv = normal(size_t(history * n_kv * 128));
              Pair phk = put(hk), phv = put(hv), phs = put(hs);
              for (auto* kv : {fused.get(), composed.get()})
                gpu->kv_write(*kv, 0, (const float*)phk.g, (const float*)phv.g, (const int32_t*)phs.g,
                              history);
            }
            std::vector<float> inv(64);
            for (size_t j = 0; j < inv.size(); ++j) inv[j] = std::pow(500000.0f, -2.0f * float(j) / 128.0f);
            Pair pinv = put(inv);
            const RopeArgs r{RopeStyle::half, 128, 128, (const float*)pinv.g};
            const std::vector<int32_t> vpos{history}, vslot{slot_of(history)}, vseq{0}, vlen{len};
            const auto q = normal(size_t(n_heads * 128)), k = normal(size_t(n_kv * 128)),
                       v = normal(size_t(n_kv * 128));
            std::vector<float> poison(q.size(), -777.0f);
            Pair pq1 = put(q), pq2 = put(q), pk1 = put(k), pk2 = put(k), pv = put(v), ppos = put(vpos),
                 psl = put(vslot), pseq = put(vseq), plen = put(vlen), pbt = put(table), po1 = put(poison),
                 po2 = put(poison);
            AttentionArgs a = gpu_decode_args(n_heads, n_kv, 128, 0, pseq, plen, pbt, pages);
            run_fused_and_composed({*fused, *composed, pq1, pq2, pk1, pk2, pv, ppos, psl, po1, po2}, r, a);
            const auto q_rot = get_gpu<float>(pq1, q.size()), out = get_gpu<float>(po1, q.size());
            ASSERT_EQ(q_rot, get_gpu<float>(pq2, q.size())) << what;
            ASSERT_EQ(get_gpu<float>(pk1, k.size()), get_gpu<float>(pk2, k.size())) << what;
            ASSERT_EQ(out, get_gpu<float>(po2, q.size())) << what;
            std::vector<uint8_t> ba(d.total_bytes()), bb(d.total_bytes());
            gpu->download(ba.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*fused).base(), ba.size());
            gpu->download(bb.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*composed).base(), bb.size());
            ASSERT_TRUE(ba == bb) << what;

            // The CPU's attention over the fused op's cache bytes and rotated q.
            auto kv_c = cpu->create_kv_cache(d);
            std::copy(ba.begin(), ba.end(), dynamic_cast<cpu_impl::CpuKvCache&>(*kv_c).page(0, 0, 0));
            Pair pqr = put(q_rot), pcout = put(poison);
            AttentionArgs ac = a;
            ac.q = (const float*)pqr.c, ac.out = (float*)pcout.c, ac.seq = (const int32_t*)pseq.c;
            ac.kv_len = (const int32_t*)plen.c, ac.block_tables = (const int32_t*)pbt.c;
            cpu->attention(*kv_c, ac);
            const auto ref = get_cpu<float>(pcout, q.size());
            for (size_t i = 0; i < ref.size(); ++i) {
              ASSERT_FALSE(std::isnan(out[i])) << what << ": output " << i;
              ASSERT_NEAR(out[i], ref[i], kTol) << what << ": output " << i;
            }
          }
        }
      }
    }
}

// rope_kv_write_attention for a batched decode step: one token of each of 6 sequences of different
// lengths (1 to 150: the cache's capacity of 160 positions takes one position split; the 2 KV heads
// of group 4 take clusters of 4 blocks), a.one_token_per_seq set. Each cluster stores its own
// token's K/V while the others attend; every byte must equal the composed ops' (rope_kv_write, then
// attention), as in the one-token test above. Without the hint the call composes (a chunk's tokens
// would read rows other clusters write); its bytes must match as well.
TEST_F(ClusterAttention, FusedRopeKvWriteOfOneTokenPerSequence) {
  SCOPED_TRACE(trace());
  const int n_kv = 2, group = 4, n_heads = n_kv * group, ps = 16, max_pages = 10;
  const std::vector<int32_t> lens = {1, 2, 17, 33, 100, 150};
  const int n_seq = int(lens.size()), pages = n_seq * max_pages;
  std::vector<float> inv(64);
  for (size_t j = 0; j < inv.size(); ++j) inv[j] = std::pow(500000.0f, -2.0f * float(j) / 128.0f);
  Pair pinv = put(inv);
  const RopeArgs r{RopeStyle::half, 128, 128, (const float*)pinv.g};
  for (KvFormat f : {KvFormat::bf16, KvFormat::fp8})
    for (const bool hint : {true, false}) {
      const std::string what =
          std::string(kv_format_name(f)) + (hint ? " one token per sequence" : " no hint");
      const KvCacheDesc d{f, 1, n_kv, 128, ps, pages};
      auto fused = gpu->create_kv_cache(d), composed = gpu->create_kv_cache(d);
      std::vector<int32_t> table(static_cast<size_t>(pages));
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);
      auto slot_of = [&](int s, int p) { return table[size_t(s * max_pages + p / ps)] * ps + p % ps; };
      std::vector<int32_t> hs, pos, slot, seq;
      for (int s = 0; s < n_seq; ++s) {
        for (int p = 0; p < lens[size_t(s)] - 1; ++p) hs.push_back(slot_of(s, p));
        pos.push_back(lens[size_t(s)] - 1);
        slot.push_back(slot_of(s, lens[size_t(s)] - 1));
        seq.push_back(s);
      }
      const int64_t history = int64_t(hs.size());
      auto hk = normal(size_t(history * n_kv * 128)), hv = normal(size_t(history * n_kv * 128));
      Pair phk = put(hk), phv = put(hv), phs = put(hs);
      for (auto* kv : {fused.get(), composed.get()})
        gpu->kv_write(*kv, 0, (const float*)phk.g, (const float*)phv.g, (const int32_t*)phs.g, history);
      const auto q = normal(size_t(n_seq * n_heads * 128)), k = normal(size_t(n_seq * n_kv * 128)),
                 v = normal(size_t(n_seq * n_kv * 128));
      std::vector<float> poison(q.size(), -777.0f);
      Pair pq1 = put(q), pq2 = put(q), pk1 = put(k), pk2 = put(k), pv = put(v), ppos = put(pos),
           psl = put(slot), pseq = put(seq), plen = put(lens), pbt = put(table), po1 = put(poison),
           po2 = put(poison);
      AttentionArgs a = gpu_decode_args(n_heads, n_kv, 128, 0, pseq, plen, pbt, max_pages);
      a.n_tokens = n_seq;
      a.one_token_per_seq = hint;
      run_fused_and_composed({*fused, *composed, pq1, pq2, pk1, pk2, pv, ppos, psl, po1, po2}, r, a);
      ASSERT_EQ(get_gpu<float>(pq1, q.size()), get_gpu<float>(pq2, q.size())) << what;
      ASSERT_EQ(get_gpu<float>(pk1, k.size()), get_gpu<float>(pk2, k.size())) << what;
      const auto out = get_gpu<float>(po1, q.size());
      for (float o : out) ASSERT_FALSE(std::isnan(o) || o == -777.0f) << what;
      ASSERT_EQ(out, get_gpu<float>(po2, q.size())) << what;
      std::vector<uint8_t> ba(d.total_bytes()), bb(d.total_bytes());
      gpu->download(ba.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*fused).base(), ba.size());
      gpu->download(bb.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*composed).base(), bb.size());
      ASSERT_TRUE(ba == bb) << what;
    }
}

}  // namespace
}  // namespace mx8::backend
