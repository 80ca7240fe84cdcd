// GGUF reader tests: the bundled stories260K model, hand-built files covering every value type,
// alignment and tensor type, and hostile/truncated inputs (every one must throw mx8::Error).
#include "mx8/io/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>

#include "mx8/error.h"

using namespace mx8::io;

namespace {

const std::string kStories = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

// Builds GGUF bytes field by field, so tests can make valid files and precisely broken ones.
struct Builder {
  std::vector<uint8_t> b;
  template <typename T>
  Builder& put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return *this;
  }
  Builder& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    put<uint32_t>(0x46554747u).put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
    return *this;
  }
  Builder& kv_u32(const std::string& k, uint32_t v) { return str(k).put<uint32_t>(4).put<uint32_t>(v); }
  Builder& tensor_info(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(ne.size());
    for (uint64_t d : ne) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  Builder& pad_to(size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
    return *this;
  }
  Builder& bytes(size_t n, uint8_t v = 0) {
    b.insert(b.end(), n, v);
    return *this;
  }
};

void expect_error(std::vector<uint8_t> bytes, const std::string& fragment) {
  try {
    GgufFile::from_bytes(std::move(bytes), "bad.gguf");
    FAIL() << "expected an mx8::Error containing '" << fragment << "'";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.gguf"), std::string::npos) << e.what();
  }
}

// A valid file: one F32 tensor of ne=[4,2] at offset 0.
std::vector<uint8_t> small_valid() {
  Builder g;
  g.header(1, 1).kv_u32("general.alignment", 32).tensor_info("w", {4, 2}, 0, 0).pad_to(32);
  for (int k = 0; k < 8; ++k) g.put<float>(float(k));
  return g.b;
}

}  // namespace

TEST(Gguf, Stories260KMetadataAndTensors) {
  GgufFile g = GgufFile::open(kStories);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.data_offset() % 32, 0u);
  EXPECT_EQ(g.require_string("general.architecture"), "llama");
  EXPECT_EQ(g.require_int("llama.embedding_length"), 64);
  EXPECT_EQ(g.require_int("llama.block_count"), 5);
  EXPECT_EQ(g.require_int("llama.attention.head_count"), 8);
  EXPECT_EQ(g.require_int("llama.attention.head_count_kv"), 4);
  EXPECT_EQ(g.require_int("llama.feed_forward_length"), 172);
  EXPECT_NEAR(g.require_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-10);
  const GgufValue& tokens = g.require_array("tokenizer.ggml.tokens", GgufValueType::kString);
  ASSERT_EQ(tokens.array_strings.size(), 512u);
  EXPECT_EQ(tokens.array_strings[0], "<unk>");
  EXPECT_EQ(tokens.array_strings[1], "<s>");
  EXPECT_EQ(tokens.array_strings[2], "</s>");
  const GgufValue& scores = g.require_array("tokenizer.ggml.scores", GgufValueType::kFloat32);
  EXPECT_EQ(scores.array_floats.size(), 512u);

  const GgufTensor& emb = g.require_tensor("token_embd.weight");
  EXPECT_EQ(emb.type, GgmlType::kF32);
  ASSERT_EQ(emb.ne.size(), 2u);
  EXPECT_EQ(emb.ne[0], 64u);   // row length (embedding dim) first
  EXPECT_EQ(emb.ne[1], 512u);  // vocab
  EXPECT_EQ(emb.shape(), (std::vector<uint64_t>{512, 64}));
  EXPECT_EQ(emb.n_bytes, 512u * 64u * 4u);
  const GgufTensor& ffn = g.require_tensor("blk.0.ffn_gate.weight");
  EXPECT_EQ(ffn.shape(), (std::vector<uint64_t>{172, 64}));
  // Every tensor's data lies inside the file, and the F32 values are finite and not all zero.
  uint64_t total = 0;
  for (const GgufTensor& t : g.tensors()) {
    EXPECT_NE(t.data, nullptr);
    EXPECT_LE(g.data_offset() + t.offset + t.n_bytes, g.file_size());
    total += t.n_elements;
    std::vector<float> v = gguf_tensor_to_f32(t);
    for (float x : v) ASSERT_TRUE(std::isfinite(x)) << t.name;
  }
  EXPECT_GT(total, 200000u);
  EXPECT_LT(total, 300000u);
  EXPECT_THROW(g.require_tensor("no.such.tensor"), mx8::Error);
  EXPECT_THROW(g.require_int("general.architecture"), mx8::Error);
  EXPECT_THROW(g.require_string("no.such.key"), mx8::Error);
}

