// Shared by the CPU and CUDA golden tests: greedy decoding of stories260K from BOS through the
// whole runtime (model, engine, tokenizer, a given backend), the way `mx8 run --temperature 0` does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/tokenizer.h"

namespace mx8::testing {

struct GreedyResult {
  std::string text;
  std::vector<int32_t> tokens;
};

// Up to `n` tokens after BOS, stopping at BOS/EOS as llama2.c does; prefill chunks of `chunk`.
inline GreedyResult generate_greedy(const std::string& model_path, backend::Backend& be,
                                    model::WeightMode weights, backend::KvFormat kv, int n, int chunk = 256,
                                    bool quantize_head = true) {
  model::LoadOptions lo;
  lo.weights = weights;
  lo.max_tokens_per_step = chunk;
  lo.quantize_output_head = quantize_head;
  auto m = model::load_llama(model_path, be, lo);
  auto tok = runtime::load_tokenizer(model_path);
  runtime::EngineOptions eo;
  eo.kv_format = kv;
  eo.max_context = n + 1;
  runtime::Engine eng(*m, be, eo);
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = n;
  gp.stop_tokens = {tok->bos_id(), tok->eos_id()};
  eng.add({tok->bos_id()}, gp);
  runtime::DecodeOptions dopt;
  dopt.skip_special = true;
  runtime::StreamDecoder dec(*tok, dopt);
  GreedyResult r;
  dec.push(tok->bos_id());
  while (!eng.idle())
    for (auto& e : eng.step()) {
      if (e.token < 0 || e.finish == runtime::FinishReason::stop_token) continue;
      r.tokens.push_back(e.token);
      r.text += dec.push(e.token);
    }
  r.text += dec.flush();
  return r;
}

// Length of the common prefix of two token sequences.
inline size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

}  // namespace mx8::testing
