// The backend interface's ops on the CPU backend against plain double-precision references written
// here, on fresh random inputs with ragged shapes. Any backend (CUDA) can be run through the same
// checks by adding it to backends().
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "backend/cpu/backend_cpu.h"
#include "backend_cpu/isa_list.h"
#include "float_vectors.h"
#include "model/penalty_rows.h"
#include "model/selection_rows.h"
#include "mx8/backend/backend_by_name.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/quantize_ref.h"
#include "mx8/io/gguf.h"
#include "mx8/runtime/sampler.h"

namespace {

using mx8::test::randn;

using namespace mx8::backend;

// Reference y = x W^T in double.
std::vector<double> matmul_ref(const std::vector<float>& w, const std::vector<float>& x, int64_t m, int64_t n,
                               int64_t k) {
  std::vector<double> y(size_t(m * n));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) {
      double s = 0;
      for (int64_t i = 0; i < k; ++i) s += double(x[r * k + i]) * double(w[c * k + i]);
      y[r * n + c] = s;
    }
  return y;
}

// |y - ref| <= k * 2^-22 * sum|x*w|: f32 accumulation over k terms (each add rounds by <= 2^-24
// relative to the partial sum, which is bounded by sum|x*w|); 4x slack for the blocked order.
void expect_close(const std::vector<float>& y, const std::vector<double>& ref, const std::vector<float>& w,
                  const std::vector<float>& x, int64_t m, int64_t n, int64_t k, const char* what) {
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) {
      double mag = 0;
      for (int64_t i = 0; i < k; ++i) mag += std::abs(double(x[r * k + i]) * double(w[c * k + i]));
      double bound = double(k) * std::ldexp(1.0, -22) * mag + 1e-30;
      ASSERT_LE(std::abs(y[r * n + c] - ref[r * n + c]), bound) << what << " at " << r << "," << c;
    }
}

TEST(BackendOps, MatmulAllWeightFormatsAgainstDequantizedReference) {
  auto be = make_cpu_backend(2);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                         {1, 33, 70},
                         {3, 130, 257},
                         {5, 256, 128},
                         {2, 7, 300}}) {
    std::vector<float> w = randn(size_t(n * k), 7 + n, 0.05f), x = randn(size_t(m * k), 11 + k);
    std::vector<float> bias = randn(size_t(n), 13);
    std::vector<float> y(size_t(m * n));
    // The backend's kernels and the plain scalar matmul (MX8_CPU_MATMUL=scalar) against the reference
    // on the weights as stored (`wr`).
    auto check = [&](const WeightView& v, const std::vector<float>& wr, const char* what) {
      const std::vector<double> ref = matmul_ref(wr, x, m, n, k);
      be->matmul(v, x.data(), m, y.data());
      expect_close(y, ref, wr, x, m, n, k, what);
      std::fill(y.begin(), y.end(), NAN);
      cpu_impl::matmul_scalar(v, x.data(), m, y.data(), nullptr);
      expect_close(y, ref, wr, x, m, n, k, what);
    };
    // f32
    WeightView wf{WeightFormat::f32, n, k, w.data(), nullptr, ScaleType::ue8m0};
    check(wf, w, "f32");
    // f32 with bias
    be->matmul(wf, x.data(), m, y.data(), bias.data());
    std::vector<double> rb = matmul_ref(w, x, m, n, k);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) rb[r * n + c] += bias[c];
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], rb[i], 1e-4);
    // bf16: reference on the bf16-rounded weights
    std::vector<uint16_t> wb(w.size());
    std::vector<float> wbf(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      wb[i] = mx8::format::f32_to_bf16_rne(w[i]);
      wbf[i] = mx8::format::bf16_to_f32(wb[i]);
    }
    check({WeightFormat::bf16, n, k, wb.data(), nullptr, ScaleType::ue8m0}, wbf, "bf16");
    // Embedding lookups of f32 and bf16 tables return the rows exactly (a quantized table's below).
    std::vector<int32_t> last_first = {int32_t(n - 1), 0};
    std::vector<float> rows(2 * size_t(k));
    be->embedding(wf, last_first.data(), 2, rows.data());
    EXPECT_TRUE(std::equal(rows.begin(), rows.begin() + k, w.begin() + (n - 1) * k));
    EXPECT_TRUE(std::equal(rows.begin() + k, rows.end(), w.begin()));
    be->embedding({WeightFormat::bf16, n, k, wb.data(), nullptr, ScaleType::ue8m0}, last_first.data(), 2,
                  rows.data());
    EXPECT_TRUE(std::equal(rows.begin(), rows.begin() + k, wbf.begin() + (n - 1) * k));
    EXPECT_TRUE(std::equal(rows.begin() + k, rows.end(), wbf.begin()));
    // fp8 block 128x128 (UE8M0 and f32 scales) and mxfp8: reference on the dequantized weights
    for (int variant = 0; variant < 3; ++variant) {
      mx8::format::QuantSpec spec;
      spec.blocking = variant == 2 ? mx8::format::Blocking::tile(32) : mx8::format::Blocking::block(128);
      spec.storage = variant == 1 ? mx8::format::ScaleStorage::f32 : mx8::format::ScaleStorage::ue8m0;
      spec.rule = variant == 1 ? mx8::format::ScaleRule::fp32 : mx8::format::ScaleRule::ceil;
      std::vector<uint8_t> codes(mx8::format::code_bytes(spec, n, k)),
          scales(mx8::format::scale_bytes(spec, n, k));
      mx8::format::quantize_ref(mx8::format::SourceType::f32, w.data(), n, k, spec, codes.data(),
                                scales.data());
      std::vector<float> wd(w.size());
      mx8::format::dequantize_ref(codes.data(), scales.data(), n, k, spec, wd.data());
      WeightView wq{variant == 2 ? WeightFormat::mxfp8 : WeightFormat::fp8_block,
                    n,
                    k,
                    codes.data(),
                    scales.data(),
                    variant == 1 ? ScaleType::f32 : ScaleType::ue8m0};
      check(wq, wd, variant == 2 ? "mxfp8" : "fp8_block");
      // The embedding lookup of a quantized table returns the dequantized rows exactly.
      std::vector<int32_t> ids = {int32_t(n - 1), 0};
      std::vector<float> rows(2 * size_t(k));
      be->embedding(wq, ids.data(), 2, rows.data());
      for (int64_t i = 0; i < k; ++i) {
        ASSERT_EQ(rows[i], wd[(n - 1) * k + i]);
        ASSERT_EQ(rows[k + i], wd[i]);
      }
    }
  }
}