TEST(Gguf, AllValueTypesRoundTrip) {
  Builder g;
  g.header(0, 14);
  g.str("u8").put<uint32_t>(0).put<uint8_t>(250);
  g.str("i8").put<uint32_t>(1).put<int8_t>(-5);
  g.str("u16").put<uint32_t>(2).put<uint16_t>(65000);
  g.str("i16").put<uint32_t>(3).put<int16_t>(-30000);
  g.str("u32").put<uint32_t>(4).put<uint32_t>(4000000000u);
  g.str("i32").put<uint32_t>(5).put<int32_t>(-2000000000);
  g.str("f32").put<uint32_t>(6).put<float>(1.5f);
  g.str("bool").put<uint32_t>(7).put<uint8_t>(1);
  g.str("s").put<uint32_t>(8).str("hello");
  g.str("u64").put<uint32_t>(10).put<uint64_t>(~uint64_t(0));
  g.str("i64").put<uint32_t>(11).put<int64_t>(-(int64_t(1) << 40));
  g.str("f64").put<uint32_t>(12).put<double>(-2.25);
  g.str("arr_s").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(2).str("a").str("");
  // Nested: an array of 2 arrays of int16.
  g.str("arr_arr").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(2);
  g.put<uint32_t>(3).put<uint64_t>(1).put<int16_t>(-7);
  g.put<uint32_t>(3).put<uint64_t>(2).put<int16_t>(8).put<int16_t>(9);
  GgufFile f = GgufFile::from_bytes(g.b);
  EXPECT_EQ(f.require_int("u8"), 250);
  EXPECT_EQ(f.require_int("i8"), -5);
  EXPECT_EQ(f.require_int("u16"), 65000);
  EXPECT_EQ(f.require_int("i16"), -30000);
  EXPECT_EQ(f.require_int("u32"), 4000000000LL);
  EXPECT_EQ(f.require_int("i32"), -2000000000);
  EXPECT_EQ(f.require_float("f32"), 1.5);
  EXPECT_TRUE(f.get_bool("bool", false));
  EXPECT_EQ(f.require_string("s"), "hello");
  EXPECT_EQ(f.find("u64")->u, ~uint64_t(0));
  EXPECT_THROW(f.require_int("u64"), mx8::Error);  // does not fit int64
  EXPECT_EQ(f.require_int("i64"), -(int64_t(1) << 40));
  EXPECT_EQ(f.require_float("f64"), -2.25);
  EXPECT_EQ(f.require_float("u32"), 4000000000.0);
  const GgufValue& as = f.require_array("arr_s", GgufValueType::kString);
  EXPECT_EQ(as.array_strings, (std::vector<std::string>{"a", ""}));
  const GgufValue& aa = f.require_array("arr_arr", GgufValueType::kArray);
  ASSERT_EQ(aa.array_arrays.size(), 2u);
  EXPECT_EQ(aa.array_arrays[0].array_ints, (std::vector<int64_t>{-7}));
  EXPECT_EQ(aa.array_arrays[1].array_ints, (std::vector<int64_t>{8, 9}));
  EXPECT_THROW(f.require_array("arr_s", GgufValueType::kInt32), mx8::Error);
  EXPECT_EQ(f.get_int("missing", 42), 42);
  EXPECT_EQ(f.get_string("missing", "x"), "x");
  EXPECT_EQ(f.metadata().size(), 14u);
  EXPECT_EQ(f.metadata()[0].first, "u8");
  EXPECT_TRUE(f.tensors().empty());
}

