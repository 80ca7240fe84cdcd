// A model with a sliding window (Mistral v0.1's `sliding_window`: 4096) attends only to its last
// `window` positions. Checked on copies of the Mistral HF fixture: the config carries the window (and
// `use_sliding_window: false` turns it off, as Qwen2 configs write it), and with a window of 8 mx8
// matches Hugging Face transformers (tests/data/hf/mistral_gqa/sliding_window.json, made by
// scripts/make_sliding_window_reference.py) on a 33-token prompt - every position's logits - and on
// 24 greedy tokens after it, through the engine's decode path.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace {

namespace fs = std::filesystem;
using namespace mx8;

const fs::path kFixture = fs::path(MX8_SOURCE_DIR) / "tests/data/hf/mistral_gqa";

// The fixture copied to a fresh folder with `edit` applied to its config.json.
struct FixtureCopy {
  fs::path dir;
  template <typename Edit>
  explicit FixtureCopy(Edit edit) {
    dir = fs::temp_directory_path() / ("mx8_sliding_window_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const char* f : {"model.safetensors", "generation_config.json"})
      fs::copy_file(kFixture / f, dir / f);
    std::ifstream in(kFixture / "config.json");
    nlohmann::json cfg = nlohmann::json::parse(in);
    edit(cfg);
    std::ofstream(dir / "config.json") << cfg.dump(2);
  }
  ~FixtureCopy() { fs::remove_all(dir); }
};

TEST(SlidingWindow, ConfigCarriesTheWindowUnlessSwitchedOff) {
  FixtureCopy on([](nlohmann::json& c) { c["sliding_window"] = 16; });
  EXPECT_EQ(model::read_llama_config(on.dir.string()).sliding_window, 16);
  FixtureCopy off([](nlohmann::json& c) {
    c["sliding_window"] = 16;
    c["use_sliding_window"] = false;
  });
  EXPECT_EQ(model::read_llama_config(off.dir.string()).sliding_window, 0);
  EXPECT_EQ(model::read_llama_config(kFixture.string()).sliding_window, 0);  // null in the fixture
}

// The forward pass over the whole prompt (every position's logits), then greedy tokens through the
// engine, with a window of 8 on both sides. Tolerance: 1e-4 on each logit, as the HF fixture tests
// (hf_fixtures_test.cpp says why); the window moves logits past position 8 by up to 11.9 (recorded in
// the reference), so attention over every position cannot pass.
TEST(SlidingWindow, MatchesTransformersPastTheWindow) {
  std::ifstream in(kFixture / "sliding_window.json");
  const nlohmann::json ref = nlohmann::json::parse(in);
  const int window = ref["sliding_window"].get<int>();
  ASSERT_GT(ref["max_abs_logit_change_past_window"].get<double>(), 1.0);  // the window matters here
  ASSERT_NE(ref["greedy"], ref["greedy_without_window"]);
  FixtureCopy copy([&](nlohmann::json& c) { c["sliding_window"] = window; });
  const std::vector<int32_t> prompt = ref["prompt"].get<std::vector<int32_t>>();
  const std::vector<int32_t> greedy = ref["greedy"].get<std::vector<int32_t>>();
  const int n = int(prompt.size());
  ASSERT_GT(n, 2 * window);

  for (int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    auto be = backend::make_cpu_backend(threads);
    auto m = model::load_llama(copy.dir.string(), *be, model::LoadOptions{});
    ASSERT_EQ(m->config().sliding_window, window);
    const int pages = (n + 15) / 16;
    backend::KvCacheDesc d{backend::KvFormat::f32,
                           int(m->config().n_layers),
                           int(m->config().n_kv_heads),
                           int(m->config().head_dim),
                           16,
                           pages};
    auto cache = be->create_kv_cache(d);
    model::StepBatch b;
    b.max_pages_per_seq = pages;
    for (int p = 0; p < pages; ++p) b.block_tables.push_back(p);
    for (int i = 0; i < n; ++i) {
      b.tokens.push_back(prompt[size_t(i)]);
      b.pos.push_back(i);
      b.seq.push_back(0);
      b.slot.push_back(i);
      b.kv_len.push_back(i + 1);
      b.logit_rows.push_back(i);
    }
    const int64_t vocab = m->config().vocab;
    std::vector<float> logits(size_t(n * vocab));
    m->forward(b, *cache, logits.data());
    for (int i = 0; i < n; ++i) {
      float worst = 0;
      for (int64_t v = 0; v < vocab; ++v)
        worst = std::max(worst, std::fabs(logits[size_t(i * vocab + v)] -
                                          ref["logits"][size_t(i)][size_t(v)].get<float>()));
      EXPECT_LE(worst, 1e-4f) << "prompt position " << i;
    }

    runtime::EngineOptions eo;
    eo.kv_format = backend::KvFormat::f32;
    eo.max_context = n + int(greedy.size());
    runtime::Engine eng(*m, *be, eo);
    runtime::GenerationParams gp;
    gp.sampling.temperature = 0;
    gp.max_new_tokens = int(greedy.size());
    eng.add(prompt, gp);
    std::vector<int32_t> got;
    while (!eng.idle())
      for (const runtime::TokenEvent& e : eng.step())
        if (e.token >= 0) got.push_back(e.token);
    EXPECT_EQ(got, greedy);
  }
}

}  // namespace
