// Embeddings (runtime/embedding.h, GenerationParams::embed) against sentence-transformers 6.0.1 on
// tests/data/hf/qwen3_embedding: a Qwen3 decoder saved as transformers' Qwen3Model (tensor names without
// "model."), a byte-level BPE tokenizer that appends <|endoftext|>, last-token pooling and Normalize, as
// Qwen3-Embedding is published (scripts/make_embedding_fixture.py made it on the GPU machine).
//
// Tolerance: 2e-6 absolute per value of a unit vector. sentence-transformers' float32 vectors differ
// from the same model's float64-normalized hidden state by 2.4e-7 and from its own batched run by
// 3.0e-7 (recorded in embeddings.json); mx8's f32 path rounds in another order, measured here at up to
// 3.6e-7 (scalar kernels; 2.7e-7 with AVX2 and AVX-512). A real error (a missed norm, the wrong row, a pad or
// EOS token dropped) moves values by 1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "model/gguf_bytes.h"
#include "model/hf_fixture_util.h"
#include "mx8/error.h"
#include "mx8/runtime/embedding.h"
#include "mx8/runtime/tokenizer.h"

namespace {

using namespace mx8;
using nlohmann::json;
namespace fs = std::filesystem;

const std::string kFixture = hf_test::kDir + "/qwen3_embedding";
constexpr float kTol = 2e-6f;

struct Loaded {
  std::unique_ptr<backend::Backend> be;
  std::unique_ptr<model::LlamaModel> m;
};

Loaded load(model::WeightMode weights = model::WeightMode::as_given, int max_tokens_per_step = 256) {
  Loaded l;
  l.be = backend::make_cpu_backend(2);
  model::LoadOptions lo;
  lo.weights = weights;
  lo.max_tokens_per_step = max_tokens_per_step;
  l.m = model::load_llama(kFixture, *l.be, lo);
  return l;
}

// Embeds every prompt through one engine holding `sequences` at once (all added before the first step),
// unit vectors. `generate`: a generating sequence runs beside them (its greedy tokens are returned).
struct Embedded {
  std::vector<std::vector<float>> vectors;
  std::vector<int32_t> generated;
  int64_t reused = 0;
};
Embedded embed_all(Loaded& l, const std::vector<std::vector<int32_t>>& prompts, int sequences,
                   const std::vector<int32_t>& generate = {}) {
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 128;
  eo.max_sequences = sequences + 1;
  runtime::Engine engine(*l.m, *l.be, eo);
  Embedded out;
  out.vectors.resize(prompts.size());
  int gen_id = -1;
  if (!generate.empty()) {
    runtime::GenerationParams g;
    g.sampling.temperature = 0;
    g.max_new_tokens = 12;
    gen_id = engine.add(generate, g);
  }
  runtime::GenerationParams p;
  p.embed = true;
  std::map<int, size_t> text_of;
  size_t next = 0;
  while (next < prompts.size() || !engine.idle()) {
    while (next < prompts.size() && text_of.size() < size_t(sequences))
      text_of[engine.add(prompts[next], p)] = next, ++next;
    for (runtime::TokenEvent& e : engine.step()) {
      if (e.request == gen_id) {
        if (e.token >= 0) out.generated.push_back(e.token);
        continue;
      }
      EXPECT_EQ(e.finish, runtime::FinishReason::embedded);
      EXPECT_EQ(e.token, -1);  // nothing is generated
      EXPECT_EQ(e.embedding.size(), size_t(l.m->config().dim));
      out.vectors[text_of.at(e.request)] = runtime::finish_embedding(e.embedding, 0, true);
      text_of.erase(e.request);
    }
  }
  out.reused = engine.stats().reused_tokens;
  return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i)
    ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}

class Embeddings : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kFixture + "/embeddings.json")) GTEST_SKIP() << "no fixture at " << kFixture;
    ref_ = hf_test::read_json(kFixture + "/embeddings.json");
    for (const json& ids : ref_["ids"]) prompts_.push_back(ids.get<std::vector<int32_t>>());
    for (const json& e : ref_["embeddings"]) want_.push_back(e.get<std::vector<float>>());
  }
  json ref_;
  std::vector<std::vector<int32_t>> prompts_;
  std::vector<std::vector<float>> want_;
};

TEST_F(Embeddings, TokenizerAppendsEndOfTextAsSentenceTransformersDoes) {
  auto tok = runtime::load_tokenizer(kFixture);
  for (size_t i = 0; i < prompts_.size(); ++i) {
    const std::string text = ref_["texts"][i];
    EXPECT_EQ(tok->encode(text), prompts_[i]) << text;
    EXPECT_EQ(prompts_[i].back(), ref_["eos_id"].get<int32_t>());
  }
}