TEST(Gguf, AlignmentAndOffsets) {
  // Alignment 64, two tensors: F16 ne=[3] at 0, BF16 ne=[2,2] at 64.
  Builder g;
  g.header(2, 1).kv_u32("general.alignment", 64);
  g.tensor_info("a", {3}, 1, 0).tensor_info("b", {2, 2}, 30, 64).pad_to(64);
  size_t data_start = g.b.size();
  g.put<uint16_t>(0x3C00).put<uint16_t>(0xC000).put<uint16_t>(0x0001);  // 1, -2, 2^-24
  g.bytes(64 - 6);
  g.put<uint16_t>(0x3F80).put<uint16_t>(0x4040).put<uint16_t>(0xFF80).put<uint16_t>(0x0000);  // 1, 3, -inf, 0
  GgufFile f = GgufFile::from_bytes(g.b);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset(), data_start);
  std::vector<float> a = gguf_tensor_to_f32(f.require_tensor("a"));
  EXPECT_EQ(a, (std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24)}));
  std::vector<float> b = gguf_tensor_to_f32(f.require_tensor("b"));
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], 3.0f);
  EXPECT_EQ(b[2], -INFINITY);
  EXPECT_EQ(b[3], 0.0f);
  EXPECT_EQ(f.require_tensor("b").shape(), (std::vector<uint64_t>{2, 2}));
}

// The data section starts at the first multiple of the alignment at or after the tensor infos, for
// every remainder of their end: the name's length walks that end through all 32 of them.
TEST(Gguf, DataOffsetRoundsUpFromEveryRemainder) {
  for (size_t len = 1; len <= 32; ++len) {
    Builder g;
    g.header(1, 0).tensor_info(std::string(len, 'w'), {2}, 0, 0);
    const size_t end_of_infos = g.b.size();
    g.pad_to(32).put<float>(1.5f).put<float>(-3.0f);
    GgufFile f = GgufFile::from_bytes(g.b);
    EXPECT_EQ(f.data_offset(), (end_of_infos + 31) / 32 * 32) << len;
    EXPECT_EQ(gguf_tensor_to_f32(f.require_tensor(std::string(len, 'w'))), (std::vector<float>{1.5f, -3.0f}))
        << len;
  }
}

// Byte sizes per type: a tensor one byte short of its data is an error, so a wrong size in either
// direction is caught (too small would read past nothing here, too large rejects the exact file).
TEST(Gguf, EachTypesByteSizeBoundsItsData) {
  struct Case {
    uint32_t type;
    uint64_t elems;
    size_t bytes;
  };
  for (Case c : {Case{0, 4, 16}, Case{1, 4, 8}, Case{30, 4, 8}, Case{8, 64, 68}, Case{39, 64, 34}}) {
    for (size_t have : {c.bytes, c.bytes - 1}) {
      Builder g;
      g.header(1, 0).tensor_info("t", {c.elems}, c.type, 0).pad_to(32).bytes(have);
      if (have == c.bytes) {
        GgufFile f = GgufFile::from_bytes(g.b);
        EXPECT_EQ(f.require_tensor("t").n_bytes, c.bytes) << "type " << c.type;
      } else {
        expect_error(g.b, "runs past the end");
      }
    }
  }
}

// The array count's plausibility check counts 8 bytes (the length) per string: an array of empty
// strings that ends the file is exactly that long and must parse.
TEST(Gguf, ArrayOfEmptyStringsAtTheEndOfTheFile) {
  Builder g;
  g.header(0, 1).str("names").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(3).str("").str("").str("");
  GgufFile f = GgufFile::from_bytes(g.b);
  EXPECT_EQ(f.require_array("names", GgufValueType::kString).array_strings, std::vector<std::string>(3));
}

