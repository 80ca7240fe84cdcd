// GenerationService: see generation_service.h.
#include "mx8/server/generation_service.h"

#include <algorithm>
#include <exception>

namespace mx8::server {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::none:
      return "none";
    case StopReason::end_of_turn:
      return "end_of_turn";
    case StopReason::max_tokens:
      return "max_tokens";
    case StopReason::context_full:
      return "context_full";
    case StopReason::stop_sequence:
      return "stop_sequence";
    case StopReason::cancelled:
      return "cancelled";
    case StopReason::error:
      return "error";
    case StopReason::embedded:
      return "embedded";
  }
  return "?";
}

namespace {
runtime::DecodeOptions skip_special(const std::vector<int32_t>& keep) {
  runtime::DecodeOptions o;
  o.skip_special = true;
  o.keep_special = keep;
  return o;
}
}  // namespace

Generation::Generation(GenerationService& svc, GenerationJob job, const runtime::Tokenizer& tok)
    : svc_(svc),
      job_(std::move(job)),
      prompt_tokens_(int(job_.prompt.size())),
      continues_text_(job_.continues_prompt &&
                      tok.leaves_start(job_.prompt, skip_special(job_.keep_special))),
      decoder_(tok, skip_special(job_.keep_special), !continues_text_),
      stop_text_(job_.stop) {}

bool Generation::next(Update& out, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return !pending_.empty() || state_.finished; })) return false;
  out = state_;
  out.text.swap(pending_);
  pending_.clear();
  out.logprobs.swap(pending_logprobs_);
  pending_logprobs_.clear();
  out.prompt_logprobs.swap(pending_prompt_logprobs_);
  pending_prompt_logprobs_.clear();
  out.end_logprobs = std::move(end_logprobs_);
  end_logprobs_.reset();
  return true;
}

void Generation::cancel() {
  {
    std::lock_guard lk(mu_);
    if (state_.finished || cancel_requested_) return;
    cancel_requested_ = true;
  }
  svc_.wake();
}

bool Generation::cancel_requested() {
  std::lock_guard lk(mu_);
  return cancel_requested_;
}

void Generation::deliver(const std::string& text, bool count_token,
                         std::optional<runtime::TokenLogprobs> logprobs,
                         std::vector<runtime::TokenLogprobs> prompt_logprobs) {
  std::lock_guard lk(mu_);
  pending_ += text;
  if (count_token) state_.completion_tokens++;
  if (logprobs) pending_logprobs_.push_back(std::move(*logprobs));
  for (runtime::TokenLogprobs& lp : prompt_logprobs) pending_prompt_logprobs_.push_back(std::move(lp));
  if (!text.empty()) cv_.notify_all();
}

void Generation::set_end_logprobs(runtime::TokenLogprobs lp) {
  std::lock_guard lk(mu_);
  end_logprobs_ = std::move(lp);
}

void Generation::finish(StopReason reason, std::string detail) {
  std::lock_guard lk(mu_);
  if (state_.finished) return;
  state_.finished = true;
  state_.reason = reason;
  if (reason == StopReason::stop_sequence) state_.stop_sequence = std::move(detail);
  if (reason == StopReason::error) state_.error = std::move(detail);
  cv_.notify_all();
}

void Generation::finish_embedded(std::vector<float> embedding) {
  std::lock_guard lk(mu_);
  if (state_.finished) return;
  state_.embedding = std::move(embedding);
  state_.finished = true;
  state_.reason = StopReason::embedded;
  cv_.notify_all();
}

