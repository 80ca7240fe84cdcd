// The server's generation loop: one thread owns the runtime Engine and steps it while any request is
// running; HTTP handler threads submit requests and wait for their text.
//
//   GenerationService svc(model, backend, tokenizer, opts);   // starts the engine thread
//   std::shared_ptr<Generation> g = svc.submit(job);          // queued; throws ServiceBusy when full
//   Update u;
//   while (!u.finished) if (g->next(u, 100ms)) send(u.text); // text as it is decoded
//
// Requests beyond `max_sequences` wait in arrival order (at most `max_waiting` of them) and join the
// engine's batch as running ones finish: every step of the engine carries one decode token of every
// running request plus prefill chunks (continuous batching, runtime/engine.h). Text is decoded on the
// engine thread (complete UTF-8 characters only) and stop sequences are applied there, so a request
// that hits one stops generating at once. A handler whose client went away calls cancel(); the
// request leaves the batch at the next step.
//
// If a step fails (a backend error), every request in flight and waiting ends with that error, and
// the service refuses new ones (broken() says why): the engine's state is no longer known.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mx8/error.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/stop_text.h"
#include "mx8/runtime/tokenizer.h"

namespace mx8::server {

// How a generation ended.
enum class StopReason {
  none,           // still running
  end_of_turn,    // the model emitted an end-of-turn / EOS token
  max_tokens,     // the request's token limit
  context_full,   // the sequence filled its context
  stop_sequence,  // one of the request's stop strings (never part of the text)
  cancelled,      // the client went away, or the server is stopping
  error,          // a backend error (Update::error)
  embedded,       // GenerationJob::embed: the prompt was read (Update::embedding)
};

struct GenerationJob {
  std::vector<int32_t> prompt;
  runtime::SamplingParams sampling;
  int max_new_tokens = 256;
  std::vector<std::string> stop;  // stop strings
  int logprobs = -1;              // >= 0: each token's log-probability and this many alternatives
  bool prompt_logprobs = false;   // with logprobs >= 0: the prompt's too (Update::prompt_logprobs)
  // The text continues the prompt's text (OpenAI completions, a reply after an assistant prefill): its
  // first token keeps a leading space that a reply starting a text of its own drops, so prompt + text
  // reads as the model wrote it.
  bool continues_prompt = false;
  std::shared_ptr<const runtime::TokenConstraint> constraint;  // which tokens may come (structured output)
  // Special tokens whose text the reply keeps, where it drops the others (a tool syntax's markers).
  std::vector<int32_t> keep_special;
  // The prompt's embedding instead of a reply (runtime::GenerationParams::embed): the update that ends
  // the request carries it, and no text.
  bool embed = false;
};

// What a waiting handler receives: the text decoded since its previous call, and once the request
// has ended, how.
struct Update {
  std::string text;
  bool finished = false;
  StopReason reason = StopReason::none;
  std::string stop_sequence;  // reason == stop_sequence: the one that matched
  std::string error;          // reason == error
  int completion_tokens = 0;  // tokens generated so far (an end-of-turn token counts)
  // The job asked for log-probabilities: those of the tokens generated since the previous call (not
  // of an end-of-turn token, which is no part of the text; a token that completes a stop string is).
  std::vector<runtime::TokenLogprobs> logprobs;
  std::optional<runtime::TokenLogprobs> end_logprobs;  // the end-of-turn token's (the completions list it)
  // GenerationJob::prompt_logprobs: those of the prompt's tokens but the first, with the first text.
  std::vector<runtime::TokenLogprobs> prompt_logprobs;
  std::vector<float> embedding;  // reason == embedded: the final hidden state of the prompt's last token
};

class GenerationService;

// One request, shared by its handler and the engine thread.
class Generation {
 public:
  // Waits up to `timeout` for new text or the end; returns false if neither came. Moves the new
  // text into `out.text` (replacing what was there) and sets the other fields.
  bool next(Update& out, std::chrono::milliseconds timeout);
  // Ends the request early (its client went away); harmless after the end.
  void cancel();
  int prompt_tokens() const { return prompt_tokens_; }
  // Whether the text continues the prompt's (GenerationJob::continues_prompt, and the prompt has text).
  bool continues_text() const { return continues_text_; }

