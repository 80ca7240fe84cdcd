// `mx8 chat -m PATH`: an interactive conversation using the model's own chat template.
// Each line on stdin is a user turn; the reply streams to stdout. "/reset" forgets the conversation,
// "/exit" (or end of input) quits. The whole conversation is re-rendered through the template every
// turn (exactly what the model was trained on); the engine keeps the previous turn's KV cache and
// reuses its longest common token prefix with the new prompt (EngineOptions::prefix_reuse), so only
// the new part is prefilled, in chunks. The stats line on stderr counts the reused positions. With
// --json / --json-schema FILE each reply is JSON (constrained decoding). A thinking model's reasoning
// (its <think> block) goes to standard error, the answer to standard output; --thinking-budget N closes
// the block after N tokens, --no-thinking asks the template for none (enable_thinking false).
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "cli/gen_common.h"
#include "mx8/error.h"
#include "mx8/runtime/chat_template.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/reasoning.h"
#include "mx8/runtime/stop_text.h"
#include "mx8/runtime/thinking_budget.h"
#include "mx8/runtime/tokenizer.h"

namespace {

struct ChatOptions {
  mx8::cli::GenOptions gen;
  std::string system;
  std::string template_file;
  int n = 512;
  int64_t thinking_budget = -1;  // < 0: none
  bool no_thinking = false;
};

void chat(ChatOptions& o) {
  using namespace mx8;
  if (o.n <= 0) throw Error("-n must be positive (tokens per reply)");
  if (o.gen.model.empty()) o.gen.model = cli::default_model_path();
  auto tok = runtime::load_tokenizer(o.gen.model);
  std::optional<runtime::ChatTemplate> tmpl = cli::chat_template_for(o.gen.model, o.template_file, *tok);
  if (!tmpl)
    throw Error("model " + o.gen.model +
                " has no chat template (tokenizer_config.json chat_template, chat_template.jinja "
                "or GGUF tokenizer.chat_template); pass --template FILE or use `mx8 run -p TEXT`");
  const cli::JsonOutput json = cli::json_output_for(o.gen, *tok);
  const bool thinks = runtime::template_thinks(tmpl->source());
  if (!thinks && (o.thinking_budget >= 0 || o.no_thinking))
    throw Error(std::string(o.no_thinking ? "--no-thinking" : "--thinking-budget") +
                ": the chat template of " + o.gen.model + " has no <think> blocks");
  nlohmann::ordered_json variables = {{"add_generation_prompt", true}};
  if (o.no_thinking)
    variables.update({{"enable_thinking", false}, {"thinking", false}});  // Qwen3, DeepSeek-V3.1
  const auto thinking_close =
      std::make_shared<const std::vector<int32_t>>(runtime::thinking_close_tokens(*tok));
  cli::Loaded l = cli::load_for_generation(o.gen, o.gen.ctx > 0 ? o.gen.ctx : 4096);
  const int ctx = l.context;
  runtime::EngineOptions eo;
  eo.kv_format = l.kv_format;
  eo.max_context = ctx;
  runtime::Engine engine(*l.model, *l.backend, eo);

  std::vector<runtime::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  std::fprintf(stderr, "mx8 chat: %s. Type a message; /reset forgets, /exit quits.\n", o.gen.model.c_str());
  std::string line;
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();  // input with Windows line endings
    if (line == "/exit") break;
    if (line == "/reset") {
      messages.erase(
          std::remove_if(messages.begin(), messages.end(), [](auto& m) { return m.role != "system"; }),
          messages.end());
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    nlohmann::ordered_json turns = nlohmann::ordered_json::array();
    for (const runtime::ChatMessage& m : messages)
      turns.push_back({{"role", m.role}, {"content", m.content}});
    std::string prompt = tmpl->render(turns, variables);
    runtime::EncodeOptions enc;
    enc.add_special = false;  // the template writes BOS where the model wants it
    std::vector<int32_t> ids = tok->encode(prompt, enc);
    if (ids.empty()) {  // a template that renders nothing for this conversation: report it, keep chatting
      std::fprintf(stderr, "mx8 chat: the chat template rendered an empty prompt for this turn\n");
      messages.pop_back();
      continue;
    }
    if (ids.size() + 1 >= size_t(ctx)) {
      std::fprintf(stderr, "mx8 chat: the conversation (%zu tokens) no longer fits --ctx %d; /reset\n",
                   ids.size(), ctx);
      messages.pop_back();
      continue;
    }
    runtime::GenerationParams gp;
    gp.sampling = o.gen.sampling;
    gp.max_new_tokens = std::min(o.n, ctx - int(ids.size()) - 1);
    gp.stop_tokens = tok->stop_ids();
    for (int32_t e : l.model->config().eos) gp.stop_tokens.push_back(e);
    // As in `mx8 run`: a generated BOS starts a new document, so it ends the reply.
    if (tok->bos_id() != runtime::kNoToken) gp.stop_tokens.push_back(tok->bos_id());
    const bool opened = thinks && runtime::opens_thinking(prompt);
    gp.constraint = json.constraint(thinks, opened);
    if (o.thinking_budget >= 0)
      gp.constraint = std::make_shared<runtime::ThinkingBudget>(*tok, thinking_close, o.thinking_budget,
                                                                opened, gp.constraint.get());
    engine.add(ids, gp);
    runtime::DecodeOptions dopt;
    dopt.skip_special = true;
    runtime::StreamDecoder dec(*tok, dopt);
    runtime::StopText stop(o.gen.stop);
    // A thinking model's reasoning goes to standard error, its answer to standard output: a piped
    // reply is the answer alone (JSON, with --json-schema). The conversation keeps the reply whole, as
    // the template takes it back.
    runtime::ReasoningParser reasoning(thinks, opened);
    bool reasoned = false;
    std::string reply;
    auto show = [&](const runtime::ReasoningParser::Piece& p) {
      std::fwrite(p.reasoning.data(), 1, p.reasoning.size(), stderr);
      if (reasoned && !p.text.empty()) std::fputc('\n', stderr);  // the reasoning ends its line
      reasoned = (reasoned || !p.reasoning.empty()) && p.text.empty();
      std::fwrite(p.text.data(), 1, p.text.size(), stdout);
      std::fflush(stdout);
    };
    auto emit = [&](const std::string& s) {
      reply += s;
      show(reasoning.feed(s));
    };
    while (!engine.idle()) {
      for (const runtime::TokenEvent& e : engine.step()) {
        if (e.token < 0 || e.finish == runtime::FinishReason::stop_token) continue;
        emit(stop.push(dec.push(e.token)));
        if (stop.stopped()) engine.cancel(e.request);
      }
    }
    emit(stop.push(dec.flush()));
    emit(stop.flush());
    show(reasoning.finish());
    if (reasoned) std::fputc('\n', stderr);
    std::fputc('\n', stdout);
    messages.push_back({"assistant", reply});
  }
  const runtime::EngineStats& st = engine.stats();
  std::fprintf(stderr,
               "mx8 chat: prefill %lld tokens (%.1f tokens/s), %lld reused from earlier turns, decode %lld "
               "tokens (%.1f tokens/s)\n",
               (long long)st.prefill_tokens,
               st.prefill_seconds > 0 ? st.prefill_tokens / st.prefill_seconds : 0.0,
               (long long)st.reused_tokens, (long long)st.decode_tokens,
               st.decode_seconds > 0 ? st.decode_tokens / st.decode_seconds : 0.0);
}

mx8::cli::CommandRegistration reg{
    "chat", "Interactive chat with a model's chat template", [](CLI::App& app) {
      auto o = std::make_shared<ChatOptions>();
      mx8::cli::add_gen_options(app, o->gen);
      app.add_option("--system", o->system, "system message");
      app.add_option("--template", o->template_file, "Jinja chat template file (default: the model's own)");
      app.add_option("-n,--n-predict", o->n, "max tokens per reply")->capture_default_str();
      app.add_option("--thinking-budget", o->thinking_budget,
                     "close a thinking model's reasoning after this many tokens; it answers then")
          ->check(CLI::Range(int64_t(0), int64_t(1) << 30));
      app.add_flag("--no-thinking", o->no_thinking,
                   "ask a thinking model not to think (enable_thinking false)");
      return [o] { chat(*o); };
    }};

}  // namespace
