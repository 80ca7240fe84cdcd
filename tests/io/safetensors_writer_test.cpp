// The safetensors writer: the reference library's exact bytes for known cases, its tensor order,
// round trips through the reader for every dtype, sharding and the index, and staged folders that
// never leave partial output behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "mx8/error.h"
#include "mx8/io/safetensors.h"
#include "mx8/io/safetensors_writer.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using mx8::io::DType;
using mx8::io::TensorSpec;
using mx8::test::TempDir;

namespace {

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> f32_bytes(std::vector<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::vector<uint8_t> le64(uint64_t n) {
  std::vector<uint8_t> b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(n >> (8 * i));
  return b;
}

std::vector<uint8_t> cat(std::vector<uint8_t> a, const std::string& s, const std::vector<uint8_t>& c = {}) {
  a.insert(a.end(), s.begin(), s.end());
  a.insert(a.end(), c.begin(), c.end());
  return a;
}

}  // namespace

// The three files of the reference library's own serialization tests, written from the format
// definition: a 64-byte header that needs no padding, "{}" padded to 8, and metadata padded to 40.
TEST(SafetensorsWriter, ReferenceBytes) {
  TempDir dir;
  auto data = f32_bytes({0, 1, 2, 3, 4, 5});
  mx8::io::write_safetensors((dir.path / "a").string(), {{{"attn.0", DType::F32, {1, 2, 3}}, data}}, {});
  const std::string h = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(h.size(), 64u);
  EXPECT_EQ(read_all(dir.path / "a"), cat(le64(64), h, data));

  mx8::io::write_safetensors((dir.path / "b").string(), {}, {});
  EXPECT_EQ(read_all(dir.path / "b"), cat(le64(8), "{}      "));

  mx8::io::write_safetensors((dir.path / "c").string(), {}, {{"framework", "pt"}});
  EXPECT_EQ(read_all(dir.path / "c"), cat(le64(40), R"({"__metadata__":{"framework":"pt"}})"
                                                    "     "));

  // Two metadata entries and, without metadata, two tensors: the commas between entries.
  const std::string two = mx8::io::safetensors_header({}, {{"a", "1"}, {"b", "2"}});
  EXPECT_EQ(two.substr(0, two.find_last_not_of(' ') + 1), R"({"__metadata__":{"a":"1","b":"2"}})");
  const std::string pair = mx8::io::safetensors_header({{"x", DType::U8, {1}}, {"y", DType::U8, {2}}}, {});
  EXPECT_EQ(pair.substr(0, pair.find_last_not_of(' ') + 1),
            R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
            R"("y":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})");

  // Shorter name: the header is padded with 7 spaces so the F32 data starts 8-aligned.
  mx8::io::write_safetensors((dir.path / "d").string(), {{{"attn0", DType::F32, {1, 1, 2, 3}}, data}}, {});
  const std::string h2 = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})"
                         "       ";
  EXPECT_EQ(read_all(dir.path / "d"), cat(le64(72), h2, data));
}

TEST(SafetensorsWriter, SortsByDtypeDescendingThenName) {
  std::vector<TensorSpec> specs = {
      {"b", DType::U8, {1}},   {"a", DType::U8, {1}},      {"z", DType::F64, {1}},
      {"c", DType::BF16, {1}}, {"y", DType::F8_E4M3, {1}}, {"w", DType::F32, {1}},
      {"x", DType::I64, {1}},  {"v", DType::F8_E8M0, {1}}, {"u", DType::BOOL, {1}}};
  mx8::io::sort_reference_order(specs);
  std::string order;
  for (auto& s : specs) order += s.name;
  EXPECT_EQ(order, "xzwcvyabu");  // I64 F64 F32 BF16 F8_E8M0 F8_E4M3 U8 U8 BOOL
}

TEST(SafetensorsWriter, EscapesNamesLikeSerdeJson) {
  std::vector<TensorSpec> specs = {{"q\"\\\n\x01\xc3\xa9", DType::U8, {0}}};
  const std::string json =
      "{\"q\\\"\\\\\\n\\u0001\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}";
  const std::string h = mx8::io::safetensors_header(specs, {});
  EXPECT_EQ(h.size() % 8, 0u);
  EXPECT_EQ(h.substr(0, json.size()), json);
  EXPECT_EQ(h.find_first_not_of(' ', json.size()), std::string::npos);  // only padding follows
}

