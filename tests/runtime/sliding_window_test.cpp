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
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/hf_fixture_util.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace {

namespace fs = std::filesystem;
using namespace mx8;

const fs::path kFixture = fs::path(hf_test::kDir) / "mistral_gqa";
using hf_test::EditedCopy;

TEST(SlidingWindow, ConfigCarriesTheWindowUnlessSwitchedOff) {
  EditedCopy on("mistral_gqa", [](nlohmann::json& c) { c["sliding_window"] = 16; });
  EXPECT_EQ(model::read_llama_config(on.dir.string()).sliding_window, 16);
  EditedCopy off("mistral_gqa", [](nlohmann::json& c) {
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
  for (int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    auto be = backend::make_cpu_backend(threads);
    hf_test::check_sliding_window_reference(*be, 1e-4f);
  }
}

// With a window shorter than the context, the engine gives a sequence's pages back once the window
// has passed them: the cache holds a window's worth of pages (4 of 16 here: window 8, chunks of 4,
// pages of 4), and the tokens are still transformers' (a page given back too early would be a -1 in
// the block table inside the window, which the CPU attention refuses).
TEST(SlidingWindow, EngineKeepsOnlyTheWindowsPages) {
  const nlohmann::json ref = hf_test::read_json(hf_test::kDir + "/mistral_gqa/sliding_window.json");
  const int window = ref["sliding_window"].get<int>();
  EditedCopy copy("mistral_gqa", [&](nlohmann::json& c) { c["sliding_window"] = window; });
  auto be = backend::make_cpu_backend(2);
  model::LoadOptions lo;
  lo.max_tokens_per_step = 4;
  auto m = model::load_llama(copy.dir.string(), *be, lo);
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 64;
  eo.page_size = 4;
  ASSERT_EQ(runtime::kv_pages_per_sequence(m->config(), eo, 4), 4);  // (8 + 4 - 1) / 4 rounded up, + 1
  const runtime::MemoryPlan plan = runtime::plan_memory(m->config(), 0, eo, 4, 0);
  EXPECT_NE(plan.text.find("sliding window 8: 16 positions kept"), std::string::npos) << plan.text;
  runtime::Engine eng(*m, *be, eo);
  EXPECT_EQ(eng.kv_bytes(), plan.kv_bytes);
  EXPECT_EQ(eng.free_pages(), 4u);
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = int(ref["greedy"].size());
  eng.add(ref["prompt"].get<std::vector<int32_t>>(), gp);
  std::vector<int32_t> got;
  while (!eng.idle())
    for (const runtime::TokenEvent& e : eng.step())
      if (e.token >= 0) got.push_back(e.token);
  EXPECT_EQ(got, ref["greedy"].get<std::vector<int32_t>>());
  EXPECT_EQ(eng.free_pages(), 4u);  // all back (prefix reuse is off with a window)

  // Three sequences at once, the second and third a step and two behind the first: their pages
  // interleave on the free list as the window passes them, and each still gives the same tokens.
  eo.max_sequences = 3;
  runtime::Engine many(*m, *be, eo);
  std::map<int, std::vector<int32_t>> by_request;
  std::vector<int> ids = {many.add(ref["prompt"].get<std::vector<int32_t>>(), gp)};
  while (!many.idle()) {
    for (const runtime::TokenEvent& e : many.step())
      if (e.token >= 0) by_request[e.request].push_back(e.token);
    if (ids.size() < 3) ids.push_back(many.add(ref["prompt"].get<std::vector<int32_t>>(), gp));
  }
  for (int id : ids) EXPECT_EQ(by_request[id], ref["greedy"].get<std::vector<int32_t>>()) << "request " << id;
  EXPECT_EQ(many.free_pages(), 12u);
}

}  // namespace
