// mx8's GGUF block decoders against ggml's own: tests/data/ggml/dequant.bin holds, for every tensor
// type mx8 reads, blocks written by ggml's reference quantizer and blocks of random bytes, with the
// f32 values ggml's decoder (libggml-base.so of a released llama.cpp) gives for them
// (scripts/make_ggml_fixtures.py; docs/FIXTURES.md). Every value must match bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>

#include "mx8/error.h"
#include "mx8/io/gguf.h"

using namespace mx8::io;

namespace {

struct Record {
  uint32_t type = 0, case_kind = 0;
  std::vector<uint8_t> blocks;
  std::vector<float> values;
};

std::vector<Record> read_fixture() {
  const std::string path = std::string(MX8_SOURCE_DIR) + "/tests/data/ggml/dequant.bin";
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t at = 0;
  auto u32 = [&]() {
    if (at + 4 > b.size()) throw mx8::Error(path + ": truncated");
    uint32_t v;
    std::memcpy(&v, b.data() + at, 4);
    at += 4;
    return v;
  };
  if (b.size() < 16 || std::memcmp(b.data(), "MX8GGMLD", 8) != 0)
    throw mx8::Error(path + ": missing or not a fixture");
  at = 8;
  if (u32() != 1) throw mx8::Error(path + ": unknown version");
  std::vector<Record> out(u32());
  for (Record& r : out) {
    r.type = u32();
    r.case_kind = u32();
    const uint32_t n = u32(), nbytes = u32();
    if (at + nbytes + 4ull * n > b.size()) throw mx8::Error(path + ": truncated");
    r.blocks.assign(b.begin() + long(at), b.begin() + long(at + nbytes));
    at += nbytes;
    r.values.resize(n);
    std::memcpy(r.values.data(), b.data() + at, 4ull * n);
    at += 4ull * n;
  }
  return out;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Equal bits, except for two freedoms of NaNs. A signaling NaN equals its quiet form: ggml widens F16
// through the CPU's conversion, which sets the quiet bit (0x00400000) of a signaling NaN; mx8's
// f16_to_f32 keeps the pattern as stored (format/common.h). And the sign of a NaN that arithmetic
// made (a block type's NaN scale times its quants) may differ: IEEE 754 leaves it unspecified, and
// AArch64 gives +NaN where x86-64, on which the fixture was recorded, gives -NaN (Q5_K under
// qemu-aarch64). The payload must still agree.
bool same_value(float a, float b) {
  const uint32_t x = bits(a), y = bits(b);
  if (x == y) return true;
  constexpr uint32_t kIgnored = 0x80400000u;  // sign and quiet bit
  return std::isnan(a) && std::isnan(b) && (x | kIgnored) == (y | kIgnored);
}

}  // namespace

TEST(GgufGgmlReference, EveryDecoderEqualsGgmlBitForBit) {
  const std::vector<Record> records = read_fixture();
  std::set<uint32_t> seen_quantized, seen_random;
  for (const Record& r : records) {
    ASSERT_TRUE(ggml_type_supported(r.type)) << ggml_type_label(r.type);
    const GgmlType t = GgmlType(r.type);
    const char* kind = r.case_kind == 0 ? "quantizer output" : "random bytes";
    // The fixture's byte count is ggml's block size; ours must agree or the file offsets are wrong.
    ASSERT_EQ(r.values.size() / ggml_block_elems(t) * ggml_block_bytes(t), r.blocks.size())
        << ggml_type_name(t);
    std::vector<float> got(r.values.size());
    ggml_dequantize(t, r.blocks.data(), got.data(), got.size());
    int mismatches = 0;
    for (size_t k = 0; k < got.size() && mismatches < 5; ++k)
      if (!same_value(got[k], r.values[k])) {
        ++mismatches;
        ADD_FAILURE() << ggml_type_name(t) << " " << kind << " value " << k << ": mx8 " << got[k] << " (0x"
                      << std::hex << bits(got[k]) << "), ggml " << r.values[k] << " (0x" << bits(r.values[k])
                      << ")" << std::dec;
      }
    (r.case_kind == 0 ? seen_quantized : seen_random).insert(r.type);
  }
  // Every type mx8 decodes is in the fixture (random bytes for all; quantizer output where ggml has
  // a reference quantizer, which is every type here but F32, whose decoder is a copy).
  for (uint32_t t = 0; t < 64; ++t)
    if (ggml_type_supported(t) && t != uint32_t(GgmlType::kF32)) {
      EXPECT_TRUE(seen_random.count(t)) << ggml_type_label(t) << " has no random-bytes case";
      EXPECT_TRUE(seen_quantized.count(t)) << ggml_type_label(t) << " has no quantizer case";
    }
}
