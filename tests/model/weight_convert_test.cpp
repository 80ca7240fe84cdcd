// convert_weight: a source tensor written into a matmul weight format band by band on the load
// pool must equal the whole tensor widened to f32 and then converted by the reference code, byte for
// byte. 300 rows make two full bands of 128 and a ragged one; k = 200 leaves a partial 128 scale
// block and a partial 32-value tile at the end of each row (ggml block types need whole blocks, so
// they use k = 256).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "model/model_source.h"
#include "model/weight_convert.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/quantize_ref.h"

namespace {

using mx8::backend::ScaleType;
using mx8::backend::WeightFormat;
using mx8::format::ScaleRule;
using mx8::model::SourceTensor;

struct Source {
  SourceTensor tensor;
  std::vector<uint8_t> bytes, scales;
};

// Random bytes of every kind (NaN and Inf patterns, subnormals, zero runs included), so that the
// conversion is compared on what the decoders make of arbitrary files, not only on tame values.
Source random_source(SourceTensor::Type type, mx8::io::GgmlType ggml, int64_t n, int64_t k,
                     std::mt19937& rng) {
  Source s;
  s.tensor.name = "blk.0.ffn_up.weight";
  s.tensor.type = type;
  s.tensor.ggml_type = ggml;
  s.tensor.shape = {n, k};
  size_t bytes = 0;
  switch (type) {
    case SourceTensor::Type::f32:
      bytes = size_t(n * k) * 4;
      break;
    case SourceTensor::Type::f16:
    case SourceTensor::Type::bf16:
      bytes = size_t(n * k) * 2;
      break;
    case SourceTensor::Type::e4m3:
      bytes = size_t(n * k);
      break;
    case SourceTensor::Type::ggml_blocks:
      bytes = size_t(n * k) / mx8::io::ggml_block_elems(ggml) * mx8::io::ggml_block_bytes(ggml);
      break;
  }
  s.bytes.resize(bytes);
  for (uint8_t& b : s.bytes) b = uint8_t(rng());
  // A zero run of one whole 128 x 128 block's first rows (an all-zero block once decoded, for the
  // source types whose zero is the zero byte).
  std::memset(s.bytes.data(), 0, bytes / 300);
  if (type == SourceTensor::Type::e4m3) {
    // Positive f32 scales between 2^-10 and 2^10, one per 128 x 128 block (DeepSeek's weight_scale_inv).
    const int64_t grid = ((n + 127) / 128) * ((k + 127) / 128);
    std::vector<float> f(static_cast<size_t>(grid));
    for (float& v : f) v = std::ldexp(1.0f + float(rng() % 1000) / 1000.0f, int(rng() % 20) - 10);
    s.scales.resize(f.size() * 4);
    std::memcpy(s.scales.data(), f.data(), s.scales.size());
    s.tensor.scales = s.scales.data();
  }
  s.tensor.data = s.bytes.data();
  return s;
}

// What the conversion must write: the reference conversion of the whole tensor widened to f32.
std::vector<uint8_t> expected(const SourceTensor& t, int64_t n, int64_t k, WeightFormat f, ScaleRule rule) {
  const std::vector<float> x = mx8::model::source_to_f32(t);
  std::vector<uint8_t> out;
  if (f == WeightFormat::f32) {
    out.resize(x.size() * 4);
    std::memcpy(out.data(), x.data(), out.size());
  } else if (f == WeightFormat::bf16) {
    out.resize(x.size() * 2);
    for (size_t i = 0; i < x.size(); ++i) {
      const uint16_t h = mx8::format::f32_to_bf16_rne(x[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  } else {
    mx8::format::QuantSpec spec;
    spec.rule = rule;
    spec.blocking =
        f == WeightFormat::mxfp8 ? mx8::format::Blocking::tile(32) : mx8::format::Blocking::block(128);
    spec.storage =
        rule == ScaleRule::fp32 ? mx8::format::ScaleStorage::f32 : mx8::format::ScaleStorage::ue8m0;
    const size_t codes = mx8::format::code_bytes(spec, n, k);
    out.resize(codes + mx8::format::scale_bytes(spec, n, k));
    mx8::format::quantize_ref(mx8::format::SourceType::f32, x.data(), n, k, spec, out.data(),
                              out.data() + codes);
  }
  return out;
}

std::vector<uint8_t> converted(const SourceTensor& t, int64_t n, int64_t k, WeightFormat f, ScaleRule rule) {
  const ScaleType st = rule == ScaleRule::fp32 ? ScaleType::f32 : ScaleType::ue8m0;
  const size_t data = mx8::backend::weight_data_bytes(f, n, k);
  std::vector<uint8_t> out(data + mx8::backend::weight_scale_bytes(f, st, n, k), 0xA5);  // poisoned
  mx8::model::convert_weight(t, n, k, f, rule, out.data(), out.data() + data);
  return out;
}

TEST(ConvertWeight, EverySourceTypeIntoEveryFormatEqualsTheWholeTensorConverted) {
  std::mt19937 rng(2026);
  const int64_t n = 300;
  struct Case {
    SourceTensor::Type type;
    mx8::io::GgmlType ggml;
    int64_t k;
  };
  const Case cases[] = {{SourceTensor::Type::f32, {}, 200},
                        {SourceTensor::Type::bf16, {}, 200},
                        {SourceTensor::Type::f16, {}, 200},
                        {SourceTensor::Type::e4m3, {}, 200},
                        {SourceTensor::Type::ggml_blocks, mx8::io::GgmlType::kQ8_0, 256},
                        {SourceTensor::Type::ggml_blocks, mx8::io::GgmlType::kQ4_K, 256}};
  const std::pair<WeightFormat, ScaleRule> targets[] = {
      {WeightFormat::f32, ScaleRule::ceil},       {WeightFormat::bf16, ScaleRule::ceil},
      {WeightFormat::fp8_block, ScaleRule::ceil}, {WeightFormat::fp8_block, ScaleRule::floor},
      {WeightFormat::fp8_block, ScaleRule::fp32}, {WeightFormat::mxfp8, ScaleRule::ceil}};
  for (const Case& c : cases) {
    const Source s = random_source(c.type, c.ggml, n, c.k, rng);
    for (const auto& [format, rule] : targets) {
      SCOPED_TRACE("source type " + std::to_string(int(c.type)) + ", format " + std::to_string(int(format)) +
                   ", rule " + std::to_string(int(rule)));
      const std::vector<uint8_t> want = expected(s.tensor, n, c.k, format, rule);
      const std::vector<uint8_t> got = converted(s.tensor, n, c.k, format, rule);
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size()), 0);
    }
  }
}

TEST(ConvertWeight, ADecoderErrorOnAPoolThreadReachesTheCaller) {
  // Rows of 48 values are not whole Q8_0 blocks of 32: the decoder throws inside a pool task, which
  // must come back as an error naming the tensor, not end the process.
  std::mt19937 rng(7);
  Source s = random_source(SourceTensor::Type::ggml_blocks, mx8::io::GgmlType::kQ8_0, 300, 64, rng);
  s.tensor.shape = {400, 48};
  std::vector<uint8_t> out(400 * 48 + 4 * 1);
  try {
    mx8::model::convert_weight(s.tensor, 400, 48, WeightFormat::fp8_block, ScaleRule::ceil, out.data(),
                               out.data() + 400 * 48);
    FAIL() << "expected an error";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.ffn_up.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Q8_0"), std::string::npos) << e.what();
  }
}

}  // namespace