TEST_F(Embeddings, MatchSentenceTransformers) {
  Loaded l = load();
  const runtime::EmbeddingRecipe recipe = runtime::read_embedding_recipe(kFixture);
  EXPECT_TRUE(recipe.normalize);  // 2_Normalize
  // One at a time, and all six in one engine (several prompts in a step, each with its own last row).
  for (int sequences : {1, 6}) {
    const Embedded got = embed_all(l, prompts_, sequences);
    float worst = 0;
    for (size_t i = 0; i < prompts_.size(); ++i) {
      const float d = max_abs_diff(got.vectors[i], want_[i]);
      EXPECT_LE(d, kTol) << "text " << i << ", " << sequences << " at once";
      worst = std::max(worst, d);
    }
    std::printf("[ embeddings ] %d at once: max |difference| to sentence-transformers %.2e\n", sequences,
                worst);
  }
}

TEST_F(Embeddings, ChunkedPrefillAndAGeneratingNeighbourChangeNothing) {
  // Prompts read 5 tokens a step (the longest, 60 tokens, over 12 steps) beside a sequence that
  // generates: the vector comes from the last chunk's last row, and the neighbour's tokens are its own.
  Loaded whole = load(), chunked = load(model::WeightMode::as_given, 5);
  const std::vector<int32_t> story = prompts_[1];
  const Embedded alone = embed_all(whole, {}, 1, story);
  const Embedded mixed = embed_all(chunked, prompts_, 3, story);
  EXPECT_EQ(mixed.generated, alone.generated);
  ASSERT_EQ(alone.generated.size(), 12u);
  for (size_t i = 0; i < prompts_.size(); ++i)
    EXPECT_LE(max_abs_diff(mixed.vectors[i], want_[i]), kTol) << "text " << i;
}

TEST_F(Embeddings, ACachedPrefixGivesTheSameVector) {
  // The same text twice in one engine: the second takes the first's pages (all but the last token) and
  // computes only the last position, which must give the same vector.
  Loaded l = load();
  const std::vector<int32_t> p = prompts_[4];  // 60 tokens: three full pages of 16
  const Embedded got = embed_all(l, {p, p}, 1);
  EXPECT_GE(got.reused, 48);
  EXPECT_LE(max_abs_diff(got.vectors[0], want_[4]), kTol);
  EXPECT_LE(max_abs_diff(got.vectors[1], want_[4]), kTol);
}

TEST_F(Embeddings, Fp8WeightsKeepTheDirection) {
  // FP8 weights (E4M3, UE8M0 per 128x128 block, here one block per matrix) against the f32 reference:
  // the direction an FP8 embedding model keeps. Measured: least cosine 0.9959 over the six texts (E4M3's
  // rounding of these small random matrices, one scale each); 0.99 leaves room for summation order.
  Loaded l = load(model::WeightMode::fp8);
  const Embedded got = embed_all(l, prompts_, 6);
  double worst = 1;
  for (size_t i = 0; i < prompts_.size(); ++i) worst = std::min(worst, cosine(got.vectors[i], want_[i]));
  std::printf("[ embeddings ] fp8 weights: least cosine to the f32 reference %.5f\n", worst);
  EXPECT_GE(worst, 0.99);
}

TEST(EmbeddingFinish, TruncatesThenNormalizes) {
  const std::vector<float> h = {3, 4, 12, 0};
  EXPECT_EQ(runtime::finish_embedding(h, 0, false), h);
  EXPECT_EQ(runtime::finish_embedding(h, 2, false), (std::vector<float>{3, 4}));
  const std::vector<float> unit = runtime::finish_embedding(h, 0, true);  // |h| = 13
  EXPECT_FLOAT_EQ(unit[0], 3.0f / 13);
  EXPECT_FLOAT_EQ(unit[2], 12.0f / 13);
  const std::vector<float> cut = runtime::finish_embedding(h, 2, true);  // cut first, then |(3,4)| = 5
  EXPECT_FLOAT_EQ(cut[0], 0.6f);
  EXPECT_FLOAT_EQ(cut[1], 0.8f);
  EXPECT_EQ(runtime::finish_embedding(std::vector<float>{0, 0}, 0, true), (std::vector<float>{0, 0}));
  EXPECT_THROW(runtime::finish_embedding(h, 5, true), Error);
  EXPECT_THROW(runtime::finish_embedding(h, -1, true), Error);
}

