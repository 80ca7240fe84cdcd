// `mx8 serve [-m PATH]`: an HTTP server with the OpenAI chat/completions and Anthropic messages APIs
// (docs/SERVER.md). Requests are batched through one engine: --parallel of them generate at once,
// up to --queue more wait. Ctrl-C (SIGINT) or SIGTERM ends every request and stops the server.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "cli/command.h"
#include "cli/gen_common.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/chat_template.h"
#include "mx8/runtime/embedding.h"
#include "mx8/runtime/reasoning.h"
#include "mx8/runtime/tokenizer.h"
#include "mx8/runtime/tool_calls.h"
#include "mx8/server/generation_service.h"
#include "mx8/server/http_server.h"

namespace {

struct ServeOptions {
  mx8::cli::GenOptions gen;
  std::string host = "127.0.0.1";
  int port = 8080;
  int parallel = 4;
  int queue = 64;
  std::string template_file;
  std::string name;
  bool quiet = false;
};

// "stories260K" for models/stories260K.gguf, "Qwen2.5-7B" for /m/Qwen2.5-7B/.
std::string model_name_of(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();
  return std::filesystem::is_directory(p) ? p.filename().string() : p.stem().string();
}

// SIGINT / SIGTERM go to one thread. Before the server runs they end the process at once (a large
// model loads for minutes); once it runs, they end the requests first, so that handlers return, then
// the listener. The signals are blocked before any other thread starts (the backend's pool, the
// engine's), so that every thread inherits the mask and none of them takes a signal instead.
class SignalWaiter {
 public:
  SignalWaiter() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] {
      int sig = 0;
      sigwait(&signals_, &sig);
      std::lock_guard lk(mu_);
      if (done_) return;
      std::fprintf(stderr, "mx8 serve: %s, stopping\n", sig == SIGINT ? "interrupted" : "terminated");
      if (!service_) std::_Exit(130);
      service_->stop();
      http_->stop();
    });
  }
  // From here on a signal stops these two instead of the process.
  void serving(mx8::server::GenerationService& s, mx8::server::HttpServer& h) {
    std::lock_guard lk(mu_);
    service_ = &s;
    http_ = &h;
  }
  // Signals from here on are ignored (the server has stopped; its objects are about to go).
  void finish() {
    std::lock_guard lk(mu_);
    done_ = true;
  }
  ~SignalWaiter() {  // also when serve() throws: the thread is let go and joined
    finish();
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }

 private:
  sigset_t signals_;
  std::mutex mu_;
  bool done_ = false;
  mx8::server::GenerationService* service_ = nullptr;
  mx8::server::HttpServer* http_ = nullptr;
  std::thread thread_;
};

