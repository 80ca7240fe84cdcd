// The defaults of Backend::matmul_fused, matmul_swiglu and rope_kv_write (the compositions every backend
// without fused kernels uses, the CPU backend among them) against the plain ops they stand for, bit
// for bit: the model's numerics on such backends did not change when its forward pass moved to the
// fused ops. Also the recording hooks' defaults (no recording: the caller runs the ops itself).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "float_vectors.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"

namespace {

using mx8::test::same_bits;

using namespace mx8::backend;

std::vector<float> randn(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// One decode token (layer `layer`, scale 1/8) over a sequence's block table of 3 pages; q and out are the
// caller's.
AttentionArgs one_token_args(int n_heads, int n_kv, int hd, int layer, const std::vector<int32_t>& seq,
                             const std::vector<int32_t>& len, const std::vector<int32_t>& table) {
  AttentionArgs a;
  a.n_tokens = 1;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv;
  a.head_dim = hd;
  a.scale = 0.125f;
  a.layer = layer;
  a.seq = seq.data();
  a.kv_len = len.data();
  a.block_tables = table.data();
  a.max_pages_per_seq = 3;
  return a;
}

TEST(MatmulFused, DefaultEqualsThePlainOpsBitForBit) {
  auto be = make_cpu_backend(2);
  std::mt19937_64 rng(20261128);
  const int64_t k = 96;
  const int64_t ns[3] = {40, 7, 64};
  std::vector<std::vector<float>> w, bias;
  for (int64_t n : ns) {
    w.push_back(randn(size_t(n * k), rng));
    bias.push_back(randn(size_t(n), rng));
  }
  const std::vector<float> norm_w = randn(size_t(k), rng);
  const float eps = 1e-5f;
  enum Input { plain_x, swiglu_x, normed_x };
  for (int64_t m : {1, 3, 17})
    for (int count : {1, 2, 3})
      for (Input input : {plain_x, swiglu_x, normed_x})
        for (bool accumulate : {false, true})
          for (bool with_bias : {false, true}) {
            const bool swiglu = input == swiglu_x, normed = input == normed_x;
            SCOPED_TRACE("m " + std::to_string(m) + ", count " + std::to_string(count) + ", input " +
                         std::to_string(int(input)) + ", accumulate " + std::to_string(accumulate) +
                         ", bias " + std::to_string(with_bias));
            const std::vector<float> x = randn(size_t(m * k), rng), up = randn(size_t(m * k), rng);
            std::vector<std::vector<float>> y0, fused, plain;
            for (int i = 0; i < count; ++i) y0.push_back(randn(size_t(m * ns[i]), rng));
            fused = y0;
            std::vector<MatmulTarget> t(static_cast<size_t>(count));
            for (int i = 0; i < count; ++i) {
              t[size_t(i)].w =
                  WeightView{WeightFormat::f32, ns[i], k, w[size_t(i)].data(), nullptr, ScaleType::ue8m0};
              t[size_t(i)].y = fused[size_t(i)].data();
              t[size_t(i)].bias = with_bias ? bias[size_t(i)].data() : nullptr;
            }
            be->matmul_fused({x.data(), swiglu ? up.data() : nullptr, m, accumulate,
                              normed ? norm_w.data() : nullptr, eps},
                             t.data(), count);

            // The same with the plain ops.
            std::vector<float> in = x;
            if (swiglu) be->silu_mul(x.data(), up.data(), in.data(), m * k);
            if (normed) be->rmsnorm(x.data(), norm_w.data(), m, k, eps, in.data());
            plain = y0;
            for (int i = 0; i < count; ++i) {
              std::vector<float> p(size_t(m * ns[i]));
              be->matmul(t[size_t(i)].w, in.data(), m, p.data(), t[size_t(i)].bias);
              if (accumulate)
                be->add(plain[size_t(i)].data(), p.data(), m * ns[i]);
              else
                plain[size_t(i)] = p;
            }
            for (int i = 0; i < count; ++i)
              EXPECT_TRUE(same_bits(fused[size_t(i)], plain[size_t(i)])) << "target " << i;
          }
}

TEST(MatmulFused, TargetsWithDifferentInputWidthsAreAnError) {
  auto be = make_cpu_backend(1);
  std::vector<float> w1(8 * 4), w2(8 * 5), x(5), y1(8), y2(8);
  MatmulTarget t[2];
  t[0].w = WeightView{WeightFormat::f32, 8, 4, w1.data(), nullptr, ScaleType::ue8m0};
  t[0].y = y1.data();
  t[1].w = WeightView{WeightFormat::f32, 8, 5, w2.data(), nullptr, ScaleType::ue8m0};
  t[1].y = y2.data();
  EXPECT_THROW(be->matmul_fused({x.data(), nullptr, 1, false}, t, 2), mx8::Error);
}

TEST(MatmulFused, SwigluAndNormTogetherAreAnError) {
  auto be = make_cpu_backend(1);
  std::vector<float> w(8 * 4), x(4), up(4), g(4, 1.0f), y(8);
  MatmulTarget t;
  t.w = WeightView{WeightFormat::f32, 8, 4, w.data(), nullptr, ScaleType::ue8m0};
  t.y = y.data();
  EXPECT_THROW(be->matmul_fused({x.data(), up.data(), 1, false, g.data(), 1e-5f}, &t, 1), mx8::Error);
}

// The default matmul_swiglu: matmul_fused into gate and up, and the down matmul's input as
// {x = gate, x_up = up}, so the model's numerics are those of the two separate calls.
TEST(MatmulSwiglu, DefaultIsTheFusedPairLeftToTheConsumer) {
  auto be = make_cpu_backend(2);
  std::mt19937_64 rng(20261129);
  const int64_t k = 64, n = 24, m = 3;
  const std::vector<float> wg = randn(size_t(n * k), rng), wu = randn(size_t(n * k), rng),
                           x = randn(size_t(m * k), rng), norm_w = randn(size_t(k), rng);
  const WeightView vg{WeightFormat::f32, n, k, wg.data(), nullptr, ScaleType::ue8m0},
      vu{WeightFormat::f32, n, k, wu.data(), nullptr, ScaleType::ue8m0};
  std::vector<float> g1(size_t(m * n)), u1(size_t(m * n)), g2(size_t(m * n)), u2(size_t(m * n));
  const MatmulInput in{x.data(), nullptr, m, false, norm_w.data(), 1e-5f};
  const MatmulTarget t[2] = {{vg, g1.data(), nullptr}, {vu, u1.data(), nullptr}};
  be->matmul_fused(in, t, 2);
  const MatmulInput h = be->matmul_swiglu(in, {vg, g2.data(), nullptr}, {vu, u2.data(), nullptr});
  EXPECT_EQ(h.x, g2.data());
  EXPECT_EQ(h.x_up, u2.data());
  EXPECT_EQ(h.m, m);
  EXPECT_FALSE(h.accumulate);
  EXPECT_EQ(h.norm, nullptr);
  EXPECT_TRUE(same_bits(g1, g2));
  EXPECT_TRUE(same_bits(u1, u2));
  // A pair of different shapes, or an input that already has x_up or accumulates, is an error.
  const WeightView narrow{WeightFormat::f32, n - 8, k, wu.data(), nullptr, ScaleType::ue8m0};
  EXPECT_THROW(be->matmul_swiglu(in, {vg, g2.data()}, {narrow, u2.data()}), mx8::Error);
  EXPECT_THROW(be->matmul_swiglu({x.data(), x.data(), m}, {vg, g2.data()}, {vu, u2.data()}), mx8::Error);
  EXPECT_THROW(be->matmul_swiglu({x.data(), nullptr, m, true}, {vg, g2.data()}, {vu, u2.data()}), mx8::Error);
}

TEST(RopeKvWrite, DefaultsEqualThePlainOpsBitForBit) {
  auto be = make_cpu_backend(2);
  std::mt19937_64 rng(7);
  const int T = 3, n_heads = 4, n_kv = 2, hd = 64, page = 4;
  for (KvFormat f : {KvFormat::f32, KvFormat::bf16, KvFormat::fp8}) {
    const KvCacheDesc d{f, 2, n_kv, hd, page, 3};
    auto fused = be->create_kv_cache(d), plain = be->create_kv_cache(d);
    std::vector<float> inv(size_t(hd / 2));
    for (int j = 0; j < hd / 2; ++j) inv[size_t(j)] = std::pow(10000.0f, -2.0f * float(j) / float(hd));
    const RopeArgs r{RopeStyle::half, hd, hd, inv.data()};
    const std::vector<int32_t> pos{3, 4, 9}, slots{3, 4, 9};
    const std::vector<float> q0 = randn(size_t(T * n_heads * hd), rng),
                             k0 = randn(size_t(T * n_kv * hd), rng), v = randn(size_t(T * n_kv * hd), rng);
    std::vector<float> qf = q0, kf = k0, qp = q0, kp = k0;
    be->rope_kv_write(*fused, 1, qf.data(), kf.data(), v.data(), pos.data(), slots.data(), T, n_heads, r);
    be->rope(qp.data(), pos.data(), T, n_heads, r);
    be->rope(kp.data(), pos.data(), T, n_kv, r);
    be->kv_write(*plain, 1, kp.data(), v.data(), slots.data(), T);
    EXPECT_TRUE(same_bits(qf, qp));
    EXPECT_TRUE(same_bits(kf, kp));
    // Decode token 2 of the cache through attention: equal caches give equal outputs.
    std::vector<float> of(size_t(n_heads * hd)), op(size_t(n_heads * hd));
    const std::vector<int32_t> seq{0}, len{10}, table{0, 1, 2};
    AttentionArgs a = one_token_args(n_heads, n_kv, hd, 1, seq, len, table);
    a.q = qp.data() + 2 * n_heads * hd;
    a.out = of.data();
    be->attention(*fused, a);
    a.out = op.data();
    be->attention(*plain, a);
    EXPECT_TRUE(same_bits(of, op)) << kv_format_name(f);

    // rope_kv_write_attention = rope_kv_write + attention, for token 2 alone (on both caches again).
    std::vector<float> q1 = q0, k1 = k0, q2 = q0, k2 = k0, o1(size_t(n_heads * hd)), o2(size_t(n_heads * hd));
    const int64_t qo = 2 * n_heads * hd, ko = 2 * n_kv * hd;
    a.q = q1.data() + qo;
    a.out = o1.data();
    be->rope_kv_write_attention(*fused, q1.data() + qo, k1.data() + ko, v.data() + ko, pos.data() + 2,
                                slots.data() + 2, r, a);
    be->rope_kv_write(*plain, 1, q2.data() + qo, k2.data() + ko, v.data() + ko, pos.data() + 2,
                      slots.data() + 2, 1, n_heads, r);
    a.q = q2.data() + qo;
    a.out = o2.data();
    be->attention(*plain, a);
    EXPECT_TRUE(same_bits(q1, q2));
    EXPECT_TRUE(same_bits(k1, k2));
    EXPECT_TRUE(same_bits(o1, o2)) << kv_format_name(f);
    a.q = q2.data();  // not the q being rotated
    EXPECT_THROW(
        be->rope_kv_write_attention(*fused, q1.data(), k1.data(), v.data(), pos.data(), slots.data(), r, a),
        mx8::Error);
  }
}

// The default attention_output: rope_kv_write_attention, then the output projection accumulated into
// the residual (matmul_fused with accumulate), bit for bit; a projection whose k is not n_heads x
// head_dim is refused before anything runs.
TEST(AttentionOutput, DefaultIsAttentionThenTheAccumulatedProjection) {
  auto be = make_cpu_backend(2);
  std::mt19937_64 rng(20261201);
  const int n_heads = 4, n_kv = 2, hd = 64, page = 4, dim = 48;
  const KvCacheDesc d{KvFormat::bf16, 1, n_kv, hd, page, 3};
  auto c1 = be->create_kv_cache(d), c2 = be->create_kv_cache(d);
  std::vector<float> inv(size_t(hd / 2));
  for (int j = 0; j < hd / 2; ++j) inv[size_t(j)] = std::pow(10000.0f, -2.0f * float(j) / float(hd));
  const RopeArgs r{RopeStyle::half, hd, hd, inv.data()};
  const std::vector<int32_t> pos{0}, slots{0}, seq{0}, len{1}, table{0, 1, 2};
  const std::vector<float> q0 = randn(size_t(n_heads * hd), rng), k0 = randn(size_t(n_kv * hd), rng),
                           v = randn(size_t(n_kv * hd), rng), wo = randn(size_t(dim * n_heads * hd), rng),
                           x0 = randn(size_t(dim), rng);
  const WeightView vo{WeightFormat::f32, dim, n_heads * hd, wo.data(), nullptr, ScaleType::ue8m0};
  std::vector<float> q1 = q0, k1 = k0, q2 = q0, k2 = k0, o1(q0.size()), o2(q0.size()), x1 = x0, x2 = x0;
  AttentionArgs a = one_token_args(n_heads, n_kv, hd, 0, seq, len, table);
  a.q = q1.data();
  a.out = o1.data();
  be->attention_output(*c1, q1.data(), k1.data(), v.data(), pos.data(), slots.data(), r, a, {vo, x1.data()});
  a.q = q2.data();
  a.out = o2.data();
  be->rope_kv_write_attention(*c2, q2.data(), k2.data(), v.data(), pos.data(), slots.data(), r, a);
  const MatmulTarget t{vo, x2.data()};
  be->matmul_fused({o2.data(), nullptr, 1, true}, &t, 1);
  EXPECT_TRUE(same_bits(o1, o2));
  EXPECT_TRUE(same_bits(x1, x2));
  EXPECT_FALSE(same_bits(x1, x0));  // the projection was added
  const WeightView narrow{WeightFormat::f32, dim, n_heads * hd - 8, wo.data(), nullptr, ScaleType::ue8m0};
  EXPECT_THROW(be->attention_output(*c1, q2.data(), k2.data(), v.data(), pos.data(), slots.data(), r, a,
                                    {narrow, x1.data()}),
               mx8::Error);
}

TEST(MatmulFused, RecordingDefaultsRecordNothing) {
  auto be = make_cpu_backend(1);
  EXPECT_FALSE(be->replay(42));
  be->begin_recording(42);
  std::vector<float> a{1, 2}, b{3, 4};
  be->add(a.data(), b.data(), 2);  // runs now: the bracket is ignored
  be->end_recording();
  EXPECT_EQ(a, (std::vector<float>{4, 6}));
  EXPECT_FALSE(be->replay(42));
  be->discard_recording();  // no bracket open: nothing to do
}

}  // namespace
