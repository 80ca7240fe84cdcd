// The safetensors reader against hand-built files: good ones read back exactly, and every kind of
// bad, truncated or hostile file is rejected with an mx8::Error that says what is wrong.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "mx8/error.h"
#include "mx8/io/hf_config.h"
#include "mx8/io/safetensors.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using mx8::io::DType;
using mx8::io::parse_safetensors;
using mx8::test::TempDir;

namespace {

// A file image from a literal header (padded with spaces to 8 bytes, as the reference does) and data.
std::vector<uint8_t> image(const std::string& header, const std::vector<uint8_t>& data, bool pad = true) {
  std::string h = header;
  if (pad)
    while (h.size() % 8) h += ' ';
  std::vector<uint8_t> out(8);
  out.reserve(8 + h.size() + data.size());  // no reallocation: GCC 12's -Warray-bounds misreads one
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + 1);
  return v;
}

// Expects parse_safetensors to throw mx8::Error whose message contains `needle`.
void expect_reject(const std::vector<uint8_t>& file, const std::string& needle) {
  try {
    parse_safetensors(file, "t.safetensors");
    FAIL() << "accepted a bad file; expected an error containing: " << needle;
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message was: " << e.what();
    EXPECT_NE(std::string(e.what()).find("t.safetensors"), std::string::npos) << "message must name the file";
  }
}

// The shared temporary folder, with writers of the files the tests parse.
struct TempFiles : TempDir {
  std::string file(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::ofstream out(path / name, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return (path / name).string();
  }
  std::string text(const std::string& name, const std::string& s) const {
    std::ofstream out(path / name, std::ios::binary);
    out << s;
    return (path / name).string();
  }
};

const std::string kTwo =
    R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
    R"("a":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})";

}  // namespace

TEST(SafetensorsReader, ReadsGoodFile) {
  auto data = iota_bytes(32);
  TempFiles dir;
  auto path = dir.file("m.safetensors", image(kTwo, data));
  auto f = mx8::io::SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const auto& b = f.get("b");
  EXPECT_EQ(b.dtype(), DType::F32);
  EXPECT_EQ(b.shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b.numel(), 6);
  ASSERT_EQ(b.nbytes(), 24u);
  EXPECT_EQ(std::memcmp(b.data, data.data(), 24), 0);
  const auto& a = f.get("a");
  EXPECT_EQ(a.dtype(), DType::BF16);
  EXPECT_EQ(std::memcmp(a.data, data.data() + 24, 8), 0);
  EXPECT_EQ(f.tensors()[0].name(), "b");  // file order is offset order
  EXPECT_EQ(f.find("c"), nullptr);
  EXPECT_THROW(f.get("c"), mx8::Error);
}

