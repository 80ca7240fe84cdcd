// POST /v1/embeddings over sockets, on tests/data/hf/qwen3_embedding (the sentence-transformers fixture
// of tests/runtime/embedding_test.cpp, whose comment gives the 2e-6 tolerance): the vectors as JSON
// numbers and as base64, texts and token ids, more inputs than the engine holds at once, dimensions,
// the errors; and the official OpenAI client library reading them (tests/server/sdk/embeddings.mjs).
#include <gtest/gtest.h>
#include <httplib.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "model/hf_fixture_util.h"
#include "mx8/server/embeddings_api.h"
#include "mx8/server/http_server.h"
#include "server/scripted_server.h"

namespace {

using namespace mx8;
using json = nlohmann::ordered_json;

const std::string kFixture = hf_test::kDir + "/qwen3_embedding";
constexpr float kTol = 2e-6f;

// The fixture model behind a service (2 sequences at once) and an HTTP server on a free port.
struct EmbeddingServer {
  std::unique_ptr<backend::Backend> be = backend::make_cpu_backend(2);
  std::unique_ptr<model::LlamaModel> model = model::load_llama(kFixture, *be, {});
  std::unique_ptr<runtime::Tokenizer> tok = runtime::load_tokenizer(kFixture);
  server::GenerationService service{*model, *be, *tok, service_options()};
  runtime::EmbeddingRecipe recipe;
  server::HttpServer http{service, *tok, nullptr, server_options(recipe)};
  int port = http.bind();
  std::thread listener{[this] { http.listen(); }};

  // The fixture's recipe, with `prompts` besides (its own are empty).
  explicit EmbeddingServer(std::map<std::string, std::string> prompts = {})
      : recipe(with_prompts(std::move(prompts))) {}
  ~EmbeddingServer() {
    service.stop();
    http.stop();
    listener.join();
  }
  static server::ServiceOptions service_options() {
    server::ServiceOptions o;
    o.engine.kv_format = backend::KvFormat::f32;
    o.engine.max_context = 256;
    o.engine.max_sequences = 2;
    o.max_waiting = 1;  // a request of six inputs must still pass, two at a time
    return o;
  }
  static runtime::EmbeddingRecipe with_prompts(std::map<std::string, std::string> prompts) {
    runtime::EmbeddingRecipe r = runtime::read_embedding_recipe(kFixture);
    for (auto& [name, text] : prompts) r.prompts[name] = text;
    return r;
  }
  static server::ServerOptions server_options(const runtime::EmbeddingRecipe& recipe) {
    server::ServerOptions o;
    o.port = 0;
    o.model_name = "qwen3_embedding";
    o.embeddings = recipe;
    return o;
  }
  json post(const json& body, int want_status = 200) {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    auto r = c.Post("/v1/embeddings", body.dump(), "application/json");
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, want_status) << r->body;
    return json::parse(r->body);
  }
};

std::vector<float> from_base64(const std::string& s) {
  std::string bytes;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    acc = acc << 6 | uint32_t(std::strchr(digits, c) - digits);
    if ((bits += 6) >= 8) bytes += char((acc >> (bits -= 8)) & 0xFF);
  }
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

class EmbeddingsEndpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kFixture + "/embeddings.json")) GTEST_SKIP() << "no fixture at " << kFixture;
    ref_ = hf_test::read_json(kFixture + "/embeddings.json");
  }
  void expect_reference(const json& data) {
    ASSERT_EQ(data.size(), ref_["embeddings"].size());
    for (size_t i = 0; i < data.size(); ++i) {
      EXPECT_EQ(data[i]["object"], "embedding");
      EXPECT_EQ(data[i]["index"], i);
      const json& e = data[i]["embedding"];
      const std::vector<float> got = e.is_string() ? from_base64(e) : e.get<std::vector<float>>();
      const std::vector<float> want = ref_["embeddings"][i].get<std::vector<float>>();
      ASSERT_EQ(got.size(), want.size()) << "input " << i;
      for (size_t j = 0; j < got.size(); ++j)
        EXPECT_NEAR(got[j], want[j], kTol) << "input " << i << " value " << j;
    }
  }
  nlohmann::json ref_;
};

