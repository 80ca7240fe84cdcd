// Shared by the service and HTTP tests: the bundled stories260K on the CPU backend, and what one
// request generates when the engine runs it alone (the reference every served result must equal).
//
// The tests run the scalar CPU kernels (cpu::ScopedIsa): their ops are row-independent, so a request
// batched with others, or started from a reused prefix, computes the same bits as alone; with the
// AVX2 GEMV one row and several rows sum in different orders, and a sampled token could differ.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/tokenizer.h"
#include "mx8/server/generation_service.h"

namespace mx8::testing {

inline const std::string kStoriesModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

struct StoriesModel {
  std::unique_ptr<backend::Backend> be = backend::make_cpu_backend(2);
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<runtime::Tokenizer> tok = runtime::load_tokenizer(kStoriesModel);
  StoriesModel() {
    model::LoadOptions lo;
    lo.max_tokens_per_step = 32;  // prompts and batches span several steps
    model = model::load_llama(kStoriesModel, *be, lo);
  }
  std::vector<int32_t> prompt(const std::string& text) const { return tok->encode(text); }
};

inline StoriesModel& stories() {
  static StoriesModel m;
  return m;
}

struct Reference {
  std::string text;  // the generated tokens decoded alone (a reply: chat, messages)
  int tokens = 0;
  std::string continuation;  // what they add to the prompt's text (completions)
};

// `job` through an engine of its own, one sequence, the text as the service decodes it (special
// tokens skipped; stop strings are the caller's to apply).
inline Reference run_alone(const server::GenerationJob& job, int max_context) {
  StoriesModel& m = stories();
  runtime::EngineOptions eo;
  eo.max_context = max_context;
  eo.kv_format = backend::KvFormat::f32;
  runtime::Engine eng(*m.model, *m.be, eo);
  runtime::GenerationParams gp;
  gp.sampling = job.sampling;
  gp.max_new_tokens = job.max_new_tokens;
  gp.stop_tokens = m.tok->stop_ids();
  gp.stop_tokens.push_back(m.tok->bos_id());  // as the service: a generated BOS ends a reply
  eng.add(job.prompt, gp);
  std::vector<int32_t> out;
  while (!eng.idle())
    for (const runtime::TokenEvent& e : eng.step())
      if (e.token >= 0) out.push_back(e.token);
  runtime::DecodeOptions d;
  d.skip_special = true;
  std::vector<int32_t> all = job.prompt;
  all.insert(all.end(), out.begin(), out.end());
  const std::string prompt = m.tok->decode(job.prompt, d), whole = m.tok->decode(all, d);
  return {m.tok->decode(out, d), int(out.size()), whole.substr(prompt.size())};
}

inline server::GenerationJob greedy_job(const std::string& prompt, int max_new) {
  server::GenerationJob j;
  j.prompt = stories().prompt(prompt);
  j.sampling.temperature = 0;
  j.max_new_tokens = max_new;
  return j;
}

}  // namespace mx8::testing