// Nine levels of arrays are allowed (the top level and eight nested), ten are not.
TEST(Gguf, ArrayNestingLimitIsExact) {
  auto nested = [](int levels) {
    Builder g;
    g.header(0, 1).str("k").put<uint32_t>(9);
    for (int k = 0; k < levels - 1; ++k) g.put<uint32_t>(9).put<uint64_t>(1);
    g.put<uint32_t>(4).put<uint64_t>(1).put<uint32_t>(7);
    return g.b;
  };
  GgufFile f = GgufFile::from_bytes(nested(9));
  const GgufValue* v = f.find("k");
  for (int k = 0; k < 8; ++k) {
    ASSERT_EQ(v->array_arrays.size(), 1u) << k;
    v = &v->array_arrays[0];
  }
  EXPECT_EQ(v->array_ints, (std::vector<int64_t>{7}));
  expect_error(nested(10), "nested");
}

// A moved-to file owns the bytes its tensors point into: the moved-from one may be destroyed.
TEST(Gguf, MovedFileOwnsItsBytes) {
  Builder g;
  // 256 KB, large enough that glibc usually maps it apart and unmaps it on free: a moved-to file that
  // still read the source's buffer would then crash here, and ASan (CI) reports it in any case.
  const uint64_t n = 1 << 16;
  g.header(1, 0).tensor_info("t", {n}, 0, 0).pad_to(32);
  for (uint64_t k = 0; k < n; ++k) g.put<float>(float(k));
  auto source = std::make_unique<GgufFile>(GgufFile::from_bytes(g.b, "moved.gguf"));
  GgufFile moved(std::move(*source));
  GgufFile assigned = GgufFile::from_bytes(small_valid());
  assigned = std::move(moved);
  source.reset();
  EXPECT_EQ(assigned.path(), "moved.gguf");
  std::vector<float> v = gguf_tensor_to_f32(assigned.require_tensor("t"));
  ASSERT_EQ(v.size(), n);
  for (uint64_t k = 0; k < n; k += 4099) EXPECT_EQ(v[k], float(k)) << k;
  EXPECT_EQ(v[n - 1], float(n - 1));
}

TEST(Gguf, Q8_0Dequantization) {
  Builder g;
  g.header(1, 0).tensor_info("q", {64}, 8, 0).pad_to(32);
  // Block 0: d = 0.5 (f16 0x3800), q = -32..-1; block 1: d = -2^-14 (0x8400), q = k*3 - 48 (wraps into int8).
  g.put<uint16_t>(0x3800);
  for (int k = 0; k < 32; ++k) g.put<int8_t>(int8_t(k - 32));
  g.put<uint16_t>(0x8400);
  for (int k = 0; k < 32; ++k) g.put<int8_t>(int8_t(k * 3 - 48));
  std::vector<float> v = gguf_tensor_to_f32(GgufFile::from_bytes(g.b).require_tensor("q"));
  for (int k = 0; k < 32; ++k) EXPECT_EQ(v[k], 0.5f * float(k - 32));
  for (int k = 0; k < 32; ++k) EXPECT_EQ(v[32 + k], -std::ldexp(1.0f, -14) * float(int8_t(k * 3 - 48)));
}

