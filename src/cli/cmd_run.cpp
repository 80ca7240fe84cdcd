// `mx8 run`: generate text from a prompt, streamed to stdout; speed and memory on stderr.
//
//   mx8 run                                  # the bundled stories260K from BOS, sampled
//   mx8 run -p "Once upon a time" -n 100 --temperature 0
//   mx8 run -m model.gguf --weights fp8 --kv fp8
//   mx8 run -p "A cat:" --json-schema cat.json   # the continuation is JSON of the schema
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/command.h"
#include "cli/gen_common.h"
#include "mx8/error.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/stop_text.h"
#include "mx8/runtime/tokenizer.h"

namespace {

struct RunOptions {
  mx8::cli::GenOptions gen;
  std::string prompt;
  int n = 256;
  bool no_prompt_echo = false;
};

void run(RunOptions& o) {
  using namespace mx8;
  if (o.n <= 0) throw Error("-n must be positive (tokens to generate)");
  if (o.gen.model.empty()) o.gen.model = cli::default_model_path();
  auto tok = runtime::load_tokenizer(o.gen.model);
  std::vector<int32_t> prompt = tok->encode(o.prompt);
  if (prompt.empty()) {
    if (tok->bos_id() == runtime::kNoToken)
      throw Error("empty prompt and the model has no BOS token: pass -p TEXT");
    prompt.push_back(tok->bos_id());
  }
  const cli::JsonOutput json = cli::json_output_for(o.gen, *tok);
  cli::Loaded l = cli::load_for_generation(o.gen, int64_t(prompt.size()) + o.n);
  const model::LlamaConfig& c = l.model->config();

  runtime::EngineOptions eo;
  eo.kv_format = l.kv_format;
  eo.max_context = l.context;
  eo.max_sequences = 1;
  runtime::Engine engine(*l.model, *l.backend, eo);

  runtime::GenerationParams gp;
  gp.sampling = o.gen.sampling;
  gp.max_new_tokens = o.n;
  gp.stop_tokens = tok->stop_ids();
  for (int32_t e : c.eos) gp.stop_tokens.push_back(e);
  // Like llama2.c, a generated BOS also ends the text (it starts a new document).
  if (tok->bos_id() != runtime::kNoToken) gp.stop_tokens.push_back(tok->bos_id());
  gp.constraint = json.constraint(false, false);
  engine.add(prompt, gp);

  runtime::DecodeOptions dopt;
  dopt.skip_special = true;
  // Without the prompt shown, the continuation still follows its text (a first token's leading space
  // stays, as it does after the echoed prompt).
  runtime::StreamDecoder dec(*tok, dopt, !o.no_prompt_echo || !tok->leaves_start(prompt, dopt));
  runtime::StopText stop(o.gen.stop);
  auto emit = [&](const std::string& s) {
    if (!s.empty()) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
    }
  };
  // Stop sequences end the generated text only: the echoed prompt is not matched against them.
  if (!o.no_prompt_echo)
    for (int32_t id : prompt) emit(dec.push(id));
  const auto t0 = std::chrono::steady_clock::now();
  double first_token_s = 0;
  int generated = 0;
  runtime::FinishReason why = runtime::FinishReason::none;
  while (!engine.idle() && !stop.stopped()) {
    for (const runtime::TokenEvent& e : engine.step()) {
      if (generated == 0 && e.token >= 0)
        first_token_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (e.token >= 0) ++generated;
      if (e.finish == runtime::FinishReason::stop_token) {
        why = e.finish;
        continue;  // the stop token itself is not shown
      }
      if (e.token >= 0) emit(stop.push(dec.push(e.token)));
      if (e.finish != runtime::FinishReason::none) why = e.finish;
    }
  }
  emit(stop.push(dec.flush()));
  emit(stop.flush());
  std::fputc('\n', stdout);
  std::fflush(stdout);

  const runtime::EngineStats& st = engine.stats();
  const model::WeightStats& ws = l.model->weight_stats();
  std::fprintf(stderr, "\nmx8: %s | %s\n", l.backend->info().description.c_str(), ws.formats.c_str());
  std::fprintf(stderr, "mx8: prefill %lld tokens in %.3f s (%.1f tokens/s); first token after %.3f s\n",
               (long long)st.prefill_tokens, st.prefill_seconds,
               st.prefill_seconds > 0 ? double(st.prefill_tokens) / st.prefill_seconds : 0.0, first_token_s);
  std::fprintf(stderr, "mx8: decode %lld tokens in %.3f s (%.1f tokens/s); stopped: %s\n",
               (long long)st.decode_tokens, st.decode_seconds,
               st.decode_seconds > 0 ? double(st.decode_tokens) / st.decode_seconds : 0.0,
               stop.stopped() ? "stop sequence" : runtime::finish_reason_name(why));
  std::fprintf(stderr, "mx8: memory: weights %s (%lld parameters), KV cache %s (%s, %d positions)\n",
               cli::mib(ws.bytes).c_str(), (long long)ws.parameters, cli::mib(engine.kv_bytes()).c_str(),
               backend::kv_format_name(eo.kv_format), eo.max_context);
}

mx8::cli::CommandRegistration reg{
    "run", "Generate text from a prompt (streams to stdout; speed and memory on stderr)", [](CLI::App& app) {
      auto o = std::make_shared<RunOptions>();
      o->gen.sampling.temperature = 0.8f;
      mx8::cli::add_gen_options(app, o->gen);
      app.add_option("-p,--prompt", o->prompt, "prompt text (default: start from BOS)");
      app.add_option("-n,--n-predict", o->n, "tokens to generate")->capture_default_str();
      app.add_flag("--no-echo", o->no_prompt_echo, "do not print the prompt before the continuation");
      return [o] { run(*o); };
    }};

}  // namespace
