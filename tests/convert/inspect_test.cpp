// mx8 inspect: sizes against BF16/FP32, scale statistics and --compare errors, checked against
// numbers derived independently from the files and from the converter's own report.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>

#include "mx8/convert/convert.h"
#include "mx8/convert/inspect.h"
#include "mx8/io/safetensors.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using mx8::test::TempDir;

namespace {

const fs::path kLlama = fs::path(MX8_SOURCE_DIR) / "tests/data/hf/llama31_gqa";

}  // namespace

TEST(Inspect, SizesScalesAndCompareAgreeWithTheConversion) {
  if (!fs::exists(kLlama)) GTEST_SKIP() << kLlama << " is absent";
  TempDir tmp;
  const std::string out = (tmp.path / "ds").string();
  mx8::convert::ConvertOptions o;
  o.scheme = mx8::convert::Scheme::ds_fp8;
  o.stats = true;
  auto conv = mx8::convert::convert_checkpoint(kLlama.string(), out, o);
  auto r = mx8::convert::inspect_checkpoint(out, kLlama.string(), 2);

  // Totals from the file itself: every tensor's bytes; BF16/FP32 at 2/4 bytes per logical value
  // (the fixture is all real-valued).
  auto m = mx8::io::SafetensorsModel::open(out);
  uint64_t bytes = 0, values = 0;
  for (const auto& [name, t] : m.tensors()) {
    bytes += t->nbytes();
    if (name.find("_scale_inv") == std::string::npos) values += static_cast<uint64_t>(t->numel());
  }
  EXPECT_EQ(r.bytes, bytes);
  EXPECT_EQ(r.bf16_bytes, 2 * values);
  EXPECT_EQ(r.f32_bytes, 4 * values);
  ASSERT_EQ(r.tensors.size(), 21u);  // scales are reported with their weights

  int quantized = 0;
  for (const auto& t : r.tensors) {
    const mx8::convert::TensorReport* c = nullptr;
    for (const auto& x : conv.tensors)
      if (x.name == t.name) c = &x;
    ASSERT_NE(c, nullptr) << t.name;
    ASSERT_TRUE(t.compared) << t.name << ": " << t.compare_note;
    if (!t.quantized) {
      EXPECT_TRUE(std::isinf(t.sqnr_db)) << t.name;  // kept tensors are exact
      continue;
    }
    ++quantized;
    // One 128x128 block (the fixture's matrices are at most 128 wide): one scale, a power of two.
    EXPECT_EQ(t.scales, 1);
    EXPECT_EQ(t.nonpow2_scales, 0);
    int64_t hist = 0;
    for (const auto& [e, n] : t.scale_exponents) hist += n;
    EXPECT_EQ(hist, t.scales);
    EXPECT_EQ(t.codes, t.numel);
    // Inspect's comparison and the converter's own measurement are two computations of one number.
    EXPECT_NEAR(t.sqnr_db, c->sqnr_db, 1e-9) << t.name;
    EXPECT_DOUBLE_EQ(t.max_abs_err, c->max_abs_err) << t.name;
    EXPECT_NEAR(t.rel_err, std::pow(10.0, -t.sqnr_db / 20), 1e-12) << t.name;
  }
  EXPECT_EQ(quantized, 14);
}

TEST(Inspect, SaturationCountsCodesAtTheFormatMax) {
  if (!fs::exists(kLlama)) GTEST_SKIP() << kLlama << " is absent";
  TempDir tmp;
  // floor saturates the blocks whose maximum has a large significand; ceil never does.
  for (auto rule : {mx8::format::ScaleRule::ceil, mx8::format::ScaleRule::floor}) {
    const std::string out = (tmp.path / mx8::format::scale_rule_name(rule)).string();
    mx8::convert::ConvertOptions o;
    o.scheme = mx8::convert::Scheme::mxfp8;
    o.rule = rule;
    mx8::convert::convert_checkpoint(kLlama.string(), out, o);
    auto r = mx8::convert::inspect_checkpoint(out, std::nullopt, 1);
    auto m = mx8::io::SafetensorsModel::open(out);
    for (const auto& t : r.tensors) {
      if (!t.quantized) continue;
      const auto& w = m.get(t.name);
      int64_t at_max = 0;
      for (size_t i = 0; i < w.nbytes(); ++i) at_max += (w.data[i] & 0x7F) == 0x7E;
      EXPECT_EQ(t.saturated, at_max) << t.name;
    }
  }
}

