// The generation engine: many sequences share one model and one paged KV cache; every step() runs
// ONE forward pass that carries a decode token of every running sequence plus prefill chunks of
// sequences still reading their prompt (chunked prefill), up to the model's tokens-per-step budget.
// The server batches users through it; `mx8 run` is the one-sequence case.
//
// Prefix reuse: a finished sequence (any reason, cancel included) keeps its tokens and KV pages as a
// retained prefix (at most max_sequences of them, oldest evicted first; page allocation evicts them,
// oldest first, before it would run out, so resident sequences never starve). add() takes the retained
// prefix sharing the longest token prefix with the new prompt and starts the new sequence with those
// positions already cached (all but at least the last prompt token, whose logits are needed); the
// pages move whole to the new owner, the rest of that entry's pages go back to the free list. K/V of
// position p depends only on tokens 0..p (causal attention), so with row-independent kernels (the
// CPU's scalar ones) the result is bit for bit that of prefilling everything; the AVX2 f32 GEMV sums
// one row (decode) in another order than several (prefill), so there a reused position that was
// decoded differs by ulps, as it does when a prefill chunk has one token. A multi-turn chat thus
// prefills only what is new each turn.
//
// Sliding window (a model's `sliding_window` shorter than max_context): a sequence's pages that fall
// wholly before the first position its next chunk attends to go back to the free list, so the
// cache holds kv_pages_per_sequence() pages per sequence, not max_context's; prefix reuse is off
// (a retained prefix would have lost the pages a shorter shared prefix needs).
//
// Preemption (EngineOptions::kv_positions below max_sequences x max_context): sequences take pages as
// they grow, from one pool. When a sequence finds none free (retained prefixes go first), it takes
// the pages of the newest sequences that are not in the step yet: they drop their K/V (their tokens,
// sampler and count stay) and prefill them again once pages are free, as vLLM's recompute preemption
// does. Older sequences come first: a sequence may preempt any newer one that is not in the step yet
// (decode tokens are placed before prefill chunks), and a decoding sequence with nothing newer left to
// take waits itself. A prefill chunk leaves one free page per decoding sequence of the step, which may
// need it next step. The pool holds one whole context, so the oldest sequence always progresses
// (fit_chunk). A recomputed position gets the K/V it had
// (row-independent kernels: bit for bit; the SIMD GEMV sums one row and several in different orders,
// a few ulps, as with prefix reuse).
//
//   Engine eng(model, backend, opts);
//   int id = eng.add(prompt_ids, params);
//   while (!eng.idle()) for (const TokenEvent& e : eng.step()) ...;
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/backend/host_buffer.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/sampler.h"

namespace mx8::cpu {
class ThreadPool;
}

namespace mx8::runtime {

struct EngineOptions {
  backend::KvFormat kv_format = backend::KvFormat::bf16;
  int max_context = 4096;    // positions per sequence (prompt + generated)
  int max_sequences = 1;     // sequences resident at once
  int page_size = 16;        // positions per KV page
  bool prefix_reuse = true;  // keep finished sequences' KV and reuse their common prefix (see above)
  // Positions the KV cache holds for all sequences together (rounded up to whole pages). 0: each of
  // max_sequences sequences its whole context (kv_pages_per_sequence), so none is ever preempted.
  // Fewer: a shared pool (see "Preemption" above); it must hold one sequence's context.
  int64_t kv_positions = 0;
  // Greedy and top-k rows choose on the backend (Engine::where_drawn) where its memory is not the host's
  // (a GPU: the row would have to be downloaded); `always` does it on any backend (tests), `never` on none.
  enum class BackendDraw { auto_, always, never };
  BackendDraw backend_draw = BackendDraw::auto_;
};

struct GenerationParams {
  SamplingParams sampling;
  int max_new_tokens = 256;
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one of these (it is reported)
};

enum class FinishReason { none, stop_token, max_tokens, context_full, cancelled };
const char* finish_reason_name(FinishReason r);

struct TokenEvent {
  int request = 0;
  int32_t token = -1;  // -1 when the event only reports finishing
  FinishReason finish = FinishReason::none;
};

struct EngineStats {
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  double prefill_seconds = 0;  // time of steps that carried only prefill work
  double decode_seconds = 0;   // time of steps that carried decode work
  int64_t steps = 0;
  int64_t reused_tokens = 0;      // prompt positions taken from retained prefixes instead of prefilled
  int64_t evicted_prefixes = 0;   // retained prefixes dropped (count bound or page pressure)
  int64_t preemptions = 0;        // sequences that gave their pages back to older ones (see Preemption)
  int64_t recomputed_tokens = 0;  // positions whose K/V were dropped by preemption (prefilled again)
};

// MemAvailable of /proc/meminfo, or 0.
size_t host_available_memory();

// KV pages one sequence holds at most: those of max_context, or with a sliding window W the pages
// of a step's chunk (up to max_tokens_per_step positions) and the W - 1 positions before it.
int kv_pages_per_sequence(const model::LlamaConfig& c, const EngineOptions& o, int max_tokens_per_step);
// Pages of the whole cache: every sequence's kv_pages_per_sequence, or the kv_positions pool when
// that is smaller (Error if it cannot hold one sequence).
int kv_pool_pages(const model::LlamaConfig& c, const EngineOptions& o, int max_tokens_per_step);

// What a configuration costs in memory, printed before loading (mx8 run prints it up front).
struct MemoryPlan {
  size_t weight_bytes = 0;
  size_t kv_bytes = 0;  // for max_context x max_sequences
  size_t kv_bytes_per_token = 0;
  size_t activation_bytes = 0;
  size_t available_bytes = 0;  // 0 when unknown
  bool fits = true;
  std::string text;  // human-readable, several lines
};
// `weight_bytes` as the model will hold them (estimate_weight_bytes gives it before loading).
// `available_bytes`: what the device can hold (Backend::available_memory()); 0 = unknown (no verdict).
MemoryPlan plan_memory(const model::LlamaConfig& c, size_t weight_bytes, const EngineOptions& o,
                       int max_tokens_per_step, size_t available_bytes = host_available_memory());
// A shared pool for a plan that does not fit (EngineOptions::kv_positions): the positions that fit in
// what the weights and activations leave of `plan.available_bytes`, less a margin for what the
// estimates omit; 0 when the plan fits, or when not even one sequence's context would.
int64_t kv_positions_that_fit(const MemoryPlan& plan, const model::LlamaConfig& c, const EngineOptions& o,
                              int max_tokens_per_step);
size_t estimate_weight_bytes(const model::LlamaConfig& c, model::WeightMode mode,
                             int source_bytes_per_weight);

class Engine {
 public:
  Engine(model::LlamaModel& model, backend::Backend& backend, const EngineOptions& opts);
  ~Engine();