TEST(SafetensorsWriter, RoundTripsEveryDtypeAligned) {
  TempDir dir;
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> store;
  std::vector<mx8::io::TensorData> tensors;
  const DType all[] = {DType::BOOL, DType::U8,  DType::I8,  DType::F8_E5M2, DType::F8_E4M3, DType::F8_E8M0,
                       DType::I16,  DType::U16, DType::F16, DType::BF16,    DType::I32,     DType::U32,
                       DType::F32,  DType::F64, DType::I64, DType::U64};
  store.reserve(64);
  for (DType d : all) {
    for (int k = 0; k < 2; ++k) {
      std::vector<int64_t> shape = {1 + static_cast<int64_t>(rng() % 5), 1 + static_cast<int64_t>(rng() % 7)};
      TensorSpec spec{std::string(mx8::io::dtype_name(d)) + "_" + std::to_string(k), d, shape};
      store.emplace_back(spec.nbytes());
      for (auto& b : store.back()) b = static_cast<uint8_t>(rng());
      tensors.push_back({spec, store.back()});
    }
  }
  tensors.push_back({{"scalar", DType::F32, {}}, std::span<const uint8_t>(store[0].data(), 4)});
  tensors.push_back({{"empty", DType::F32, {3, 0}}, {}});
  const auto path = (dir.path / "m.safetensors").string();
  mx8::io::write_safetensors(path, tensors);
  auto f = mx8::io::SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    const auto& r = f.get(t.spec.name);
    EXPECT_EQ(r.dtype(), t.spec.dtype);
    EXPECT_EQ(r.shape(), t.spec.shape);
    ASSERT_EQ(r.nbytes(), t.bytes.size());
    if (!t.bytes.empty()) {  // memcmp with an empty span's null pointer is undefined, even for 0 bytes
      EXPECT_EQ(std::memcmp(r.data, t.bytes.data(), t.bytes.size()), 0) << t.spec.name;
    }
    // The reference order puts every tensor at a multiple of its element size (the file's data
    // section starts 8-aligned and larger dtypes come first).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.data) % mx8::io::dtype_size(r.dtype()), 0u) << t.spec.name;
  }
  // Writing again gives identical bytes (deterministic).
  mx8::io::write_safetensors(path + "2", tensors);
  EXPECT_EQ(read_all(path), read_all(path + "2"));
}

TEST(SafetensorsWriter, StreamingInPiecesAndMisuse) {
  TempDir dir;
  const auto path = (dir.path / "s.safetensors").string();
  {
    mx8::io::SafetensorsWriter w(path, {{"b", DType::U8, {3}}, {"a", DType::U8, {2}}, {"e", DType::U8, {0}}});
    EXPECT_EQ(w.next_tensor(), "a");
    EXPECT_THROW(w.write_tensor("b", std::vector<uint8_t>{1, 2, 3}), mx8::Error);  // out of order
    EXPECT_THROW(w.write_tensor("e", std::vector<uint8_t>{1, 2}),
                 mx8::Error);  // the right size, still out of order
    const uint8_t bytes[] = {1, 2, 3, 4, 5};
    w.append(std::span<const uint8_t>(bytes, 1));
    w.append(std::span<const uint8_t>(bytes + 1, 3));  // crosses from "a" into "b"
    EXPECT_THROW(w.commit(), mx8::Error);              // "b" unfinished
  }
  EXPECT_FALSE(fs::exists(path));  // abandoned writer leaves nothing, not even its temporary
  for (auto& e : fs::directory_iterator(dir.path)) ADD_FAILURE() << "left behind: " << e.path();
  {
    mx8::io::SafetensorsWriter w(path, {{"b", DType::U8, {3}}, {"a", DType::U8, {2}}});
    w.write_tensor("a", std::vector<uint8_t>{1, 2});
    EXPECT_THROW(w.append(std::vector<uint8_t>{1, 2, 3, 4}), mx8::Error);  // past the end
  }
  EXPECT_THROW(mx8::io::SafetensorsWriter(path, {{"a", DType::U8, {1}}, {"a", DType::F32, {1}}}), mx8::Error);
  EXPECT_THROW(mx8::io::SafetensorsWriter(path, {{"a", DType::U8, {-1}}}), mx8::Error);
}