TEST_F(EmbeddingsEndpoint, TextsAndTokenIdsGiveSentenceTransformersVectors) {
  EmbeddingServer s;
  json texts = json::array();
  for (const auto& t : ref_["texts"]) texts.push_back(t.get<std::string>());
  int tokens = 0;
  for (const auto& ids : ref_["ids"]) tokens += int(ids.size());
  // Six inputs through two sequences and a queue of one: the request submits as its inputs finish.
  const json r = s.post({{"model", "qwen3_embedding"}, {"input", texts}});
  EXPECT_EQ(r["object"], "list");
  EXPECT_EQ(r["model"], "qwen3_embedding");
  EXPECT_EQ(r["usage"]["prompt_tokens"], tokens);
  EXPECT_EQ(r["usage"]["total_tokens"], tokens);
  expect_reference(r["data"]);
  json ids = json::array();
  for (const auto& i : ref_["ids"]) ids.push_back(i.get<std::vector<int32_t>>());
  expect_reference(s.post({{"input", ids}, {"encoding_format", "base64"}})["data"]);
}

TEST_F(EmbeddingsEndpoint, DimensionsCutThenNormalize) {
  EmbeddingServer s;
  const json r = s.post({{"input", ref_["texts"][1]}, {"dimensions", 8}});
  const std::vector<float> got = r["data"][0]["embedding"].get<std::vector<float>>();
  std::vector<float> want = ref_["embeddings"][1].get<std::vector<float>>();
  want.resize(8);
  double norm = 0;
  for (float x : want) norm += double(x) * x;
  ASSERT_EQ(got.size(), 8u);
  // kTol over the cut's norm: the reference's values are within kTol, renormalized by ~1/norm.
  for (size_t j = 0; j < 8; ++j) EXPECT_NEAR(got[j], want[j] / std::sqrt(norm), kTol / std::sqrt(norm)) << j;
}

TEST_F(EmbeddingsEndpoint, RefusesWhatItCannotAnswerByField) {
  EmbeddingServer s;
  auto param = [&](const json& body, int status = 400) { return s.post(body, status)["error"]["param"]; };
  EXPECT_EQ(param({{"model", "x"}}), "input");
  EXPECT_EQ(param({{"input", ""}}), "input");
  EXPECT_EQ(param({{"input", json::array()}}), "input");
  EXPECT_EQ(param({{"input", {1, -2}}}), "input");
  EXPECT_EQ(param({{"input", "a"}, {"dimensions", 0}}), "dimensions");
  EXPECT_EQ(param({{"input", "a"}, {"dimensions", 65}}), "dimensions");  // the hidden size is 64
  EXPECT_EQ(param({{"input", "a"}, {"encoding_format", "int8"}}), "encoding_format");
  // A token past the vocabulary, and a prompt past the context: the service's checks, as 400s.
  const json far = s.post({{"input", {{1, 2}, {1, 5000}}}}, 400);
  EXPECT_NE(far["error"]["message"].get<std::string>().find("input 1: prompt token 5000"), std::string::npos)
      << far;
  s.post({{"input", std::vector<int>(300, 1)}}, 400);
}

TEST_F(EmbeddingsEndpoint, PromptNamePutsTheModelsPromptBeforeTexts) {
  // Reference text 4 is an instruction and a query; as a prompt of the model's, and the query alone.
  const std::string text = ref_["texts"][4];
  const size_t cut = text.find("fp8 scales");
  EmbeddingServer s({{"query", text.substr(0, cut)}});
  const json r = s.post({{"input", text.substr(cut)}, {"prompt_name", "query"}});
  const std::vector<float> got = r["data"][0]["embedding"].get<std::vector<float>>();
  for (size_t j = 0; j < got.size(); ++j)
    EXPECT_NEAR(got[j], ref_["embeddings"][4][j].get<float>(), kTol) << j;
  EXPECT_EQ(r["usage"]["prompt_tokens"], ref_["ids"][4].size());  // the prompt's tokens count
  const json bad = s.post({{"input", "a"}, {"prompt_name", "passage"}}, 400);
  EXPECT_EQ(bad["error"]["param"], "prompt_name");
  EXPECT_NE(bad["error"]["message"].get<std::string>().find("'document', 'query'"), std::string::npos) << bad;
}

TEST(EmbeddingsApi, Base64IsRfc4648) {
  EXPECT_EQ(server::base64_encode(""), "");
  EXPECT_EQ(server::base64_encode("f"), "Zg==");
  EXPECT_EQ(server::base64_encode("fo"), "Zm8=");
  EXPECT_EQ(server::base64_encode("foo"), "Zm9v");
  EXPECT_EQ(server::base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(server::base64_encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

TEST_F(EmbeddingsEndpoint, OfficialClientLibraryReadsThem) {
  if (const std::string why = mx8::testing::sdk_missing(); !why.empty()) GTEST_SKIP() << why;
  EmbeddingServer s;
  setenv("MX8_EXPECTED", (kFixture + "/embeddings.json").c_str(), 1);
  int status = -1;
  const std::string out = mx8::testing::run_node("embeddings.mjs", s.port, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
}

}  // namespace