TEST(SafetensorsReader, AllDtypesAndScalarsAndEmptyTensors) {
  struct Case {
    const char* name;
    size_t size;
  } cases[] = {{"F64", 8},     {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
               {"F8_E8M0", 1}, {"I8", 1},  {"U8", 1},  {"I16", 2},  {"U16", 2},     {"I32", 4},
               {"U32", 4},     {"I64", 8}, {"U64", 8}, {"BOOL", 1}};
  for (const auto& c : cases) {
    auto d = mx8::io::parse_dtype(c.name);
    ASSERT_TRUE(d) << c.name;
    EXPECT_EQ(mx8::io::dtype_size(*d), c.size) << c.name;
    EXPECT_EQ(mx8::io::dtype_name(*d), c.name);
    // A scalar (shape []), a zero-size tensor and a 2-D one, in one file.
    std::string h = std::string("{\"s\":{\"dtype\":\"") + c.name + "\",\"shape\":[],\"data_offsets\":[0," +
                    std::to_string(c.size) + "]},\"z\":{\"dtype\":\"" + c.name +
                    "\",\"shape\":[0,5],\"data_offsets\":[" + std::to_string(c.size) + "," +
                    std::to_string(c.size) + "]},\"m\":{\"dtype\":\"" + c.name +
                    "\",\"shape\":[2,2],\"data_offsets\":[" + std::to_string(c.size) + "," +
                    std::to_string(5 * c.size) + "]}}";
    auto hdr = parse_safetensors(image(h, iota_bytes(5 * c.size)), "t");
    ASSERT_EQ(hdr.tensors.size(), 3u) << c.name;
    EXPECT_EQ(hdr.tensors[0].name, "s");
    EXPECT_EQ(hdr.tensors[0].numel(), 1);
    EXPECT_EQ(hdr.tensors[1].numel(), 0);
  }
  EXPECT_FALSE(mx8::io::parse_dtype("F4"));
  EXPECT_FALSE(mx8::io::parse_dtype("f32"));
}

TEST(SafetensorsReader, EmptyHeaderIsAValidEmptyFile) {
  auto h = parse_safetensors(image("{}", {}), "t");
  EXPECT_TRUE(h.tensors.empty());
  EXPECT_EQ(h.data_start, 16u);
}

TEST(SafetensorsReader, RejectsBadLengthPrefix) {
  expect_reject({1, 2, 3}, "fewer than the 8-byte");
  std::vector<uint8_t> huge(16, 0);
  huge[7] = 0x80;  // 2^63
  expect_reject(huge, "exceeds the 100 MB limit");
  std::vector<uint8_t> over(16, 0);
  over[0] = 100;  // claims 100 header bytes, 8 follow
  expect_reject(over, "truncated");
  std::vector<uint8_t> zero(16, ' ');
  std::memset(zero.data(), 0, 8);
  expect_reject(zero, "does not start with '{'");
}

TEST(SafetensorsReader, RejectsBadJson) {
  expect_reject(image("{\"a\":", {}), "not valid JSON");
  expect_reject(image("{\"a\":{}} x", {}), "not valid JSON");
  expect_reject(image(std::string("{}\0\0\0\0\0\0", 8), {}, false), "not valid JSON");  // NUL padding
  expect_reject(image("[1,2]", {}), "does not start with '{'");
  expect_reject(image("{\"a\":\"\xff\xfe\"}", {}), "not valid JSON");  // invalid UTF-8
  expect_reject(image(R"({"a":{"dtype":"F32","shape":[[[1]]],"data_offsets":[0,4]}})", {}), "nests deeper");
}

TEST(SafetensorsReader, RejectsDuplicateKeys) {
  expect_reject(
      image(
          R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
          {1, 2}),
      "twice");
  expect_reject(image(R"({"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", {1}), "twice");
}

TEST(SafetensorsReader, RejectsBadEntries) {
  auto e = [](const std::string& body, size_t data = 4) {
    return image("{\"t\":" + body + "}", iota_bytes(data));
  };
  expect_reject(e("3"), "not an object");
  expect_reject(e(R"({"dtype":"F31","shape":[1],"data_offsets":[0,4]})"), "unsupported dtype");
  expect_reject(e(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})"), "dtype is not a string");
  expect_reject(e(R"({"shape":[1],"data_offsets":[0,4]})"), "lacks dtype");
  expect_reject(e(R"({"dtype":"F32","data_offsets":[0,4]})"), "lacks shape");
  expect_reject(e(R"({"dtype":"F32","shape":[1]})"), "lacks data_offsets");
  expect_reject(e(R"({"dtype":"F32","shape":[-1],"data_offsets":[0,4]})"), "not a non-negative integer");
  expect_reject(e(R"({"dtype":"F32","shape":[1.0],"data_offsets":[0,4]})"), "not a non-negative integer");
  expect_reject(e(R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})"), "shape is not an array");
  expect_reject(e(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})"), "not [begin, end]");
  expect_reject(e(R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})"), "begin 4 > end 0");
  expect_reject(e(R"({"dtype":"F32","shape":[1],"data_offsets":[0,"4"]})"), "not non-negative integers");
  expect_reject(e(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})"),
                "needs 8 bytes but data_offsets give 4");
  expect_reject(e(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1})"), "unexpected key");
  // 2^32 * 2^32 * 4 overflows 64 bits; the reader must notice rather than wrap to a small size.
  expect_reject(e(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]})"), "overflows");
  expect_reject(e(R"({"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]})"),
                "not a non-negative integer");
  expect_reject(e(R"({"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]})"), "needs 4 bytes");
  expect_reject(image(R"({"__metadata__":{"k":1}})", {}), "is not a string");
  expect_reject(image(R"({"__metadata__":[]})", {}), "__metadata__ is not an object");
}

TEST(SafetensorsReader, RejectsGapsOverlapsAndTruncation) {
  const std::string a = R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]})";
  expect_reject(image("{" + a + R"(,"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", iota_bytes(8)),
                "overlaps");
  expect_reject(image("{" + a + R"(,"b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}})", iota_bytes(10)),
                "gap");
  expect_reject(image(R"({"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", iota_bytes(6)), "gap");
  expect_reject(image("{" + a + "}", iota_bytes(3)), "truncated");
  expect_reject(image("{" + a + "}", iota_bytes(5)), "after the last tensor");
  // Every prefix of a good file is rejected cleanly.
  auto good = image(kTwo, iota_bytes(32));
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> prefix(good.begin(), good.begin() + n);
    EXPECT_THROW(parse_safetensors(prefix, "t"), mx8::Error) << "prefix of " << n << " bytes";
  }
}

