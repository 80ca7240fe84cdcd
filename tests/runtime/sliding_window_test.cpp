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

}  // namespace