// A sentence-transformers folder in a temporary directory, with the given modules and pooling config.
struct StFolder {
  fs::path dir;
  StFolder(const json& modules, const json& pooling) {
    dir = fs::temp_directory_path() / ("mx8_st_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir / "1_Pooling");
    std::ofstream(dir / "modules.json") << modules.dump();
    std::ofstream(dir / "1_Pooling" / "config.json") << pooling.dump();
  }
  ~StFolder() { fs::remove_all(dir); }
};

json modules(bool normalize, const char* extra = nullptr) {
  json m =
      json::array({{{"idx", 0}, {"path", ""}, {"type", "sentence_transformers.models.Transformer"}},
                   {{"idx", 1}, {"path", "1_Pooling"}, {"type", "sentence_transformers.models.Pooling"}}});
  if (normalize)
    m.push_back({{"idx", 2}, {"path", "2_Normalize"}, {"type", "sentence_transformers.models.Normalize"}});
  if (extra) m.push_back({{"idx", 3}, {"path", "3_Dense"}, {"type", extra}});
  return m;
}

TEST(EmbeddingRecipe, ReadsSentenceTransformersModules) {
  // The older one-flag-per-mode config (sentence-transformers before 5), without Normalize.
  StFolder old_style(modules(false), {{"pooling_mode_lasttoken", true}, {"pooling_mode_mean_tokens", false}});
  EXPECT_FALSE(runtime::read_embedding_recipe(old_style.dir.string()).normalize);
  // config_sentence_transformers.json's prompts: a default, others by name, an unknown name refused.
  std::ofstream(old_style.dir / "config_sentence_transformers.json")
      << R"({"prompts": {"query": "Q: ", "document": ""}, "default_prompt_name": "query"})";
  const runtime::EmbeddingRecipe prompted = runtime::read_embedding_recipe(old_style.dir.string());
  EXPECT_EQ(prompted.with_prompt("x", ""), "Q: x");
  EXPECT_EQ(prompted.with_prompt("x", "document"), "x");
  try {
    prompted.with_prompt("x", "passage");
    ADD_FAILURE() << "an unknown prompt was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no prompt 'passage' (it has 'document', 'query')"),
              std::string::npos)
        << e.what();
  }
  std::ofstream(old_style.dir / "config_sentence_transformers.json")
      << R"({"prompts": {"query": "Q: "}, "default_prompt_name": "passage"})";
  EXPECT_THROW(runtime::read_embedding_recipe(old_style.dir.string()), Error);
  // No modules.json (a chat model): the last token, normalized, no prompts.
  const runtime::EmbeddingRecipe plain = runtime::read_embedding_recipe(hf_test::kDir + "/qwen3_qknorm");
  EXPECT_TRUE(plain.normalize);
  EXPECT_NE(plain.source.find("default"), std::string::npos);
}

// A GGUF file of metadata alone: llama.cpp's converter writes `<arch>.pooling_type` for embedding models.
std::string gguf_with_pooling(int type) {
  test::GgufBytes g;
  g.header(0, type < 0 ? 1 : 2);
  g.text("general.architecture", "qwen3");
  if (type >= 0) g.u32("qwen3.pooling_type", uint32_t(type));
  const fs::path p = fs::temp_directory_path() /
                     ("mx8_pool_" + std::to_string(::getpid()) + "_" + std::to_string(type) + ".gguf");
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(g.b.data()), std::streamsize(g.b.size()));
  return p.string();
}

TEST(EmbeddingRecipe, ReadsAGgufFilesPoolingType) {
  for (int type : {-1, 0, 3}) {  // absent (a chat model's file), none, last
    const std::string p = gguf_with_pooling(type);
    EXPECT_TRUE(runtime::read_embedding_recipe(p).normalize) << type;
    fs::remove(p);
  }
  for (const auto& [type, name] : {std::pair{1, "'mean'"}, {2, "'cls'"}, {4, "'rank'"}}) {
    const std::string p = gguf_with_pooling(type);
    try {
      runtime::read_embedding_recipe(p);
      ADD_FAILURE() << "pooling_type " << type << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("qwen3.pooling_type"), std::string::npos) << e.what();
    }
    fs::remove(p);
  }
}

TEST(EmbeddingRecipe, RefusesWhatItCannotRunByName) {
  auto message = [](const StFolder& f) {
    try {
      runtime::read_embedding_recipe(f.dir.string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(StFolder(modules(true), {{"pooling_mode", "mean"}})).find("'mean'"), std::string::npos);
  EXPECT_NE(message(StFolder(modules(true), {{"pooling_mode_cls_token", true}})).find("'cls'"),
            std::string::npos);
  EXPECT_NE(
      message(StFolder(modules(true, "sentence_transformers.models.Dense"), {{"pooling_mode", "lasttoken"}}))
          .find("Dense"),
      std::string::npos);
  // Files of the wrong shape are errors that name the model, not the JSON library's exceptions.
  EXPECT_NE(
      message(StFolder(json::array({1, 2}), {{"pooling_mode", "lasttoken"}})).find("is not as expected"),
      std::string::npos);
  EXPECT_NE(message(StFolder(modules(true), {{"pooling_mode_lasttoken", "yes"}})).find("is not as expected"),
            std::string::npos);
}

}  // namespace
