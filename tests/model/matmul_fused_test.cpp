// Backend::matmul_fused's default (the composition every backend without a fused kernel uses, the
// CPU backend among them) against the plain ops it stands for, bit for bit: the model's numerics
// on such backends did not change when its forward pass moved to matmul_fused. Also the recording
// hooks' defaults (no recording: the caller runs the ops itself).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/error.h"

namespace {

using namespace mx8::backend;

std::vector<float> randn(size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
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
  for (int64_t m : {1, 3, 17})
    for (int count : {1, 2, 3})
      for (bool swiglu : {false, true})
        for (bool accumulate : {false, true})
          for (bool with_bias : {false, true}) {
            SCOPED_TRACE("m " + std::to_string(m) + ", count " + std::to_string(count) + ", swiglu " +
                         std::to_string(swiglu) + ", accumulate " + std::to_string(accumulate) + ", bias " +
                         std::to_string(with_bias));
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
            be->matmul_fused({x.data(), swiglu ? up.data() : nullptr, m, accumulate}, t.data(), count);

            // The same with the plain ops.
            std::vector<float> in = x;
            if (swiglu) be->silu_mul(x.data(), up.data(), in.data(), m * k);
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