GenerationService::GenerationService(model::LlamaModel& model, backend::Backend& backend,
                                     const runtime::Tokenizer& tok, const ServiceOptions& opts)
    : model_(model), tok_(tok), opts_(opts), engine_(model, backend, opts.engine) {
  if (opts.max_waiting < 0) throw Error("server: the waiting queue bound must be >= 0");
  // End-of-turn tokens, the model's EOS, and (as mx8 run and llama2.c do) BOS: a generated BOS starts
  // a new document, which is no part of a reply.
  stop_tokens_ = tok.stop_ids();
  std::vector<int32_t> more(model.config().eos.begin(), model.config().eos.end());
  if (tok.bos_id() != runtime::kNoToken) more.push_back(tok.bos_id());
  for (int32_t e : more)
    if (std::find(stop_tokens_.begin(), stop_tokens_.end(), e) == stop_tokens_.end())
      stop_tokens_.push_back(e);
  thread_ = std::thread([this] { run(); });
}

GenerationService::~GenerationService() {
  stop();
}

std::shared_ptr<Generation> GenerationService::submit(GenerationJob job) {
  runtime::validate(job.sampling);
  if (job.prompt.empty()) throw Error("the prompt is empty");
  if (job.prompt.size() >= size_t(max_context()))
    throw Error("the prompt is " + std::to_string(job.prompt.size()) + " tokens; this server's context is " +
                std::to_string(max_context()) + " positions per request, prompt and output together");
  for (int32_t t : job.prompt)
    if (t < 0 || t >= model_.config().vocab)
      throw Error("prompt token " + std::to_string(t) + " outside the vocabulary");
  runtime::check_logit_bias(job.sampling, model_.config().vocab);
  if (job.max_new_tokens < 1) throw Error("the token limit must be at least 1");
  if (job.logprobs < -1 || job.logprobs > 20) throw Error("log-probabilities: at most 20 alternatives");
  std::shared_ptr<Generation> g(new Generation(*this, std::move(job), tok_));
  {
    std::lock_guard lk(mu_);
    if (!broken_.empty()) throw ServiceUnavailable("the server cannot generate: " + broken_);
    if (stopping_) throw ServiceUnavailable("the server is shutting down");
    // A request that will take a free slot at the engine thread's next turn does not wait: with
    // `max_waiting` 0 the server still runs up to max_sequences requests, and refuses only beyond them.
    const size_t free_slots = size_t(std::max(0, opts_.engine.max_sequences - int(running_.size())));
    if (waiting_.size() >= free_slots + size_t(opts_.max_waiting))
      throw ServiceBusy("the server is busy: " + std::to_string(running_count_) +
                        " requests generating and " + std::to_string(waiting_.size()) +
                        " waiting; try again later");
    waiting_.push_back(g);
  }
  cv_.notify_all();
  return g;
}

void GenerationService::wake() {
  { std::lock_guard lk(mu_); }  // orders the caller's flag before the engine thread's next check
  cv_.notify_all();
}

void GenerationService::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ServiceStatus GenerationService::status() const {
  std::lock_guard lk(mu_);
  ServiceStatus s;
  s.running = running_count_;
  s.waiting = int(waiting_.size());
  s.broken = broken_;
  s.stats = stats_;
  return s;
}

void GenerationService::fail_all(const std::string& why) {
  for (auto& [id, g] : running_) g->finish(StopReason::error, why);
  for (auto& g : waiting_) g->finish(StopReason::error, why);
  running_.clear();
  waiting_.clear();
  running_count_ = 0;
}