TEST(Gguf, Mxfp4Dequantization) {
  // Exponent bytes 128 (scale of doubled E2M1 = 2^0 / 2, i.e. E2M1 * 2^(e-127) = E2M1 * 2), 0 (subnormal
  // 2^-128) and 255. Nibble j of byte k: low -> element k, high -> element k + 16.
  const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  const int exps[3] = {128, 0, 255};
  Builder g;
  g.header(1, 0).tensor_info("m", {96}, 39, 0).pad_to(32);
  for (int e : exps) {
    g.put<uint8_t>(uint8_t(e));
    for (int k = 0; k < 16; ++k) g.put<uint8_t>(uint8_t(k | ((15 - k) << 4)));
  }
  std::vector<float> v = gguf_tensor_to_f32(GgufFile::from_bytes(g.b).require_tensor("m"));
  for (int b = 0; b < 3; ++b)
    for (int k = 0; k < 16; ++k) {
      // 2 * e2m1 * 2^(e-128) rather than e2m1 * 2^(e-127): 2^127 is the largest power of two in f32.
      EXPECT_EQ(v[b * 32 + k], 2 * e2m1[k] * std::ldexp(1.0f, exps[b] - 128)) << b << " " << k;
      EXPECT_EQ(v[b * 32 + 16 + k], 2 * e2m1[15 - k] * std::ldexp(1.0f, exps[b] - 128)) << b << " " << k;
    }
  EXPECT_EQ(v[32 + 1], std::ldexp(1.0f, -128));  // subnormal scale survives
  EXPECT_EQ(v[64 + 7], INFINITY);                // 12 * 2^127 overflows, as in ggml
}

// Tensors of no elements decode to nothing, whatever their type (gguf_fuzz found a memcpy into the
// null data() of the empty result; UBSan, which CI runs these tests under, reports it).
TEST(Gguf, EmptyTensorsDecodeToNothing) {
  for (uint32_t type : {0u, 1u, 8u, 12u, 30u}) {  // F32, F16, Q8_0, Q4_K, BF16
    Builder g;
    g.header(1, 0).tensor_info("e", {0, 4}, type, 0).pad_to(32);
    const GgufFile f = GgufFile::from_bytes(g.b);
    EXPECT_TRUE(gguf_tensor_to_f32(f.require_tensor("e")).empty()) << "type " << type;
  }
}

TEST(Gguf, RejectsBadHeaders) {
  expect_error({}, "truncated");
  expect_error({'G', 'G', 'U'}, "truncated");
  expect_error({'G', 'G', 'M', 'L', 3, 0, 0, 0}, "not a GGUF file");
  Builder v1;
  v1.header(0, 0, 1);
  expect_error(v1.b, "unsupported GGUF version 1");
  Builder huge_kv;
  huge_kv.header(0, uint64_t(1) << 62);
  expect_error(huge_kv.b, "metadata count");
  Builder huge_t;
  huge_t.header(uint64_t(1) << 62, 0);
  expect_error(huge_t.b, "tensor count");
}

TEST(Gguf, RejectsBadMetadata) {
  Builder long_key;
  long_key.header(0, 1).put<uint64_t>(~uint64_t(0)).bytes(16);
  expect_error(long_key.b, "absurd length");
  Builder short_key;
  short_key.header(0, 1).put<uint64_t>(100).bytes(10, 'a');
  expect_error(short_key.b, "truncated");
  Builder bad_type;
  bad_type.header(0, 1).str("k").put<uint32_t>(13).put<uint32_t>(0);
  expect_error(bad_type.b, "unknown value type 13");
  Builder bad_bool;
  bad_bool.header(0, 1).str("k").put<uint32_t>(7).put<uint8_t>(2);
  expect_error(bad_bool.b, "bool");
  Builder huge_array;  // 2^61 uint32 elements: must be rejected before any allocation
  huge_array.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(uint64_t(1) << 61);
  expect_error(huge_array.b, "does not fit");
  Builder overflow_array;  // count * 8 overflows u64
  overflow_array.header(0, 1).str("k").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(~uint64_t(0) / 4);
  expect_error(overflow_array.b, "does not fit");
  Builder deep;  // arrays nested 100 deep
  deep.header(0, 1).str("k").put<uint32_t>(9);
  for (int k = 0; k < 100; ++k) deep.put<uint32_t>(9).put<uint64_t>(1);
  expect_error(deep.b, "nested");
  Builder dup;
  dup.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
  expect_error(dup.b, "duplicate metadata key");
  Builder align;
  align.header(0, 1).kv_u32("general.alignment", 24);
  expect_error(align.b, "power-of-two");
  Builder align0;
  align0.header(0, 1).kv_u32("general.alignment", 0);
  expect_error(align0.b, "power-of-two");
}