TEST(SafetensorsWriter, ShardPlanKeepsScalesWithWeightsAndIndexMatchesTransformers) {
  std::vector<TensorSpec> specs = {{"l0.weight", DType::F8_E4M3, {100}},
                                   {"l0.weight_scale_inv", DType::F32, {2}},
                                   {"l1.weight", DType::F8_E4M3, {100}},
                                   {"l1.weight_scale_inv", DType::F32, {2}},
                                   {"norm", DType::F32, {300}}};
  auto shards = mx8::io::plan_shards(specs, 150);
  ASSERT_EQ(shards.size(), 3u);
  EXPECT_EQ(shards[0].size(), 2u);
  EXPECT_EQ(shards[0][1].name, "l0.weight_scale_inv");
  EXPECT_EQ(shards[2][0].name, "norm");  // larger than the limit: a shard of its own
  EXPECT_EQ(mx8::io::plan_shards(specs, 0).size(), 1u);
  // A limit between a weight's bytes (100) and its unit's (108): the scales still go with the weight.
  shards = mx8::io::plan_shards(specs, 104);
  ASSERT_EQ(shards.size(), 3u);
  EXPECT_EQ(shards[0].size(), 2u);
  EXPECT_EQ(shards[1][1].name, "l1.weight_scale_inv");
  // Units that fill a shard exactly (108 + 108 = 216) share it.
  shards = mx8::io::plan_shards(specs, 216);
  ASSERT_EQ(shards.size(), 2u);
  EXPECT_EQ(shards[0].size(), 4u);
  EXPECT_EQ(mx8::io::shard_file_name(1, 3), "model-00002-of-00003.safetensors");
  EXPECT_EQ(mx8::io::shard_file_name(0, 1), "model.safetensors");
  auto idx = mx8::io::safetensors_index_json({{{"b", DType::U8, {2}}}, {{"a", DType::F32, {1}}}});
  EXPECT_EQ(idx,
            "{\n  \"metadata\": {\n    \"total_size\": 6\n  },\n  \"weight_map\": {\n"
            "    \"a\": \"model-00002-of-00002.safetensors\",\n    \"b\": "
            "\"model-00001-of-00002.safetensors\"\n  }\n}\n");
}

TEST(StagedFolder, AppearsOnlyOnCommitAndCleansUpOnFailure) {
  TempDir dir;
  const auto out = (dir.path / "out").string();
  try {
    mx8::io::StagedFolder f(out, false);
    mx8::write_file_atomically(f.file("config.json"), "{}");
    throw mx8::Error("simulated failure mid-conversion");
  } catch (const mx8::Error&) {
  }
  EXPECT_FALSE(fs::exists(out));
  for (auto& e : fs::directory_iterator(dir.path)) ADD_FAILURE() << "left behind: " << e.path();
  {
    mx8::io::StagedFolder f(out, false);
    mx8::write_file_atomically(f.file("a.txt"), "one");
    EXPECT_FALSE(fs::exists(out));
    f.commit();
  }
  EXPECT_TRUE(fs::exists(fs::path(out) / "a.txt"));
  EXPECT_THROW(mx8::io::StagedFolder(out, false), mx8::Error);  // exists, no overwrite
  {
    mx8::io::StagedFolder f(out, true);
    mx8::write_file_atomically(f.file("b.txt"), "two");
    EXPECT_TRUE(fs::exists(fs::path(out) / "a.txt"));  // old one intact until commit
    f.commit();
  }
  EXPECT_FALSE(fs::exists(fs::path(out) / "a.txt"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "b.txt"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()), 1);  // no leftovers
  mx8::io::StagedFolder clean(out, true);  // an ordinary replacement reports nothing left over
  clean.commit();
  EXPECT_EQ(clean.leftover(), "");
}

