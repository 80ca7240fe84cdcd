// `mx8 embed -m MODEL TEXT...`: the embedding of each text, one JSON array per line.
//
//   mx8 embed -m Qwen3-Embedding-0.6B "What is FP8?" "FP8 is an 8-bit float format."
//   mx8 embed -m Qwen3-Embedding-0.6B --weights fp8 --dimensions 256 --file texts.txt
//
// Each text is tokenized as the model's tokenizer says (with any end token its post-processor
// appends), read by the engine in one batch, and pooled as the model's sentence-transformers modules
// say (runtime/embedding.h). An instruction for queries is part of the text ("Instruct: ...\nQuery: ...")
// or one of the model's named prompts (--prompt-name).
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "cli/gen_common.h"
#include "mx8/error.h"
#include "mx8/runtime/embedding.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/tokenizer.h"
#include "mx8/util/float_text.h"
#include "mx8/util/read_file.h"

namespace {

struct EmbedOptions {
  mx8::cli::GenOptions gen;
  std::vector<std::string> texts;
  std::string file;
  int dimensions = 0;
  bool no_normalize = false;
  std::string prompt_name;
};

void embed(EmbedOptions& o) {
  using namespace mx8;
  std::vector<std::string> texts = o.texts;
  if (!o.file.empty()) {  // one text per line
    std::istringstream in(read_file(o.file));
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) texts.push_back(line);
  }
  if (texts.empty()) throw Error("embed: no text (give TEXT arguments or --file with one text per line)");
  if (o.gen.model.empty()) o.gen.model = cli::default_model_path();
  const runtime::EmbeddingRecipe recipe = runtime::read_embedding_recipe(o.gen.model);
  auto tok = runtime::load_tokenizer(o.gen.model);
  std::vector<std::vector<int32_t>> prompts;
  size_t longest = 0;
  for (const std::string& t : texts) {
    prompts.push_back(tok->encode(recipe.with_prompt(t, o.prompt_name)));
    if (prompts.back().empty()) throw Error("embed: a text has no tokens (an empty line?)");
    longest = std::max(longest, prompts.back().size());
  }
  const int sequences = int(std::min<size_t>(texts.size(), 64));
  cli::Loaded l = cli::load_for_generation(o.gen, int64_t(longest) + 1, sequences);
  const int hidden = int(l.model->config().dim);
  if (o.dimensions < 0 || o.dimensions > hidden)
    throw Error("--dimensions " + std::to_string(o.dimensions) + " outside 0.." + std::to_string(hidden));

  runtime::EngineOptions eo;
  eo.kv_format = l.kv_format;
  eo.max_context = l.context;
  eo.max_sequences = sequences;
  eo.kv_positions = l.kv_positions;
  runtime::Engine engine(*l.model, *l.backend, eo);
  runtime::GenerationParams gp;
  gp.embed = true;
  std::map<int, size_t> text_of;  // engine request -> text
  std::vector<std::vector<float>> out(texts.size());
  size_t next = 0, done = 0;
  while (done < texts.size()) {
    while (next < texts.size() && text_of.size() < size_t(sequences))
      text_of[engine.add(prompts[next], gp)] = next, ++next;
    for (runtime::TokenEvent& e : engine.step()) {
      if (e.finish != runtime::FinishReason::embedded) continue;
      out[text_of.at(e.request)] =
          runtime::finish_embedding(e.embedding, o.dimensions, recipe.normalize && !o.no_normalize);
      text_of.erase(e.request);
      ++done;
    }
  }
  std::string s;
  for (const std::vector<float>& v : out) {
    s += '[';
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + shortest_float_text(v[i]);
    s += "]\n";
  }
  std::fwrite(s.data(), 1, s.size(), stdout);
  const runtime::EngineStats& st = engine.stats();
  std::fprintf(stderr, "mx8: %zu texts, %lld tokens in %.3f s (%.1f tokens/s); pooling: %s\n", texts.size(),
               (long long)st.prefill_tokens, st.prefill_seconds,
               st.prefill_seconds > 0 ? double(st.prefill_tokens) / st.prefill_seconds : 0.0,
               recipe.source.c_str());
}

mx8::cli::CommandRegistration reg{
    "embed", "Print the embedding of each text (one JSON array per line)", [](CLI::App& app) {
      auto o = std::make_shared<EmbedOptions>();
      mx8::cli::add_model_options(app, o->gen);
      app.add_option("text", o->texts, "texts to embed (or --file)");
      app.add_option("-f,--file", o->file, "read the texts from this file, one per line");
      app.add_option("--dimensions", o->dimensions,
                     "keep the first N values (0: all), normalized after the cut (Matryoshka models)")
          ->capture_default_str();
      app.add_option(
          "--prompt-name", o->prompt_name,
          "put the model's prompt of this name before each text (config_sentence_transformers.json: "
          "Qwen3-Embedding's \"query\" instruction); default: the model's default prompt, if any");
      app.add_flag("--no-normalize", o->no_normalize, "the hidden state as it is, not scaled to unit length");
      return [o] { embed(*o); };
    }};

}  // namespace