TEST(Gguf, RejectsBadTensorInfos) {
  auto one = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data_bytes) {
    Builder g;
    g.header(1, 0).tensor_info("t", ne, type, offset).pad_to(32).bytes(data_bytes);
    return g.b;
  };
  expect_error(one({256}, 16, 0, 128), "ggml type IQ2_XXS (16), which mx8 does not read");  // named
  expect_error(one({4}, 99, 0, 64), "ggml type 99,");                           // not a ggml type at all
  expect_error(one({32}, 12, 0, 256), "not a multiple of the block size 256");  // Q4_K rows of 32
  expect_error(one({4}, 0, 0, 15), "runs past the end");                        // 16 bytes needed
  expect_error(one({4}, 0, 16, 64), "not a multiple of the alignment");
  expect_error(one({4}, 0, 32, 40), "runs past the end");
  expect_error(one({48}, 8, 0, 1000), "not a multiple of the block size");
  expect_error(one({1, 1, 1, 1, 1}, 0, 0, 64), "dimensions");
  expect_error(one({uint64_t(1) << 40, uint64_t(1) << 40}, 0, 0, 64), "overflows");
  expect_error(one({uint64_t(1) << 62, 2}, 0, 0, 64), "byte size that overflows");
  expect_error(one({~uint64_t(0)}, 0, 0, 64), "overflows");
  Builder no_data;  // tensor infos end where the file ends: data section missing
  no_data.header(1, 0).tensor_info("t", {4}, 0, 0);
  no_data.put<uint8_t>(0);
  expect_error(no_data.b, "");
  Builder dup;
  dup.header(2, 0).tensor_info("t", {4}, 0, 0).tensor_info("t", {4}, 0, 32).pad_to(32).bytes(64);
  expect_error(dup.b, "duplicate tensor name");
  Builder overlap;
  overlap.header(2, 0).tensor_info("a", {16}, 0, 0).tensor_info("b", {4}, 0, 32).pad_to(32).bytes(64);
  expect_error(overlap.b, "overlap");
}

TEST(Gguf, EveryTruncationOfAValidFileIsAnErrorNotACrash) {
  std::vector<uint8_t> good = small_valid();
  ASSERT_NO_THROW(GgufFile::from_bytes(good));
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + n);
    EXPECT_THROW(GgufFile::from_bytes(cut), mx8::Error) << "length " << n;
  }
}

TEST(Gguf, RandomByteCorruptionNeverCrashes) {
  // Flip random bytes of the real model's header region; each result must parse or throw mx8::Error.
  std::ifstream in(kStories, std::ios::binary);
  std::vector<uint8_t> orig((std::istreambuf_iterator<char>(in)), {});
  ASSERT_GT(orig.size(), 100000u);
  GgufFile ref = GgufFile::open(kStories);
  size_t header_end = ref.data_offset();
  std::mt19937_64 rng(1234);
  int errors = 0;
  for (int iter = 0; iter < 300; ++iter) {
    std::vector<uint8_t> bytes(orig.begin(), orig.begin() + std::min<size_t>(orig.size(), header_end + 4096));
    int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % header_end] = uint8_t(rng());
    try {
      GgufFile::from_bytes(std::move(bytes));
    } catch (const mx8::Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);  // the truncated data section alone makes most of them fail
}

TEST(Gguf, OpenMissingFileIsAClearError) {
  try {
    GgufFile::open("/nonexistent/x.gguf");
    FAIL();
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.gguf"), std::string::npos);
  }
}