TEST(BackendOps, UnsupportedOrMalformedRequestsAreErrors) {
  auto be = make_cpu_backend(1);
  float x[4] = {1, 2, 3, 4}, y[4];
  uint8_t codes[4] = {0};
  EXPECT_THROW(be->matmul({WeightFormat::fp8_block, 2, 2, codes, nullptr, ScaleType::ue8m0}, x, 1, y),
               mx8::Error);
  EXPECT_THROW(be->matmul({WeightFormat::mxfp8, 2, 2, codes, codes, ScaleType::f32}, x, 1, y), mx8::Error);
  EXPECT_THROW(be->matmul({WeightFormat::f32, 0, 2, x, nullptr, ScaleType::ue8m0}, x, 1, y), mx8::Error);
  int32_t bad = 5;
  EXPECT_THROW(be->embedding({WeightFormat::f32, 2, 2, x, nullptr, ScaleType::ue8m0}, &bad, 1, y),
               mx8::Error);
  EXPECT_FALSE(be->supports_weight(WeightFormat::mxfp8, ScaleType::f32));
  try {
    make_backend("rocm", 1);
    ADD_FAILURE() << "make_backend(\"rocm\") returned";
  } catch (const mx8::Error& e) {  // the message names what this build has
#if defined(MX8_HAVE_CUDA)
    EXPECT_NE(std::string(e.what()).find("this build has: cpu, cuda)"), std::string::npos) << e.what();
#else
    EXPECT_NE(std::string(e.what()).find("this build has: cpu)"), std::string::npos) << e.what();
#endif
  }
#if !defined(MX8_HAVE_CUDA)
  EXPECT_THROW(make_backend("cuda", 1), mx8::Error);
#endif
}