  // Queues a request; returns its id. The prompt must be non-empty and shorter than max_context.
  int add(std::vector<int32_t> prompt, const GenerationParams& params);
  void cancel(int request);
  bool idle() const;
  // One forward step; returns the tokens produced (one per sequence that finished its prompt or decoded).
  std::vector<TokenEvent> step();

  const EngineStats& stats() const { return stats_; }
  const EngineOptions& options() const { return opts_; }
  size_t kv_bytes() const;
  // Pages on the free list (for tests: a sliding window returns pages as a sequence moves on).
  size_t free_pages() const { return free_pages_.size(); }
  // Logits of the last step for `request` (valid after a step that sampled for it; for tests).
  const std::vector<float>* last_logits(int request) const;
  // When set, every step keeps the logits it sampled from (tests compare them to references).
  void keep_logits(bool on) { keep_logits_ = on; }
  // Retained prefixes held now (at most max_sequences; for tests and diagnostics).
  size_t retained_prefixes() const { return retained_.size(); }

 private:
  struct Seq;
  // A finished sequence's positions whose K/V are in the cache, and the pages holding them.
  struct Retained {
    std::vector<int32_t> tokens;
    std::vector<int32_t> pages;
  };
  int alloc_page();
  size_t obtainable_pages() const;  // free, or held by retained prefixes
  // Pages `s` lacks for positions [0, end).
  size_t pages_missing(const Seq& s, size_t end) const;
  // How many of `want` positions sequence `i` can have this step, preempting newer sequences as the
  // rules above allow (Preemption); 0 when it waits. `state` marks the step's sequences.
  enum class InStep : char { no, yes, preempted };
  size_t fit_chunk(size_t i, size_t want, bool decoding, size_t decoders, std::vector<InStep>& state);
  void preempt(Seq& s);
  void release_window_pages(Seq& s);
  void release(Seq& s);
  void evict_oldest_prefix();
  void take_prefix(Seq& s);
  // Where a sequence's next token is chosen. Without penalties (and with no logits kept), on a backend
  // that draws (EngineOptions::backend_draw), the backend does what needs the whole row: greedy takes
  // the arg max there, top-k sampling selects its candidates there, and only indices (and k values)
  // leave the backend's memory instead of a vocabulary of logits (0.5 MB per sequence and step at
  // 128k). Everything else is the host's.
  enum class Where { host, top_k, argmax };
  Where where_drawn(const Seq& s) const;

  model::LlamaModel& model_;
  backend::Backend& backend_;
  EngineOptions opts_;
  std::unique_ptr<backend::KvCache> kv_;
  std::vector<int> free_pages_;
  std::vector<std::unique_ptr<Seq>> seqs_;  // active, in arrival order
  std::deque<Retained> retained_;           // oldest first
  size_t retained_pages_ = 0;               // their pages, all together
  int next_id_ = 0;
  int max_pages_per_seq_ = 0;  // block table width: pages of max_context
  int window_ = 0;             // the model's sliding window when it is shorter than max_context, else 0
  EngineStats stats_;
  bool keep_logits_ = false;
  backend::HostBuffer<float> logits_;  // the step's logits rows, in the backend's fastest host memory
  std::unique_ptr<cpu::ThreadPool> sample_pool_;  // made at the first step that samples in parallel
};

}  // namespace mx8::runtime