void GenerationService::run() {
  std::unique_lock lk(mu_);
  while (true) {
    cv_.wait(lk, [&] { return stopping_ || !waiting_.empty() || !running_.empty(); });
    if (stopping_) break;
    // Requests whose client left while they waited never start.
    std::erase_if(waiting_, [](const std::shared_ptr<Generation>& g) {
      if (!g->cancel_requested()) return false;
      g->finish(StopReason::cancelled);
      return true;
    });
    // Admit waiting requests while the engine has sequence slots. A request that stopped on a stop
    // sequence keeps its slot until the engine reports it cancelled (the step after), so the engine's
    // own count is never exceeded.
    while (!waiting_.empty() && int(running_.size()) < opts_.engine.max_sequences) {
      std::shared_ptr<Generation> g = std::move(waiting_.front());
      waiting_.pop_front();
      runtime::GenerationParams p;
      p.sampling = g->job_.sampling;
      p.max_new_tokens = g->job_.max_new_tokens;
      p.stop_tokens = stop_tokens_;
      p.logprobs = g->job_.logprobs;
      p.prompt_logprobs = g->job_.prompt_logprobs;
      p.constraint = g->job_.constraint;
      p.embed = g->job_.embed;
      try {
        running_[engine_.add(g->job_.prompt, p)] = g;
      } catch (const std::exception& e) {
        g->finish(StopReason::error, e.what());
      }
    }
    for (auto& [id, g] : running_)
      if (!g->cancel_sent_ && g->cancel_requested()) {
        engine_.cancel(id);
        g->cancel_sent_ = true;
        g->finish(StopReason::cancelled);
      }
    running_count_ = int(running_.size());
    if (running_.empty()) continue;

    lk.unlock();
    std::vector<runtime::TokenEvent> events;
    std::string failure;
    try {
      events = engine_.step();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    lk.lock();
    stats_ = engine_.stats();
    if (!failure.empty()) {
      broken_ = failure;
      fail_all(failure);
      continue;
    }
    for (const runtime::TokenEvent& e : events) {
      auto it = running_.find(e.request);
      if (it == running_.end()) continue;
      Generation& g = *it->second;
      if (e.finish == runtime::FinishReason::cancelled) {  // the engine let it go: its slot is free
        running_.erase(it);
        continue;
      }
      if (g.cancel_sent_) continue;  // stopped on a stop sequence; its cancelled event follows
      if (e.finish == runtime::FinishReason::embedded) {
        g.finish_embedded(e.embedding);
        running_.erase(it);
        continue;
      }
      std::string text;
      std::optional<runtime::TokenLogprobs> lp;  // an end-of-turn token is no part of the text
      if (e.token >= 0 && e.finish != runtime::FinishReason::stop_token) {
        text = g.stop_text_.push(g.decoder_.push(e.token));
        lp = e.logprobs;
      } else if (e.logprobs) {
        g.set_end_logprobs(*e.logprobs);
      }
      if (g.stop_text_.stopped()) {
        g.deliver(text, e.token >= 0, std::move(lp), e.prompt_logprobs);
        // The matched stop string: the first of the job's to complete in the generated text.
        g.finish(StopReason::stop_sequence, g.stop_text_.matched());
        if (e.finish == runtime::FinishReason::none) {
          engine_.cancel(e.request);
          g.cancel_sent_ = true;
        } else {
          running_.erase(it);
        }
        continue;
      }
      if (e.finish == runtime::FinishReason::none) {
        g.deliver(text, e.token >= 0, std::move(lp), e.prompt_logprobs);
        continue;
      }
      // The end: what the decoder and the stop-sequence filter still hold is text too (and may
      // complete a stop sequence).
      text += g.stop_text_.push(g.decoder_.flush());
      text += g.stop_text_.flush();
      g.deliver(text, e.token >= 0, std::move(lp), e.prompt_logprobs);
      if (g.stop_text_.stopped())
        g.finish(StopReason::stop_sequence, g.stop_text_.matched());
      else
        g.finish(e.finish == runtime::FinishReason::stop_token   ? StopReason::end_of_turn
                 : e.finish == runtime::FinishReason::max_tokens ? StopReason::max_tokens
                                                                 : StopReason::context_full);
      running_.erase(it);
    }
    running_count_ = int(running_.size());
  }
  // Stopping: everything still in flight ends as cancelled.
  for (auto& [id, g] : running_) g->finish(StopReason::cancelled);
  for (auto& g : waiting_) g->finish(StopReason::cancelled);
  running_.clear();
  waiting_.clear();
  running_count_ = 0;
}

}  // namespace mx8::server