TEST(BackendOps, RmsnormRopeSiluSoftmax) {
  auto be = make_cpu_backend(2);
  const int64_t rows = 3, dim = 24;
  std::vector<float> x = randn(rows * dim, 1), w = randn(dim, 2), y(rows * dim);
  be->rmsnorm(x.data(), w.data(), rows, dim, 1e-5f, y.data());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += double(x[r * dim + j]) * x[r * dim + j];
    double inv = 1 / std::sqrt(ss / dim + 1e-5);
    for (int64_t j = 0; j < dim; ++j) ASSERT_NEAR(y[r * dim + j], x[r * dim + j] * inv * w[j], 1e-5);
  }
  // RoPE both styles: pair (i0, i1) rotated by pos * inv_freq[j].
  const int hd = 8, heads = 2;
  std::vector<float> inv = {1.0f, 0.1f, 0.01f, 0.001f};
  std::vector<int32_t> pos = {0, 5, 1000};
  for (RopeStyle style : {RopeStyle::interleaved, RopeStyle::half}) {
    std::vector<float> q = randn(3 * heads * hd, 3), q0 = q;
    be->rope(q.data(), pos.data(), 3, heads, {style, hd, hd, inv.data()});
    for (int t = 0; t < 3; ++t)
      for (int h = 0; h < heads; ++h)
        for (int j = 0; j < hd / 2; ++j) {
          int i0 = style == RopeStyle::interleaved ? 2 * j : j,
              i1 = style == RopeStyle::interleaved ? 2 * j + 1 : j + hd / 2;
          double a = double(float(pos[t]) * inv[j]);
          const float* v0 = &q0[(t * heads + h) * hd];
          const float* v = &q[(t * heads + h) * hd];
          ASSERT_NEAR(v[i0], v0[i0] * std::cos(a) - v0[i1] * std::sin(a), 1e-5);
          ASSERT_NEAR(v[i1], v0[i0] * std::sin(a) + v0[i1] * std::cos(a), 1e-5);
        }
  }
  std::vector<float> g = randn(50, 4, 3), u = randn(50, 5), o(50);
  be->silu_mul(g.data(), u.data(), o.data(), 50);
  for (int i = 0; i < 50; ++i) ASSERT_NEAR(o[i], g[i] / (1 + std::exp(-double(g[i]))) * u[i], 1e-5);
  std::vector<float> s = randn(2 * 9, 6, 4);
  std::vector<float> s0 = s;
  be->softmax(s.data(), 2, 9);
  for (int r = 0; r < 2; ++r) {
    double z = 0;
    for (int j = 0; j < 9; ++j) z += std::exp(double(s0[r * 9 + j]));
    for (int j = 0; j < 9; ++j) ASSERT_NEAR(s[r * 9 + j], std::exp(double(s0[r * 9 + j])) / z, 1e-6);
  }
}

// Attention over a paged cache (pages shuffled, two sequences, GQA) against a direct computation on
// the K/V values as the cache stores them (f32 exact, bf16 rounded, fp8 quantized per token/head/128).
TEST(BackendOps, ArgmaxFollowsTheSamplersRule) {
  auto be = make_cpu_backend(2);
  for (const auto& c : mx8::test::selection_cases(11)) {
    std::vector<int32_t> got(size_t(c.rows()), -1);
    be->argmax(c.x.data(), c.rows(), c.cols, got.data());
    for (int64_t r = 0; r < c.rows(); ++r)
      EXPECT_EQ(got[size_t(r)], mx8::runtime::argmax({c.x.data() + r * c.cols, size_t(c.cols)}))
          << "row " << r << " of " << c.cols << " columns";
  }
}

