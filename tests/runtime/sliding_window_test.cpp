// A model with a sliding window (Mistral v0.1's `sliding_window`: 4096) attends only to its last
// `window` positions; mx8's attention does not apply a window, so it is exact up to that many
// positions and must not go further. Checked on a copy of the Mistral HF fixture whose config.json
// says sliding_window 16: the config carries it (and `use_sliding_window: false` turns it off, as Qwen2
// configs write it), an engine with a longer context is an error that names the window, and a
// context of the window gives the fixture's own greedy tokens (HF transformers, no window: the same
// attention while every position is inside the window).
#include <gtest/gtest.h>

#include <unistd.h>

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

TEST(SlidingWindow, EngineKeepsTheContextInsideTheWindow) {
  FixtureCopy copy([](nlohmann::json& c) { c["sliding_window"] = 16; });
  auto be = backend::make_cpu_backend(1);
  auto m = model::load_llama(copy.dir.string(), *be, model::LoadOptions{});
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 17;
  try {
    runtime::Engine too_long(*m, *be, eo);
    FAIL() << "a context past the sliding window was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sliding window of 16"), std::string::npos) << e.what();
  }

  // Within the window: the fixture's greedy continuation of its 7-token prompt, up to 16 positions.
  std::ifstream in(kFixture / "reference.json");
  const nlohmann::json ref = nlohmann::json::parse(in);
  const std::vector<int32_t> prompt = ref["prompts"][1].get<std::vector<int32_t>>();
  const std::vector<int32_t> greedy = ref["greedy"][1].get<std::vector<int32_t>>();
  eo.max_context = 16;
  runtime::Engine eng(*m, *be, eo);
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = 100;
  eng.add(prompt, gp);
  std::vector<int32_t> got;
  runtime::FinishReason finish = runtime::FinishReason::none;
  while (!eng.idle())
    for (const runtime::TokenEvent& e : eng.step()) {
      if (e.token >= 0) got.push_back(e.token);
      if (e.finish != runtime::FinishReason::none) finish = e.finish;
    }
  EXPECT_EQ(finish, runtime::FinishReason::context_full);
  ASSERT_EQ(got.size(), 16 - prompt.size());  // the 16th token ends it: it would need position 17
  EXPECT_EQ(got, std::vector<int32_t>(greedy.begin(), greedy.begin() + std::ptrdiff_t(got.size())));
}

}  // namespace
