// The HTTP front of `mx8 serve`: the OpenAI and Anthropic endpoints over a GenerationService.
//
//   POST /v1/chat/completions   OpenAI chat (stream: server-sent events)
//   POST /v1/completions        OpenAI completions (raw prompt, no chat template)
//   POST /v1/messages           Anthropic messages
//   GET  /v1/models[/ID]        the one model (Anthropic's shape when the request has anthropic-version)
//   POST /v1/messages/count_tokens   Anthropic: the prompt's token count
//   POST /v1/embeddings         OpenAI embeddings (the last token's hidden state, runtime/embedding.h)
//   POST /tokenize, /detokenize vLLM's: a prompt or a chat request's token ids, and ids back to text
//   GET  /health                {"status": "ok", "running": N, "waiting": N}, 503 once broken
//   GET  /metrics               Prometheus text: requests by outcome, tokens, steps, running/waiting
//
// Each request is served on its own thread of a pool that is larger than the requests that can run
// and wait at once, so a waiting request never blocks one that could be answered. Prompts are
// rendered and tokenized on that thread; the engine thread only generates. A streamed request whose
// client disconnects is cancelled; errors come back in the dialect's own error shape.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mx8/runtime/chat_template.h"
#include "mx8/runtime/embedding.h"
#include "mx8/runtime/sampler.h"
#include "mx8/runtime/tokenizer.h"
#include "mx8/server/generation_service.h"

namespace mx8::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port (bind() returns it)
  std::string model_name;            // what responses and /v1/models call the model
  runtime::SamplingParams sampling;  // for the sampling fields a request leaves out
  std::vector<std::string> stop;     // stop strings of every request, besides its own
  int threads = 0;                   // HTTP worker threads; 0: running + waiting requests + 8
  size_t max_body_bytes = 32u << 20;
  std::string
      api_key;  // when set, requests must carry it (Authorization: Bearer, or x-api-key); 401 otherwise
  // One line per generation request when set: the endpoint, how it ended (or the HTTP status that
  // refused it), the response id, prompt + generated tokens and the time taken.
  std::function<void(const std::string&)> log;
  // /v1/embeddings: how the model's vectors are finished (runtime::read_embedding_recipe), or why the
  // model gives none (non-empty: the recipe's error, the answer to every embeddings request).
  runtime::EmbeddingRecipe embeddings;
  std::string embeddings_refused;
};

// Throws mx8::Error naming host:port when a server could not listen there (the port in use, or not an
// address of this machine). `mx8 serve` asks before it loads a model, which can take minutes, so that
// it fails at once; the server's own bind() can still fail if another program takes the port between.
void check_can_listen(const std::string& host, int port);

class HttpServer {
 public:
  // `tmpl` may be null (the model has no chat template): chat endpoints then answer 400 and
  // /v1/completions still works. Everything passed must outlive the server.
  HttpServer(GenerationService& service, const runtime::Tokenizer& tok, const runtime::ChatTemplate* tmpl,
             const ServerOptions& opts);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds host:port; returns the port. Throws mx8::Error naming the address when it cannot.
  int bind();
  // Serves until stop() (call bind() first). Returns false if the listener failed.
  bool listen();
  // Stops listen() from another thread (or a signal-handling thread).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mx8::server