TEST(SafetensorsReader, OpenReportsMissingFile) {
  try {
    mx8::io::SafetensorsFile::open("/nonexistent/x.safetensors");
    FAIL();
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.safetensors"), std::string::npos);
  }
}

TEST(SafetensorsModel, SingleFileAndFolder) {
  TempFiles dir;
  dir.file("model.safetensors", image(kTwo, iota_bytes(32)));
  EXPECT_TRUE(mx8::io::is_safetensors_checkpoint(dir.path.string()));
  auto m = mx8::io::SafetensorsModel::open(dir.path.string());
  EXPECT_EQ(m.tensors().size(), 2u);
  EXPECT_EQ(m.get("a").nbytes(), 8u);
  auto m2 = mx8::io::SafetensorsModel::open((dir.path / "model.safetensors").string());
  EXPECT_EQ(m2.tensors().size(), 2u);
  auto moved = std::move(m2);
  EXPECT_EQ(moved.get("b").numel(), 6);
  try {
    mx8::io::SafetensorsModel::open((dir.path / "absent").string());
    ADD_FAILURE() << "opened a path that does not exist";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent: no such file or folder"), std::string::npos) << e.what();
  }
  // The folder the files are in (error messages name it; the converter reads config.json there).
  EXPECT_EQ(m.folder(), dir.path.string());
  EXPECT_EQ(moved.folder(), dir.path.string());
  EXPECT_EQ(moved.find("c"), nullptr);
  try {
    moved.get("c");
    ADD_FAILURE() << "a missing tensor was returned";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path.string() + ": checkpoint has no tensor named \"c\""),
              std::string::npos)
        << e.what();
  }
}

TEST(SafetensorsModel, ShardedWithIndex) {
  TempFiles dir;
  dir.file("model-00001-of-00002.safetensors",
           image(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {5, 6}));
  dir.file("model-00002-of-00002.safetensors",
           image(R"({"y":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}})", {7, 8}));
  dir.text(
      "model.safetensors.index.json",
      R"({"metadata":{"total_size":4},"weight_map":{"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors"}})");
  auto m = mx8::io::SafetensorsModel::open(dir.path.string());
  ASSERT_EQ(m.shards().size(), 2u);
  EXPECT_EQ(m.get("x").data[1], 6);
  EXPECT_EQ(m.get("y").data[0], 7);
  EXPECT_EQ(m.shard_of("y"), 1u);
  EXPECT_EQ(m.metadata().at("total_size"), "4");
  EXPECT_EQ(m.total_tensor_bytes(), 4u);
}