TEST(BackendOps, TopKInTheSamplersOrder) {
  // Against a full sort of every (x / t, j), x not NaN, by value and then by the lower index: the order
  // the sampler draws from (runtime::Sampler). Temperatures that are not powers of two make distinct
  // x equal after the division, which the index order must then decide.
  auto be = make_cpu_backend(2);
  for (const auto& c : mx8::test::selection_cases(12)) {
    for (int k : {1, 7, 40, Backend::kMaxTopK}) {
      std::vector<float> temps(size_t(c.rows()));
      for (size_t r = 0; r < temps.size(); ++r) temps[r] = std::vector<float>{0.37f, 1.0f, 1.7f, 3.0f}[r % 4];
      std::vector<float> values(size_t(c.rows()) * size_t(k));
      std::vector<int32_t> ids(values.size());
      be->top_k(c.x.data(), c.rows(), c.cols, k, temps.data(), values.data(), ids.data());
      for (int64_t r = 0; r < c.rows(); ++r) {
        std::vector<std::pair<float, int32_t>> all;
        for (int64_t j = 0; j < c.cols; ++j) {
          const float x = c.x[size_t(r * c.cols + j)];
          if (!std::isnan(x)) all.emplace_back(x / temps[size_t(r)], int32_t(j));
        }
        std::sort(all.begin(), all.end(), [](auto& a, auto& b) {
          return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
        for (int i = 0; i < k; ++i) {
          const size_t at = size_t(r * k + i);
          if (size_t(i) < all.size()) {
            ASSERT_EQ(ids[at], all[size_t(i)].second)
                << "row " << r << " of " << c.cols << ", k " << k << ", " << i;
            ASSERT_EQ(values[at], all[size_t(i)].first);
          } else {
            ASSERT_EQ(ids[at], -1) << "row " << r << " past its candidates";
          }
        }
      }
    }
  }
}

TEST(BackendOps, PenalizeIsTheSamplersFirstStep) {
  // Sampler::sample penalizes its row in place before anything else; Backend::penalize with the entries
  // of penalty_counts must leave the same bits (the row's other values untouched).
  auto be = make_cpu_backend(2);
  for (const auto& c : mx8::test::selection_cases(13)) {
    auto p = mx8::test::penalty_rows(c, 14);
    std::vector<float> x = p.x;
    const int32_t n = p.n();
    std::vector<float> saved(static_cast<size_t>(n));
    be->penalize(x.data(), c.rows(), c.cols, {p.params.data(), &n, p.entries.data(), saved.data()});
    auto same = [](float a, float b) {
      return mx8::format::f32_bits(a) == mx8::format::f32_bits(b) || (std::isnan(a) && std::isnan(b));
    };
    for (int64_t r = 0; r < c.rows(); ++r) {
      std::vector<float> want(p.x.begin() + r * c.cols, p.x.begin() + (r + 1) * c.cols);
      mx8::runtime::Sampler(p.sampling[size_t(r)]).sample(want, p.history[size_t(r)]);
      for (int64_t j = 0; j < c.cols; ++j) {
        const float got = x[size_t(r * c.cols + j)];
        ASSERT_TRUE(same(got, want[size_t(j)])) << c.cols << " columns, row " << r << ", token " << j << ": "
                                                << got << " against " << want[size_t(j)];
      }
    }
    // The entries changed values (a penalize that did nothing would fail this, a sampler that did
    // nothing the comparison above): at least one in half of the rows (rows 3 and 4 hold only NaN and
    // -inf, which keep their value; a row's penalties may leave an occasional value as it was).
    int64_t changed = 0;  // a loop: clang 14 cannot use libstdc++ 12's views::iota
    for (size_t i = 0; i < x.size(); ++i) changed += !same(x[i], p.x[i]);
    EXPECT_GE(changed, c.rows() / 2) << c.cols << " columns";
    for (int32_t i = 0; i < n; ++i)  // what each entry replaced: the row as it was
      ASSERT_TRUE(same(saved[size_t(i)], p.x[size_t(p.entries[3 * i] * c.cols + p.entries[3 * i + 1])])) << i;
  }
}

TEST(BackendOps, PenalizeRejectsEntriesOutsideItsRows) {
  auto be = make_cpu_backend(1);
  std::vector<float> x(8, 1.0f);
  const std::vector<float> params{1.3f, 0.0f, 0.0f, 1.3f, 0.0f, 0.0f};
  const int32_t one = 1;
  for (std::vector<int32_t> bad :
       {std::vector<int32_t>{2, 0, 1}, {-1, 0, 1}, {0, 4, 1}, {0, -1, 1}, {1, 3, 0}}) {
    try {
      be->penalize(x.data(), 2, 4, {params.data(), &one, bad.data()});
      FAIL() << "entry (" << bad[0] << ", " << bad[1] << ", " << bad[2] << ") accepted";
    } catch (const mx8::Error& e) {
      EXPECT_NE(std::string(e.what()).find("outside"), std::string::npos) << e.what();
    }
  }
  const int32_t two = 2;
  const std::vector<int32_t> edges = {0, 0, 1, 1, 3, 2};  // the first and the last logit
  EXPECT_NO_THROW(be->penalize(x.data(), 2, 4, {params.data(), &two, edges.data()}));
}

// Every compiled kernel (heads of 64 or more go through attention_tile.h's kernels, vector ones where
// the head is a multiple of 8; tests/backend_cpu/attention_test.cpp holds them to each other bit for
// bit), on heads of 160 (two fp8 scales each), 128 (one, exactly), 72 (an 8-wide part after the 16-wide
// steps) and 100 (scalar key blocks and a scalar tail), with pages of 4 positions (key blocks that span
// pages).
TEST(BackendOps, PagedAttentionAllKvFormats) {
  auto be = make_cpu_backend(2);
  const int heads = 4, kv_heads = 2, ps = 4, pages = 8, len0 = 13, len1 = 6;
  for (int hd : {160, 128, 72, 100})
    for (mx8::cpu::Isa isa : mx8::cpu::testing::runnable_isas())
      for (KvFormat fmt : {KvFormat::f32, KvFormat::bf16, KvFormat::fp8}) {
        SCOPED_TRACE("head_dim " + std::to_string(hd) + ", " + mx8::cpu::isa_name(isa));
        mx8::cpu::ScopedIsa forced(isa);
        KvCacheDesc d{fmt, 2, kv_heads, hd, ps, pages};
        auto cache = be->create_kv_cache(d);
        // Sequence 0 uses pages {5, 2, 7, 0}, sequence 1 uses {3, 6}.
        std::vector<int32_t> tables = {5, 2, 7, 0, 3, 6, 0, 0};
        auto slot_of = [&](int s, int p) { return tables[s * 4 + p / ps] * ps + p % ps; };
        std::vector<float> k0 = randn(size_t(len0) * kv_heads * hd, 20),
                           v0 = randn(size_t(len0) * kv_heads * hd, 21);
        std::vector<float> k1 = randn(size_t(len1) * kv_heads * hd, 22),
                           v1 = randn(size_t(len1) * kv_heads * hd, 23);
        std::vector<int32_t> s0, s1;
        for (int p = 0; p < len0; ++p) s0.push_back(slot_of(0, p));
        for (int p = 0; p < len1; ++p) s1.push_back(slot_of(1, p));
        be->kv_write(*cache, 1, k0.data(), v0.data(), s0.data(), len0);
        be->kv_write(*cache, 1, k1.data(), v1.data(), s1.data(), len1);
        // What the cache holds, per format.
        auto stored = [&](std::vector<float> v) {
          for (size_t h = 0; h < v.size() / hd; ++h) {
            float* row = &v[h * hd];
            if (fmt == KvFormat::bf16)
              for (int i = 0; i < hd; ++i)
                row[i] = mx8::format::bf16_to_f32(mx8::format::f32_to_bf16_rne(row[i]));
            if (fmt == KvFormat::fp8) {
              mx8::format::QuantSpec spec;  // e4m3, ceil, 1x128, ue8m0: the KV cache's recipe
              std::vector<uint8_t> c(hd), sc(2);
              mx8::format::quantize_ref(mx8::format::SourceType::f32, row, 1, hd, spec, c.data(), sc.data());
              mx8::format::dequantize_ref(c.data(), sc.data(), 1, hd, spec, row);
            }
          }
          return v;
        };
        std::vector<float> K[2] = {stored(k0), stored(k1)}, V[2] = {stored(v0), stored(v1)};
        // Three query tokens: seq 0 seeing 13 and 9 positions, seq 1 seeing 6.
        std::vector<int32_t> seq = {0, 0, 1}, kvlen = {13, 9, 6};
        std::vector<float> q = randn(3 * heads * hd, 30, 0.2f), out(3 * heads * hd);
        AttentionArgs a;
        a.q = q.data();
        a.out = out.data();
        a.n_tokens = 3;
        a.n_heads = heads;
        a.n_kv_heads = kv_heads;
        a.head_dim = hd;
        a.scale = 1 / std::sqrt(float(hd));
        a.layer = 1;
        a.seq = seq.data();
        a.kv_len = kvlen.data();
        a.block_tables = tables.data();
        a.max_pages_per_seq = 4;
        // No window, a window of 1 (each token sees itself only), a sliding window of 5 (each token
        // sees its last 5 positions), one longer than any sequence here (the same as none).
        for (int window : {0, 1, 5, 13}) {
          a.window = window;
          be->attention(*cache, a);
          for (int t = 0; t < 3; ++t)
            for (int h = 0; h < heads; ++h) {
              const int s = seq[t], kvh = h / (heads / kv_heads);
              const int first = window > 0 ? std::max(0, kvlen[t] - window) : 0;
              std::vector<double> sc(kvlen[t]);
              double mx = -1e300, z = 0;
              for (int p = first; p < kvlen[t]; ++p) {
                double dot = 0;
                for (int i = 0; i < hd; ++i)
                  dot += double(q[(t * heads + h) * hd + i]) * K[s][(p * kv_heads + kvh) * hd + i];
                sc[p] = dot * a.scale;
                mx = std::max(mx, sc[p]);
              }
              for (int p = first; p < kvlen[t]; ++p) z += (sc[p] = std::exp(sc[p] - mx));
              for (int i = 0; i < hd; ++i) {
                double o = 0;
                for (int p = first; p < kvlen[t]; ++p) o += sc[p] / z * V[s][(p * kv_heads + kvh) * hd + i];
                // f32 against double: about 40 ulp at the outputs' largest magnitude (|o| < 4), room for
                // f32 sums of up to 160 products and 13 rows in any kernel's order.
                ASSERT_NEAR(out[(t * heads + h) * hd + i], o, 2e-5)
                    << kv_format_name(fmt) << " window " << window << " t" << t << " h" << h << " i" << i;
              }
            }
        }
        a.window = 0;
        // Out-of-range slots and pages are errors, not writes anywhere.
        int32_t bad_slot = pages * ps;
        EXPECT_THROW(be->kv_write(*cache, 0, k0.data(), v0.data(), &bad_slot, 1), mx8::Error);
        std::vector<int32_t> bad_tables = {9, 0, 0, 0};
        a.block_tables = bad_tables.data();
        a.n_tokens = 1;
        EXPECT_THROW(be->attention(*cache, a), mx8::Error);
      }
}

TEST(BackendOps, KvCacheBytes) {
  // fp8: 1 byte per value + 1 UE8M0 byte per 128 values; bf16: 2 bytes; pages rounded to 64 bytes.
  KvCacheDesc d{KvFormat::fp8, 32, 8, 128, 16, 10};
  EXPECT_EQ(d.page_bytes(), size_t(16 * 8 * 128 + 16 * 8));
  EXPECT_EQ(d.total_bytes(), d.page_bytes() * 10 * 2 * 32);
  d.format = KvFormat::bf16;
  EXPECT_EQ(d.page_bytes(), size_t(16 * 8 * 128 * 2));
  d.format = KvFormat::f32;
  EXPECT_EQ(d.page_bytes(), size_t(16 * 8 * 128 * 4));
  // A page of one 40-value head: 160 / 80 / 40 + 1 bytes, each rounded up to a cache line.
  KvCacheDesc small{KvFormat::f32, 1, 1, 40, 1, 3};
  EXPECT_EQ(small.page_bytes(), 192u);
  EXPECT_EQ(small.total_bytes(), 192u * 3 * 2);
  small.format = KvFormat::bf16;
  EXPECT_EQ(small.page_bytes(), 128u);
  small.format = KvFormat::fp8;
  EXPECT_EQ(small.page_bytes(), 64u);
  // Heads of 200 values carry two UE8M0 scales each: 2 tokens x 3 heads x (200 + 2) = 1212 -> 1216.
  EXPECT_EQ((KvCacheDesc{KvFormat::fp8, 1, 3, 200, 2, 1}.page_bytes()), 1216u);
}

// What a weight of each format occupies: its elements, and its scales (128x128 blocks of f32 or UE8M0
// for fp8_block, one UE8M0 per 1x32 for mxfp8), partial blocks counted whole.
TEST(BackendOps, WeightBytes) {
  EXPECT_EQ(weight_data_bytes(WeightFormat::f32, 3, 5), 60u);
  EXPECT_EQ(weight_data_bytes(WeightFormat::bf16, 3, 5), 30u);
  EXPECT_EQ(weight_data_bytes(WeightFormat::fp8_block, 3, 5), 15u);
  EXPECT_EQ(weight_data_bytes(WeightFormat::mxfp8, 3, 5), 15u);
  EXPECT_EQ(weight_scale_bytes(WeightFormat::fp8_block, ScaleType::f32, 129, 256), 2u * 2 * 4);
  EXPECT_EQ(weight_scale_bytes(WeightFormat::fp8_block, ScaleType::ue8m0, 128, 257), 1u * 3);
  EXPECT_EQ(weight_scale_bytes(WeightFormat::mxfp8, ScaleType::ue8m0, 3, 65), 3u * 3);
  EXPECT_EQ(weight_scale_bytes(WeightFormat::bf16, ScaleType::ue8m0, 3, 65), 0u);
  EXPECT_EQ(weight_scale_bytes(WeightFormat::f32, ScaleType::f32, 3, 65), 0u);
}

// Ids outside the row give NaN, not a read elsewhere: a log-probability row with no token, a gathered
// entry of a top-k list that ran short. The edges 0 and cols - 1 are values.
TEST(BackendOps, LogSumExpAndGatherOutsideTheRowGiveNaN) {
  auto be = make_cpu_backend(1);
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};  // 2 rows of 4
  const int32_t tokens[2] = {-1, 4}, edges[2] = {0, 3};
  double lse[2];
  float picked[2];
  be->log_sum_exp(x.data(), 2, 4, tokens, lse, picked);
  EXPECT_TRUE(std::isnan(picked[0]));
  EXPECT_TRUE(std::isnan(picked[1]));
  be->log_sum_exp(x.data(), 2, 4, edges, lse, picked);
  EXPECT_EQ(picked[0], 1.0f);
  EXPECT_EQ(picked[1], 8.0f);
  const int32_t ids[4] = {0, -1, 4, 3};  // k = 2 per row
  float out[4];
  be->gather(x.data(), 2, 4, ids, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_TRUE(std::isnan(out[1]));
  EXPECT_TRUE(std::isnan(out[2]));
  EXPECT_EQ(out[3], 8.0f);
}

TEST(BackendOps, BadKvCacheShapesAndEmbeddingTablesAreRefused) {
  auto be = make_cpu_backend(1);
  for (int field = 0; field < 5; ++field) {
    KvCacheDesc d{KvFormat::bf16, 2, 2, 64, 16, 4};
    int* f[5] = {&d.n_layers, &d.n_kv_heads, &d.head_dim, &d.page_size, &d.n_pages};
    *f[field] = 0;
    EXPECT_THROW(be->create_kv_cache(d), mx8::Error) << "field " << field;
  }
  EXPECT_NO_THROW(be->create_kv_cache(KvCacheDesc{KvFormat::bf16, 1, 1, 1, 1, 1}));
  int32_t id = 0;
  float y[4];
  uint8_t codes[4] = {0};
  EXPECT_THROW(be->embedding({WeightFormat::f32, 2, 2, nullptr, nullptr, ScaleType::ue8m0}, &id, 1, y),
               mx8::Error);
  EXPECT_THROW(be->embedding({WeightFormat::fp8_block, 2, 2, codes, nullptr, ScaleType::ue8m0}, &id, 1, y),
               mx8::Error);
}

}  // namespace

// The loader turns GGUF MXFP4 weights into MXFP8 (model/llama.cpp): claimed lossless. Random MXFP4
// blocks over a realistic exponent range, decoded by the GGUF reader, re-encoded with E4M3 + `ceil`
// UE8M0 per 1x32 and decoded again, must give back the same f32 values bit for bit.
TEST(BackendOps, GgufMxfp4ReencodesExactlyAsMxfp8) {
  std::mt19937_64 rng(77);
  const int64_t rows = 8, cols = 256;
  std::vector<uint8_t> blocks(size_t(rows * cols / 32) * 17);
  for (size_t b = 0; b < blocks.size() / 17; ++b) {
    blocks[b * 17] = uint8_t(100 + rng() % 40);  // 2^-28 .. 2^11 scales
    for (int j = 1; j < 17; ++j) blocks[b * 17 + j] = uint8_t(rng());
  }
  std::vector<float> w(size_t(rows * cols));
  mx8::io::ggml_dequantize(mx8::io::GgmlType::kMXFP4, blocks.data(), w.data(), uint64_t(w.size()));
  mx8::format::QuantSpec spec;
  spec.blocking = mx8::format::Blocking::tile(32);
  std::vector<uint8_t> codes(mx8::format::code_bytes(spec, rows, cols)),
      scales(mx8::format::scale_bytes(spec, rows, cols));
  mx8::format::quantize_ref(mx8::format::SourceType::f32, w.data(), rows, cols, spec, codes.data(),
                            scales.data());
  std::vector<float> back(w.size());
  mx8::format::dequantize_ref(codes.data(), scales.data(), rows, cols, spec, back.data());
  for (size_t i = 0; i < w.size(); ++i)
    ASSERT_EQ(mx8::format::f32_bits(back[i]), mx8::format::f32_bits(w[i])) << i;
}
