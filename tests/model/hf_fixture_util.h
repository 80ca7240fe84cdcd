// Running the Hugging Face fixtures of tests/data/hf (docs/FIXTURES.md) on any backend: their names,
// a prompt's logits and greedy tokens through mx8, the sliding-window reference, and config-edited
// copies of a fixture. Shared by the CPU tests (tests/model, tests/runtime) and the CUDA ones.
#pragma once

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
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace mx8::hf_test {

namespace fs = std::filesystem;
using nlohmann::json;

inline const std::string kDir = std::string(MX8_SOURCE_DIR) + "/tests/data/hf";

inline json read_json(const std::string& p) {
  std::ifstream in(p);
  return json::parse(in);
}

// The fixture folders (those with a reference.json), sorted.
inline std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  if (!fs::exists(kDir)) return names;
  for (auto& e : fs::directory_iterator(kDir))
    if (e.is_directory() && fs::exists(e.path() / "reference.json"))
      names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

inline float max_abs_diff(const std::vector<float>& a, const json& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i].get<float>()));
  return d;
}

struct PromptRun {
  std::vector<std::vector<float>> prompt_logits;  // at the requested positions
  std::vector<int32_t> greedy;
  std::vector<float> greedy_last_logits;
};

// The logits at `positions` of one forward pass over `prompt` (one prefill chunk, a fresh KV cache).
inline std::vector<std::vector<float>> prompt_logits(model::LlamaModel& m, backend::Backend& be,
                                                     const std::vector<int32_t>& prompt,
                                                     const std::vector<int32_t>& positions,
                                                     backend::KvFormat kv) {
  const int pages = (int(prompt.size()) + 15) / 16;
  backend::KvCacheDesc d{
      kv, int(m.config().n_layers), int(m.config().n_kv_heads), int(m.config().head_dim), 16, pages};
  auto cache = be.create_kv_cache(d);
  model::StepBatch b;
  b.max_pages_per_seq = pages;
  for (int p = 0; p < pages; ++p) b.block_tables.push_back(p);
  for (size_t i = 0; i < prompt.size(); ++i) {
    b.tokens.push_back(prompt[i]);
    b.pos.push_back(int32_t(i));
    b.seq.push_back(0);
    b.slot.push_back(int32_t(i));
    b.kv_len.push_back(int32_t(i) + 1);
  }
  b.logit_rows = positions;
  const size_t vocab = size_t(m.config().vocab);
  std::vector<float> logits(positions.size() * vocab);
  m.forward(b, *cache, logits.data());
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < positions.size(); ++i)
    out.emplace_back(logits.begin() + std::ptrdiff_t(i * vocab),
                     logits.begin() + std::ptrdiff_t((i + 1) * vocab));
  return out;
}

// Prompt logits through one forward pass (prompt_logits), then `n_greedy` greedy tokens through the
// engine (decode path over the paged KV cache) and the logits of the last.
inline PromptRun run_prompt(model::LlamaModel& m, backend::Backend& be, const std::vector<int32_t>& prompt,
                            const std::vector<int32_t>& positions, backend::KvFormat kv, int n_greedy = 16) {
  PromptRun r;
  r.prompt_logits = prompt_logits(m, be, prompt, positions, kv);
  runtime::EngineOptions eo;
  eo.kv_format = kv;
  eo.max_context = int(prompt.size()) + n_greedy + 16;
  runtime::Engine eng(m, be, eo);
  eng.keep_logits(true);
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = n_greedy + 1;  // the last is never run: the sequence stays alive for its logits
  int id = eng.add(prompt, gp);
  while (int(r.greedy.size()) < n_greedy)
    for (auto& e : eng.step()) r.greedy.push_back(e.token);
  r.greedy_last_logits = *eng.last_logits(id);
  eng.cancel(id);
  return r;
}

// A fixture copied to a fresh temporary folder with `edit` applied to its config.json.
struct EditedCopy {
  fs::path dir;
  template <typename Edit>
  EditedCopy(const std::string& fixture, Edit edit) {
    const fs::path src = fs::path(kDir) / fixture;
    dir = fs::temp_directory_path() / ("mx8_" + fixture + "_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const char* f : {"model.safetensors", "generation_config.json"}) fs::copy_file(src / f, dir / f);
    json cfg = read_json((src / "config.json").string());
    edit(cfg);
    std::ofstream(dir / "config.json") << cfg.dump(2);
  }
  ~EditedCopy() { fs::remove_all(dir); }
};

// mistral_gqa with its sliding window set as in sliding_window.json, on backend `be`: every prompt
// position's logits within `tol` of transformers' and the greedy tokens equal.
inline void check_sliding_window_reference(backend::Backend& be, float tol) {
  const json ref = read_json(kDir + "/mistral_gqa/sliding_window.json");
  const int window = ref["sliding_window"].get<int>();
  ASSERT_GT(ref["max_abs_logit_change_past_window"].get<double>(), 1.0);  // the window matters here
  ASSERT_NE(ref["greedy"], ref["greedy_without_window"]);
  EditedCopy copy("mistral_gqa", [&](json& c) { c["sliding_window"] = window; });
  const std::vector<int32_t> prompt = ref["prompt"].get<std::vector<int32_t>>();
  const std::vector<int32_t> greedy = ref["greedy"].get<std::vector<int32_t>>();
  ASSERT_GT(int(prompt.size()), 2 * window);
  auto m = model::load_llama(copy.dir.string(), be, model::LoadOptions{});
  ASSERT_EQ(m->config().sliding_window, window);
  std::vector<int32_t> positions(prompt.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = int32_t(i);
  const PromptRun r = run_prompt(*m, be, prompt, positions, backend::KvFormat::f32, int(greedy.size()));
  for (size_t i = 0; i < positions.size(); ++i)
    EXPECT_LE(max_abs_diff(r.prompt_logits[i], ref["logits"][i]), tol) << "prompt position " << i;
  EXPECT_EQ(r.greedy, greedy);
}

}  // namespace mx8::hf_test