// "o/" names the folder o: the trailing slash must not put the staging folder inside it.
TEST(StagedFolder, ATrailingSlashNamesTheSameFolder) {
  TempDir dir;
  const fs::path before = fs::current_path();
  fs::current_path(dir.path);
  {
    mx8::io::StagedFolder f("o/", false);
    mx8::write_file_atomically(f.file("a.txt"), "one");
    f.commit();
  }
  fs::current_path(before);
  EXPECT_TRUE(fs::exists(dir.path / "o" / "a.txt"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()), 1);  // only o
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path / "o"), fs::directory_iterator()), 1);
}

// A commit whose last rename fails puts the folder it replaced back: nothing is lost. (The staging
// folder removed from under it makes the rename fail.)
TEST(StagedFolder, AFailedCommitPutsTheReplacedFolderBack) {
  TempDir dir;
  const auto out = (dir.path / "out").string();
  fs::create_directories(out);
  std::ofstream(fs::path(out) / "keep.txt") << "precious";
  mx8::io::StagedFolder f(out, true);
  fs::remove_all(fs::path(f.file("x")).parent_path());
  EXPECT_THROW(f.commit(), mx8::Error);
  EXPECT_TRUE(fs::exists(fs::path(out) / "keep.txt"));
}

// Replacing a folder that cannot be deleted (here a read-only subfolder blocks it) leaves
// OUT.old-<pid> behind; the commit still succeeds, and leftover() names the folder so that the
// caller can warn rather than leave it there silently.
TEST(StagedFolder, AReplacedFolderThatCannotBeRemovedIsReported) {
  if (::geteuid() == 0) GTEST_SKIP() << "root deletes read-only folders: nothing would be left over";
  TempDir dir;
  const auto out = (dir.path / "out").string();
  fs::create_directories(fs::path(out) / "locked");
  std::ofstream(fs::path(out) / "locked" / "f.txt") << "x";
  fs::permissions(fs::path(out) / "locked", fs::perms::owner_read | fs::perms::owner_exec);
  {
    mx8::io::StagedFolder f(out, true);
    mx8::write_file_atomically(f.file("new.txt"), "new");
    f.commit();
    const std::string old = out + ".old-" + std::to_string(::getpid());
    EXPECT_EQ(f.leftover().rfind(old, 0), 0u) << f.leftover();  // starts with the folder's path
    fs::permissions(fs::path(old) / "locked", fs::perms::owner_all);
    fs::remove_all(old);  // the next replacement in this process would move `out` to the same name
  }
  EXPECT_TRUE(fs::exists(fs::path(out) / "new.txt"));
  mx8::io::StagedFolder clean(out, true);  // an ordinary replacement leaves nothing over
  clean.commit();
  EXPECT_EQ(clean.leftover(), "");
}

// The fixtures in tests/data/hf were written by the reference library (safetensors 0.8.0, through
// transformers' save_pretrained): reading one and writing it back must reproduce it byte for byte.
TEST(SafetensorsWriter, RewritesReferenceFilesByteForByte) {
  const fs::path root = fs::path(MX8_SOURCE_DIR) / "tests/data/hf";
  if (!fs::exists(root)) GTEST_SKIP() << root << " is absent";
  TempDir dir;
  int files = 0;
  for (const auto& e : fs::directory_iterator(root)) {
    const fs::path src = e.path() / "model.safetensors";
    if (!fs::exists(src)) continue;
    auto f = mx8::io::SafetensorsFile::open(src.string());
    std::vector<mx8::io::TensorData> tensors;
    for (const auto& t : f.tensors()) tensors.push_back({{t.name(), t.dtype(), t.shape()}, t.bytes()});
    const fs::path out = dir.path / (e.path().filename().string() + ".safetensors");
    mx8::io::write_safetensors(out.string(), tensors, f.metadata());
    EXPECT_EQ(read_all(out), read_all(src)) << src;
    ++files;
  }
  EXPECT_GE(files, 6);
}