// The scale statistics of every scheme, recomputed from the written scale tensors: the exponent
// histogram (UE8M0 bytes minus 127; float32 scales by their binary exponent), the scales that are
// not powers of two (only the fp32 rule makes them), and the codes at the format's largest magnitude
// (E4M3 0x7E/0xFE; E2M1 nibbles 7/15, two per byte).
TEST(Inspect, ScaleHistogramsAndSaturationOfEveryScheme) {
  if (!fs::exists(kLlama)) GTEST_SKIP() << kLlama << " is absent";
  using mx8::convert::Scheme;
  using mx8::format::ScaleRule;
  TempDir tmp;
  const std::pair<Scheme, ScaleRule> cases[] = {{Scheme::ds_fp8, ScaleRule::ceil},
                                                {Scheme::ds_fp8, ScaleRule::fp32},
                                                {Scheme::mxfp8, ScaleRule::floor},
                                                {Scheme::mxfp4, ScaleRule::ceil}};
  for (const auto& [scheme, rule] : cases) {
    const std::string label = std::string(mx8::convert::scheme_name(scheme)) + "/" + scale_rule_name(rule);
    const std::string out =
        (tmp.path / (std::string(mx8::convert::scheme_name(scheme)) + scale_rule_name(rule))).string();
    mx8::convert::ConvertOptions o;
    o.scheme = scheme;
    o.rule = rule;
    mx8::convert::convert_checkpoint(kLlama.string(), out, o);
    auto r = mx8::convert::inspect_checkpoint(out, std::nullopt, 1);
    auto m = mx8::io::SafetensorsModel::open(out);
    int64_t all_nonpow2 = 0, quantized = 0;
    for (const auto& t : r.tensors) {
      if (!t.quantized) continue;
      ++quantized;
      const std::string stem = t.name.substr(0, t.name.size() - std::string(".weight").size());
      const auto& s = m.get(stem + (scheme == Scheme::ds_fp8 ? ".weight_scale_inv" : ".weight_scale"));
      std::map<int, int64_t> hist;
      int64_t nonpow2 = 0;
      if (s.dtype() == mx8::io::DType::F32) {
        for (size_t i = 0; i < s.nbytes() / 4; ++i) {
          float v;
          std::memcpy(&v, s.data + 4 * i, 4);
          int e;
          const float f = std::frexp(v, &e);  // v = f 2^e, f in [0.5, 1)
          hist[e - 1]++;
          nonpow2 += f != 0.5f;
        }
      } else {
        ASSERT_EQ(s.dtype(), mx8::io::DType::F8_E8M0) << label;
        for (size_t i = 0; i < s.nbytes(); ++i) hist[int(s.data[i]) - 127]++;
      }
      EXPECT_EQ(t.scale_exponents, hist) << label << " " << t.name;
      EXPECT_EQ(t.scales, int64_t(s.numel())) << label << " " << t.name;
      EXPECT_EQ(t.nonpow2_scales, nonpow2) << label << " " << t.name;
      all_nonpow2 += nonpow2;
      const auto& w = m.get(t.name);
      std::vector<int64_t> logical = w.shape();  // MXFP4 stores two codes a byte: the report's is the model's
      if (scheme == Scheme::mxfp4) logical.back() *= 2;
      EXPECT_EQ(t.shape, logical) << label << " " << t.name;
      int64_t at_max = 0;
      for (size_t i = 0; i < w.nbytes(); ++i)
        at_max += scheme == Scheme::mxfp4 ? ((w.data[i] & 7) == 7) + ((w.data[i] >> 4 & 7) == 7)
                                          : (w.data[i] & 0x7F) == 0x7E;
      EXPECT_EQ(t.saturated, at_max) << label << " " << t.name;
      EXPECT_EQ(t.codes, int64_t(w.nbytes()) * (scheme == Scheme::mxfp4 ? 2 : 1)) << label << " " << t.name;
    }
    EXPECT_EQ(quantized, 14) << label;
    // Without these the checks above could pass on a report of nothing but powers of two.
    if (rule == ScaleRule::fp32) {
      EXPECT_GT(all_nonpow2, 0) << label;
    }
  }
}
