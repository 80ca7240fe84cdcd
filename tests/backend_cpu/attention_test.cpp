// CPU attention over query tiles (src/backend/cpu/attention_tile.h), through the backend interface:
// the same bits whatever the tiling, the threads or the ISA, and within f32 rounding of a
// double-precision computation. Page sizes 16 and 24 take the vector kernels' page-contiguous loads,
// 4 the scalar loads; heads of 72 end in an 8-wide part, 100 in a scalar one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backend/cpu/attention_tile.h"
#include "backend/cpu/backend_cpu.h"
#include "backend_cpu/isa_list.h"
#include "float_vectors.h"
#include "mx8/backend/backend.h"
#include "mx8/format/common.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::backend {
namespace {

using mx8::test::randn;
using mx8::test::same_bits;

struct Case {
  KvFormat fmt;
  int hd, group, page_size, window, cached;
};

// One sequence: `cached` positions written earlier, then a prompt chunk of `chunk` tokens (their K/V
// written, then their attention), pages in a shuffled order.
struct ChunkAttention {
  static constexpr int kKvHeads = 2, kChunk = 40;
  Case c;
  int heads, len, pages;
  std::vector<int32_t> table;
  std::vector<float> k, v, q;

  explicit ChunkAttention(const Case& c_) : c(c_) {
    heads = c.group * kKvHeads;
    len = c.cached + kChunk;
    pages = (len + c.page_size - 1) / c.page_size + 3;
    for (int p = 0; p < pages; ++p) table.push_back(p);
    std::shuffle(table.begin(), table.end(), std::mt19937(c.page_size));
    k = randn(size_t(len) * kKvHeads * c.hd, 1);
    v = randn(size_t(len) * kKvHeads * c.hd, 2);
    q = randn(size_t(kChunk) * heads * c.hd, 3, 0.3f);
  }
  std::unique_ptr<KvCache> fill(Backend& be) const {
    auto cache = be.create_kv_cache({c.fmt, 1, kKvHeads, c.hd, c.page_size, pages});
    std::vector<int32_t> slots;
    for (int p = 0; p < len; ++p) slots.push_back(table[p / c.page_size] * c.page_size + p % c.page_size);
    be.kv_write(*cache, 0, k.data(), v.data(), slots.data(), len);
    return cache;
  }
  // The chunk's attention, `per_call` tokens per backend call.
  std::vector<float> run(Backend& be, KvCache& cache, int per_call) const {
    std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
    for (int t0 = 0; t0 < kChunk; t0 += per_call) {
      const int n = std::min(per_call, kChunk - t0);
      std::vector<int32_t> seq(n, 0), kv_len(n);
      for (int t = 0; t < n; ++t) kv_len[t] = c.cached + t0 + t + 1;
      AttentionArgs a;
      a.q = q.data() + size_t(t0) * heads * c.hd;
      a.out = out.data() + size_t(t0) * heads * c.hd;
      a.n_tokens = n;
      a.n_heads = heads;
      a.n_kv_heads = kKvHeads;
      a.head_dim = c.hd;
      a.scale = 1 / std::sqrt(float(c.hd));
      a.layer = 0;
      a.seq = seq.data();
      a.kv_len = kv_len.data();
      a.block_tables = table.data();
      a.max_pages_per_seq = pages;
      a.window = c.window;
      be.attention(cache, a);
    }
    return out;
  }
  // What the cache holds for a written row.
  std::vector<float> stored(std::vector<float> x) const {
    for (size_t h = 0; h < x.size() / c.hd; ++h) {
      float* row = &x[h * c.hd];
      if (c.fmt == KvFormat::bf16)
        for (int i = 0; i < c.hd; ++i) row[i] = format::bf16_to_f32(format::f32_to_bf16_rne(row[i]));
      if (c.fmt == KvFormat::fp8) {
        format::QuantSpec spec;  // e4m3, ceil, 1x128, ue8m0: the KV cache's recipe
        std::vector<uint8_t> codes(c.hd), scales((c.hd + 127) / 128);
        format::quantize_ref(format::SourceType::f32, row, 1, c.hd, spec, codes.data(), scales.data());
        format::dequantize_ref(codes.data(), scales.data(), 1, c.hd, spec, row);
      }
    }
    return x;
  }
};

// Every head size and group size of one format; the page sizes, windows and cached lengths in turn
// across them (and across formats: `i` goes on from one format to the next). 600 cached positions put
// the chunk's rows over two segments of 512 (attention_tile.h), and the window of 600 starts each row
// in a different segment from where it ends.
std::vector<Case> cases(KvFormat fmt) {
  constexpr int kPageSizes[] = {16, 24, 4}, kWindows[] = {0, 37, 600, 5, 0}, kCached[] = {45, 600};
  std::vector<Case> out;
  int i = 12 * int(fmt == KvFormat::bf16) + 24 * int(fmt == KvFormat::fp8);
  for (int hd : {128, 72, 100, 256})
    for (int group : {1, 4, 7}) {
      out.push_back({fmt, hd, group, kPageSizes[i % 3], kWindows[i % 5], kCached[(i / 2) % 2]});
      ++i;
    }
  return out;
}

// The ISAs whose attention kernels differ (AVX-512 machines run AVX2's).
std::vector<cpu::Isa> isas_with_own_kernels() {
  std::vector<cpu::Isa> out;
  std::vector<const cpu_impl::TileKernels*> seen;
  for (cpu::Isa isa : cpu::testing::runnable_isas()) {
    cpu::ScopedIsa forced(isa);
    const cpu_impl::TileKernels* k = &cpu_impl::tile_kernels();
    if (std::find(seen.begin(), seen.end(), k) == seen.end()) seen.push_back(k), out.push_back(isa);
  }
  return out;
}

// One format a test: the suites are the longest of the CPU kernels' under the sanitizers and qemu,
// and ctest runs the three side by side.
class CpuAttention : public testing::TestWithParam<KvFormat> {};

std::string name(const Case& c) {
  return std::string(kv_format_name(c.fmt)) + " head_dim " + std::to_string(c.hd) + " group " +
         std::to_string(c.group) + " page " + std::to_string(c.page_size) + " window " +
         std::to_string(c.window) + " cached " + std::to_string(c.cached);
}

// The ISA, the tiling (a chunk in one call, up to 16 tokens a job, against one token per call), the
// jobs (a token per call splits its positions over jobs by segment, and with two threads its kv heads
// too; a chunk walks the segments in one job) and the thread count change no bit of the outputs. The
// tilings are tried on the last ISA only (the vector kernels where there are any): the driver that
// tiles is the same for all, and the scalar kernels, run five times, made this the slowest test of
// CI's sanitizer and qemu runs.
TEST_P(CpuAttention, SameBitsWhateverTheTilingThreadsAndIsa) {
  auto one_thread = make_cpu_backend(1), two_threads = make_cpu_backend(2);
  const std::vector<cpu::Isa> isas = isas_with_own_kernels();
  for (const Case& c : cases(GetParam())) {
    SCOPED_TRACE(name(c));
    ChunkAttention s(c);
    std::vector<float> reference;
    for (cpu::Isa isa : isas) {
      SCOPED_TRACE(cpu::isa_name(isa));
      cpu::ScopedIsa forced(isa);
      auto cache = s.fill(*two_threads);
      const std::vector<float> whole = s.run(*two_threads, *cache, ChunkAttention::kChunk);
      if (reference.empty()) reference = whole;  // the first ISA is the scalar one
      EXPECT_TRUE(same_bits(whole, reference));
      if (isa != isas.back()) continue;
      EXPECT_TRUE(same_bits(s.run(*two_threads, *cache, 1), whole));
      EXPECT_TRUE(same_bits(s.run(*two_threads, *cache, 3), whole));  // group 1: rows at a causal edge
      EXPECT_TRUE(same_bits(s.run(*two_threads, *cache, 7), whole));
      auto cache1 = s.fill(*one_thread);
      EXPECT_TRUE(same_bits(s.run(*one_thread, *cache1, ChunkAttention::kChunk), whole));
      EXPECT_TRUE(same_bits(s.run(*one_thread, *cache1, 1), whole));
    }
  }
}

// Against double precision on what the cache holds.
TEST_P(CpuAttention, MatchesDoublePrecision) {
  auto be = make_cpu_backend(2);
  for (const Case& c : cases(GetParam())) {
    SCOPED_TRACE(name(c));
    ChunkAttention s(c);
    auto cache = s.fill(*be);
    const std::vector<float> out = s.run(*be, *cache, ChunkAttention::kChunk);
    const std::vector<float> K = s.stored(s.k), V = s.stored(s.v);
    double worst = 0;
    for (int t = 0; t < ChunkAttention::kChunk; ++t)
      for (int h = 0; h < s.heads; ++h) {
        const int kvh = h / c.group, len = c.cached + t + 1;
        const int first = c.window > 0 ? std::max(0, len - c.window) : 0;
        const float* q = &s.q[(size_t(t) * s.heads + h) * c.hd];
        std::vector<double> w(len);
        double mx = -1e300, z = 0;
        for (int p = first; p < len; ++p) {
          double dot = 0;
          for (int i = 0; i < c.hd; ++i)
            dot += double(q[i]) * K[(size_t(p) * ChunkAttention::kKvHeads + kvh) * c.hd + i];
          w[p] = dot / std::sqrt(double(c.hd));
          mx = std::max(mx, w[p]);
        }
        for (int p = first; p < len; ++p) z += (w[p] = std::exp(w[p] - mx));
        for (int i = 0; i < c.hd; ++i) {
          double o = 0;
          for (int p = first; p < len; ++p)
            o += w[p] / z * V[(size_t(p) * ChunkAttention::kKvHeads + kvh) * c.hd + i];
          worst = std::max(worst, std::abs(out[(size_t(t) * s.heads + h) * c.hd + i] - o));
        }
      }
    // |o| < ~4 (a weighted mean of N(0, 1) values); f32 scores (256-term dots of |q.k| ~ 5), sums of up
    // to 512 weighted rows per segment and a merge: ~700 roundings at 2^-24 on a path, whose errors of
    // independent sign grow as its square root, sqrt(700) * 2^-24 * 4 ~ 6e-6 (measured worst: 4e-7).
    // 5e-5 is eight times that, and still fails on a dropped position (a 1/640 weight of an N(0, 1)
    // value, ~2e-3), a wrong scale or a wrong merge.
    EXPECT_LT(worst, 5e-5);
  }
}

// A NaN in one query row makes that row's outputs NaN and no other row's.
TEST_P(CpuAttention, NanStaysInItsRow) {
  auto be = make_cpu_backend(2);
  ChunkAttention s({GetParam(), 128, 4, 16, 0, 600});
  s.q[(size_t(5) * s.heads + 2) * 128 + 17] = std::numeric_limits<float>::quiet_NaN();  // token 5, head 2
  auto cache = s.fill(*be);
  const std::vector<float> out = s.run(*be, *cache, ChunkAttention::kChunk);
  for (int t = 0; t < ChunkAttention::kChunk; ++t)
    for (int h = 0; h < s.heads; ++h) {
      const float o = out[(size_t(t) * s.heads + h) * 128 + 3];
      EXPECT_EQ(std::isnan(o), t == 5 && h == 2) << "token " << t << " head " << h;
    }
}

// fp8 rows outside the vector kernels' integer shortcut give the scalar kernels' results: NaN codes
// (which the shortcut reads as +-480 and the kernels then find and set to NaN in what they made) and
// scales past 2^7 (which take the exact decode); a NaN stays where it is, in the rows that see it. The
// writers never store a NaN code under a finite scale (a NaN or infinity makes the block's scale NaN),
// so the test writes those codes into the cache's pages itself.
TEST(CpuAttentionFp8, NanCodesAndLargeScalesDecodeAsTheScalarKernels) {
  auto be = make_cpu_backend(2);
  for (int hd : {80, 96, 128, 256}) {  // 80 and 96: the kernels' row-by-row and 32-byte NaN scans
    SCOPED_TRACE("head_dim " + std::to_string(hd));
    ChunkAttention s({KvFormat::fp8, hd, 4, 16, 37, 600});
    const size_t row = size_t(ChunkAttention::kKvHeads) * hd;  // one position's K or V, both kv heads
    for (int p = 3; p < s.len; p += 17)                        // amax ~4e5: UE8M0 scales of 2^10 and more
      for (size_t i = 0; i < row; ++i) s.k[p * row + i] *= 1e5f, s.v[p * row + i] *= 1e5f;
    // The code of kv head `kvh`, dimension `d` at position p in pool kv (0: K, 1: V).
    auto code = [&](KvCache& cache, int kv, int p, int kvh, int d) -> uint8_t& {
      auto& c = dynamic_cast<cpu_impl::CpuKvCache&>(cache);
      const int ps = s.c.page_size;
      return c.page(0, kv, s.table[p / ps])[(size_t(kvh) * ps + p % ps) * hd + d];
    };
    std::vector<float> reference;
    for (cpu::Isa isa : isas_with_own_kernels()) {
      SCOPED_TRACE(cpu::isa_name(isa));
      cpu::ScopedIsa forced(isa);
      auto cache = s.fill(*be);
      code(*cache, 0, 610, 1, 7) = 0x7F;                  // K, kv head 1: seen by tokens 10..39 (window 37)
      code(*cache, 1, 620, 0, 5) = 0xFF;                  // V, kv head 0: tokens 20..39, dimension 5
      for (int per_call : {ChunkAttention::kChunk, 1}) {  // a chunk, and decode steps (V read from the cache)
        SCOPED_TRACE(std::to_string(per_call) + " token(s) per call");
        const std::vector<float> out = s.run(*be, *cache, per_call);
        if (reference.empty()) {
          reference = out;
          const size_t nans =
              size_t(std::count_if(out.begin(), out.end(), [](float x) { return std::isnan(x); }));
          EXPECT_EQ(nans, size_t(30 * 4 * hd + 20 * 4));  // the rows and dimensions that see the NaN codes
        }
        for (size_t i = 0; i < out.size(); ++i)
          if (std::isnan(reference[i]) != std::isnan(out[i]) ||
              (!std::isnan(out[i]) && out[i] != reference[i])) {
            ADD_FAILURE() << "output " << i << ": " << out[i] << ", scalar kernels " << reference[i];
            break;
          }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CpuAttention, testing::Values(KvFormat::f32, KvFormat::bf16, KvFormat::fp8),
                         [](const testing::TestParamInfo<KvFormat>& i) {
                           return i.param == KvFormat::f32    ? "f32"
                                  : i.param == KvFormat::bf16 ? "bf16"
                                                              : "fp8";
                         });

}  // namespace
}  // namespace mx8::backend