TEST(SafetensorsModel, RejectsInconsistentIndex) {
  auto expect_msg = [](const std::string& path, const std::string& needle) {
    try {
      mx8::io::SafetensorsModel::open(path);
      FAIL() << "accepted; expected " << needle;
    } catch (const mx8::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TempFiles dir;
  dir.file("s1.safetensors", image(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {5, 6}));
  auto idx = [&](const std::string& body) { dir.text("model.safetensors.index.json", body); };
  idx(R"({"weight_map":{"x":"s1.safetensors","z":"s1.safetensors"}})");
  expect_msg(dir.path.string(), "lacks it");
  idx(R"({"weight_map":{}})");
  expect_msg(dir.path.string(), "weight_map is empty");
  idx(R"({"weight_map":{"x":"../s1.safetensors"}})");
  expect_msg(dir.path.string(), "not a plain file name");
  idx(R"({"weight_map":{"x":"/etc/passwd"}})");
  expect_msg(dir.path.string(), "not a plain file name");
  idx(R"({"weight_map":{"x":"missing.safetensors"}})");
  expect_msg(dir.path.string(), "missing.safetensors");
  idx(R"({"weight_map":)");
  expect_msg(dir.path.string(), "not valid JSON");
  dir.file("s2.safetensors", image(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {5, 6}));
  idx(R"({"weight_map":{"x":"s2.safetensors","y":"s1.safetensors"}})");
  expect_msg(dir.path.string(), "lacks it");
  fs::remove(dir.path / "model.safetensors.index.json");
  expect_msg(dir.path.string(), "neither");
}

TEST(HfConfig, ParsesLlamaAndV5RopeAndQuantConfig) {
  auto c = mx8::io::HfConfig::from_json(nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4,
    "vocab_size": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "torch_dtype": "float32",
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0}, "rope_theta": 500000.0,
    "eos_token_id": [1, 2], "bos_token_id": 0,
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
      "weight_block_size": [128, 128], "activation_scheme": "dynamic"}})"),
                                        "c");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling["rope_type"], "llama3");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(c.tie_word_embeddings);
  ASSERT_TRUE(c.quantization);
  EXPECT_EQ(c.quantization->scale_fmt, "ue8m0");
  EXPECT_EQ(c.quantization->weight_block_size, (std::vector<int64_t>{128, 128}));

  auto q = mx8::io::HfConfig::from_json(nlohmann::json::parse(R"({"model_type":"qwen2","hidden_size":32,
    "num_attention_heads":4,"dtype":"bfloat16","rope_parameters":{"rope_type":"default","rope_theta":1000000.0}})"),
                                        "q");
  EXPECT_EQ(q.num_key_value_heads, 4);
  EXPECT_EQ(q.rope_theta, 1000000.0);
  EXPECT_TRUE(q.rope_scaling.is_null());
  EXPECT_TRUE(q.qkv_bias());
  EXPECT_EQ(q.dtype, "bfloat16");
  EXPECT_THROW(mx8::io::HfConfig::from_json(nlohmann::json::parse(R"({"hidden_size":"x"})"), "c"),
               mx8::Error);
  EXPECT_THROW(mx8::io::HfConfig::load("/nonexistent"), mx8::Error);
  // Wrongly typed optional fields are ignored, never a non-mx8 exception.
  auto odd = mx8::io::HfConfig::from_json(
      nlohmann::json::parse(R"({"tie_word_embeddings":1,"use_sliding_window":"no","sliding_window":4})"),
      "c");
  EXPECT_FALSE(odd.tie_word_embeddings);
  EXPECT_EQ(odd.sliding_window, 4);
}