void serve(ServeOptions& o) {
  using namespace mx8;
  SignalWaiter waiter;
  if (o.gen.model.empty()) o.gen.model = cli::default_model_path();
  if (o.parallel < 1 || o.parallel > 4096) throw Error("--parallel must be from 1 to 4096");
  if (o.queue < 0 || o.queue > 65536) throw Error("--queue must be from 0 to 65536");
  server::check_can_listen(o.host, o.port);  // before a model that may take minutes to load
  auto tok = runtime::load_tokenizer(o.gen.model);
  std::optional<runtime::ChatTemplate> tmpl = cli::chat_template_for(o.gen.model, o.template_file, *tok);
  // Without --ctx: 4096 positions per request, or less where the model was made for less.
  int ctx = 4096;
  if (const int64_t made_for = model::supported_context(model::read_llama_config(o.gen.model)); made_for > 0)
    ctx = int(std::min<int64_t>(ctx, made_for));
  if (o.gen.chunk == 0) o.gen.chunk = cli::kServerChunk;
  cli::Loaded l = cli::load_for_generation(o.gen, ctx, o.parallel);

  server::ServiceOptions so;
  so.engine.kv_format = l.kv_format;
  so.engine.max_context = l.context;
  so.engine.max_sequences = o.parallel;
  so.engine.kv_positions = l.kv_positions;
  so.max_waiting = o.queue;
  server::GenerationService service(*l.model, *l.backend, *tok, so);

  server::ServerOptions ho;
  ho.host = o.host;
  ho.port = o.port;
  ho.model_name = o.name.empty() ? model_name_of(o.gen.model) : o.name;
  ho.sampling = o.gen.sampling;
  ho.stop = o.gen.stop;
  // The key comes from the environment, not the command line, where other users of the machine see it.
  if (const char* key = std::getenv("MX8_API_KEY"); key && *key) ho.api_key = key;
  if (!o.quiet)
    ho.log = [](const std::string& line) { std::fprintf(stderr, "mx8 serve: %s\n", line.c_str()); };
  try {
    ho.embeddings = runtime::read_embedding_recipe(o.gen.model);
  } catch (const Error& e) {  // the chat endpoints still serve; /v1/embeddings says why it cannot
    ho.embeddings_refused = e.what();
  }
  server::HttpServer http(service, *tok, tmpl ? &*tmpl : nullptr, ho);

  const int port = http.bind();
  const std::string pool =
      l.kv_positions > 0 ? ", sharing " + std::to_string(l.kv_positions) + " KV cache positions" : "";
  std::fprintf(
      stderr, "mx8 serve: %s as \"%s\", %d positions per request, %d at once%s (+%d waiting)%s\n",
      o.gen.model.c_str(), ho.model_name.c_str(), l.context, o.parallel, pool.c_str(), o.queue,
      tmpl ? "" : "; no chat template: /v1/completions and /v1/embeddings only (or --template FILE)");
  if (tmpl) {  // what the template allows beyond text (docs/SERVER.md, Tool use and Reasoning)
    const runtime::ToolFormat tf = runtime::probe_tool_format(*tmpl);
    const std::string tools = !tf.renders_tools ? "no tools (the template has no place for them)"
                              : tf.syntax == runtime::ToolSyntax::none
                                  ? "no tools (the template's calls are in a syntax mx8 does not read)"
                                  : std::string("tools, calls in the ") +
                                        runtime::tool_syntax_name(tf.syntax) + " syntax" +
                                        (tf.strict_call_form() ? " (strict tools held to their schemas)"
                                                               : " (strict tools not held)");
    std::fprintf(
        stderr, "mx8 serve: chat template: %s; %s\n", tools.c_str(),
        runtime::template_thinks(tmpl->source()) ? "reasoning in <think> blocks" : "no reasoning blocks");
  }
  std::fprintf(stderr, "mx8 serve: embeddings: %s\n",
               ho.embeddings_refused.empty() ? ho.embeddings.source.c_str() : ho.embeddings_refused.c_str());
  std::fprintf(stderr, "mx8 serve: listening on http://%s:%d%s (Ctrl-C stops)\n", o.host.c_str(), port,
               ho.api_key.empty() ? ", no API key" : ", API key from MX8_API_KEY");
  waiter.serving(service, http);
  const bool ok = http.listen();
  waiter.finish();
  const runtime::EngineStats st = service.status().stats;
  std::fprintf(stderr,
               "mx8 serve: %lld prompt tokens, %lld generated, %lld reused from earlier requests, %lld "
               "preemptions (%lld positions prefilled again)\n",
               (long long)st.prefill_tokens, (long long)st.decode_tokens, (long long)st.reused_tokens,
               (long long)st.preemptions, (long long)st.recomputed_tokens);
  if (!ok) throw Error("the HTTP listener stopped with an error");
}

mx8::cli::CommandRegistration reg{
    "serve", "HTTP server: OpenAI chat, completions, responses and embeddings, and Anthropic messages APIs",
    [](CLI::App& app) {
      auto o = std::make_shared<ServeOptions>();
      mx8::cli::add_gen_options(app, o->gen);
      app.add_option("--host", o->host, "address to listen on")->capture_default_str();
      app.add_option("--port", o->port, "port (0: any free one, printed)")
          ->check(CLI::Range(0, 65535))
          ->capture_default_str();
      app.add_option("--parallel", o->parallel, "requests generating at once")->capture_default_str();
      app.add_option("--kv-positions", o->gen.kv_positions,
                     "KV cache positions of all requests together (0: --ctx for each, or what fits in "
                     "memory); when full, the newest requests wait and prefill again")
          ->capture_default_str();
      app.add_option("--queue", o->queue, "requests waiting for a slot before new ones are refused")
          ->capture_default_str();
      app.add_option("--template", o->template_file, "Jinja chat template file (default: the model's own)");
      app.add_option("--name", o->name, "model name in responses (default: the model file or folder name)");
      app.add_flag("--quiet", o->quiet, "no line per request on stderr");
      return [o] { serve(*o); };
    }};

}  // namespace