 private:
  friend class GenerationService;
  Generation(GenerationService& svc, GenerationJob job, const runtime::Tokenizer& tok);
  // Engine-thread side: appends text / ends the request, and wakes the handler.
  void deliver(const std::string& text, bool count_token,
               std::optional<runtime::TokenLogprobs> logprobs = std::nullopt,
               std::vector<runtime::TokenLogprobs> prompt_logprobs = {});
  void set_end_logprobs(runtime::TokenLogprobs lp);
  void finish(StopReason reason, std::string detail = "");
  void finish_embedded(std::vector<float> embedding);
  bool cancel_requested();

  GenerationService& svc_;
  GenerationJob job_;
  int prompt_tokens_ = 0;
  bool continues_text_ = false;
  runtime::StreamDecoder decoder_;  // engine thread only
  runtime::StopText stop_text_;     // engine thread only
  bool cancel_sent_ = false;        // engine thread only: engine.cancel() was called

  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  std::vector<runtime::TokenLogprobs> pending_logprobs_, pending_prompt_logprobs_;
  std::optional<runtime::TokenLogprobs> end_logprobs_;
  Update state_;  // finished / reason / stop_sequence / error / completion_tokens
  bool cancel_requested_ = false;
};

// Thrown by submit() when `max_waiting` requests are already waiting (HTTP 429 / 529).
struct ServiceBusy : Error {
  using Error::Error;
};
// Thrown by submit() when the service takes no requests at all: a step failed (status().broken says
// why) or it is stopping (HTTP 503: not the client's fault, and not a wait-and-retry either).
struct ServiceUnavailable : Error {
  using Error::Error;
};

struct ServiceOptions {
  runtime::EngineOptions engine;  // max_sequences = requests generating at once
  int max_waiting = 64;           // requests queued behind them before submit() refuses
};

struct ServiceStatus {
  int running = 0;
  int waiting = 0;
  std::string broken;  // non-empty: why the service refuses requests
  runtime::EngineStats stats;
};

class GenerationService {
 public:
  GenerationService(model::LlamaModel& model, backend::Backend& backend, const runtime::Tokenizer& tok,
                    const ServiceOptions& opts);
  ~GenerationService();  // stop()
  GenerationService(const GenerationService&) = delete;
  GenerationService& operator=(const GenerationService&) = delete;

  // Queues `job`. Throws mx8::Error for a job that cannot run (empty prompt, a prompt that fills the
  // context, a sampling setting without a meaning, a service that is broken or stopping) and
  // ServiceBusy when the queue is full. The model's end-of-turn tokens always stop generation.
  std::shared_ptr<Generation> submit(GenerationJob job);
  // Ends every request (reason cancelled) and joins the engine thread.
  void stop();

  int max_context() const { return opts_.engine.max_context; }
  int hidden_size() const { return int(model_.config().dim); }  // an embedding's values
  const ServiceOptions& options() const { return opts_; }
  ServiceStatus status() const;

 private:
  friend class Generation;
  void run();
  void wake();
  void fail_all(const std::string& why);  // mu_ held

  model::LlamaModel& model_;
  const runtime::Tokenizer& tok_;
  ServiceOptions opts_;
  runtime::Engine engine_;
  std::vector<int32_t> stop_tokens_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Generation>> waiting_;
  std::map<int, std::shared_ptr<Generation>> running_;  // by engine request id; engine thread only
  int running_count_ = 0;                               // running_.size(), for status()
  bool stopping_ = false;
  std::string broken_;
  runtime::EngineStats stats_;  // copied after each step, for status()
  std::thread thread_;
};

const char* stop_reason_name(StopReason r);

}  // namespace mx8::server