// A sliding window applies to every layer or to none: transformers' layer_types, or Qwen2/Qwen3's
// max_window_layers (layers from it on slide), decide which; a mix is an error that says so.
TEST(HfConfig, SlidingWindowLayers) {
  auto parse = [](const std::string& extra) {
    return mx8::io::HfConfig::from_json(
        nlohmann::json::parse(R"({"model_type":"qwen2","num_hidden_layers":4,"sliding_window":64,)" + extra +
                              "}"),
        "cfg");
  };
  EXPECT_EQ(parse(R"("use_sliding_window":true,"max_window_layers":4)").sliding_window.value_or(0),
            0);  // none slides
  EXPECT_EQ(parse(R"("use_sliding_window":true,"max_window_layers":0)").sliding_window.value_or(0),
            64);  // all slide
  EXPECT_EQ(parse(R"("use_sliding_window":false,"max_window_layers":0)").sliding_window.value_or(0), 0);
  EXPECT_EQ(parse(R"("max_window_layers":0)").sliding_window.value_or(0), 0);  // Qwen's default: off
  EXPECT_EQ(
      parse(
          R"("use_sliding_window":true,"layer_types":["sliding_attention","sliding_attention","sliding_attention","sliding_attention"])")
          .sliding_window.value_or(0),
      64);
  EXPECT_EQ(
      parse(
          R"("use_sliding_window":true,"layer_types":["full_attention","full_attention","full_attention","full_attention"])")
          .sliding_window.value_or(0),
      0);
  auto message = [&](const std::string& extra) {
    try {
      parse(extra);
    } catch (const mx8::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(R"("use_sliding_window":true,"max_window_layers":3)").find("1 of 4 layers"),
            std::string::npos);
  EXPECT_NE(
      message(
          R"("use_sliding_window":true,"layer_types":["full_attention","sliding_attention","full_attention","sliding_attention"])")
          .find("2 of 4 layers"),
      std::string::npos);
  EXPECT_NE(
      message(
          R"("use_sliding_window":true,"layer_types":["chunked_attention","full_attention","full_attention","full_attention"])")
          .find("layer type 'chunked_attention'"),
      std::string::npos);
}

// weight_block_size is a divisor for every reader of block scales: anything but two integers in
// range is an error naming the config and the field when config.json is read, never a division by
// zero or a nonsense grid later.
TEST(HfConfig, WeightBlockSizeMustBeTwoSanePositiveIntegers) {
  auto parse = [](const std::string& block) {
    return mx8::io::HfConfig::from_json(
        nlohmann::json::parse(R"({"quantization_config":{"quant_method":"fp8","weight_block_size":)" + block +
                              "}}"),
        "dir/config.json");
  };
  EXPECT_EQ(parse("[128, 128]").quantization->weight_block_size, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(parse("[1, 65536]").quantization->weight_block_size,
            (std::vector<int64_t>{1, 65536}));                         // both ends of the accepted range
  EXPECT_TRUE(parse("null").quantization->weight_block_size.empty());  // null reads as absent
  for (const char* bad : {"[0, 128]", "[0, 0]", "[128, 0]", "[-128, 128]", "[1e30, 128]", "[128.5, 128]",
                          "[128.0, 128]", "\"x\"", "[]", "[128]", "[128, 128, 128]", "[\"128\", 128]",
                          "[65537, 128]", "[18446744073709551615, 128]", "[true, 128]", "{}"}) {
    try {
      parse(bad);
      ADD_FAILURE() << "accepted weight_block_size " << bad;
    } catch (const mx8::Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("dir/config.json"), std::string::npos) << m;
      EXPECT_NE(m.find("weight_block_size"), std::string::npos) << m;
    }
  }
}

// JSON text ends where the file ends: a NUL byte and junk after a valid object (which nlohmann's
// lexer would take for the end of input) make config.json and the shard index errors.
TEST(HfConfig, JsonFilesWithTrailingBytesAreRejected) {
  TempFiles dir;
  const std::string good = R"({"model_type":"llama","hidden_size":64})";
  dir.text("config.json", good);
  EXPECT_EQ(mx8::io::HfConfig::load(dir.path.string()).hidden_size, 64);
  dir.text("config.json", good + std::string(1, '\0') + "junk");
  try {
    mx8::io::HfConfig::load(dir.path.string());
    ADD_FAILURE() << "accepted a config.json with a NUL byte and junk after the JSON";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
  dir.file("s1.safetensors", image(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {5, 6}));
  const std::string index = R"({"weight_map":{"x":"s1.safetensors"}})";
  dir.text("model.safetensors.index.json", index);
  EXPECT_EQ(mx8::io::SafetensorsModel::open(dir.path.string()).tensors().size(), 1u);
  dir.text("model.safetensors.index.json", index + std::string(1, '\0') + "junk");
  EXPECT_THROW(mx8::io::SafetensorsModel::open(dir.path.string()), mx8::Error);
}

// An index that lists no tensor of one shard (say, the shard that holds lm_head alone) would make that
// shard's tensors vanish without a word: a file of the listed shards' series must be listed. Files of
// another naming (Mistral ships consolidated.safetensors beside its shards) are not the index's.
TEST(SafetensorsModel, AShardLeftOutOfTheIndexIsAnError) {
  TempFiles dir;
  dir.file("model-00001-of-00002.safetensors",
           image(R"({"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {5, 6}));
  dir.file("model-00002-of-00002.safetensors",
           image(R"({"lm_head.weight":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {7, 8}));
  dir.file("consolidated.safetensors",
           image(R"({"output.weight":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {7, 8}));
  dir.file("model-00001-of-00003.safetensors",  // another series: a stale file, not this checkpoint's
           image(R"({"y":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {7, 8}));
  dir.file("draft-00002-of-00002.safetensors",  // another series of the same count
           image(R"({"z":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {7, 8}));
  dir.text(
      "model.safetensors.index.json",
      R"({"weight_map":{"x":"model-00001-of-00002.safetensors","lm_head.weight":"model-00002-of-00002.safetensors"}})");
  EXPECT_EQ(mx8::io::SafetensorsModel::open(dir.path.string()).tensors().size(), 2u);
  dir.text("model.safetensors.index.json", R"({"weight_map":{"x":"model-00001-of-00002.safetensors"}})");
  try {
    mx8::io::SafetensorsModel::open(dir.path.string());
    ADD_FAILURE() << "accepted an index that leaves a shard out";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors,"), std::string::npos) << e.what();
  }
  // Two left out: the first named, the other counted.
  dir.text("model.safetensors.index.json", R"({"weight_map":{"y":"model-00001-of-00003.safetensors"}})");
  dir.file("model-00002-of-00003.safetensors",
           image(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {7, 8}));
  dir.file("model-00003-of-00003.safetensors",
           image(R"({"v":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", {7, 8}));
  try {
    mx8::io::SafetensorsModel::open(dir.path.string());
    ADD_FAILURE() << "accepted an index that leaves two shards out";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00003.safetensors (and 1 more)"), std::string::npos)
        << e.what();
  }
}
