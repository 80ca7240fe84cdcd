// The generation engine: many sequences share one model and one paged KV cache; every step() runs
// ONE forward pass that carries a decode token of every running sequence plus prefill chunks of
// sequences still reading their prompt (chunked prefill), up to the model's tokens-per-step budget.
// The server batches users through it; `mx8 run` is the one-sequence case.
//
// Prefix caching: each full page of K/V a sequence has written is indexed by a hash of every token from
// position 0 to the page's end, and when a sequence starts (or starts over after a preemption) it takes
// the indexed pages that match its tokens, page by page, up to all but its last token (whose logits are
// needed), and starts with those positions cached. Pages are shared: every sequence whose block table
// holds a page counts as one holder, and a page no sequence holds stays indexed on a list that allocation
// takes from, least recently released first, once the free list is empty. A shared page is full and lies
// before every holder's next position, so no holder writes into it. So requests with a common system
// prompt share its pages while they run, and a multi-turn chat prefills only what is new: a finished
// sequence's last, partly filled page is kept too, and a sequence whose tokens continue the same full
// pages but end inside that page, or differ in it, takes over the kept page (one no sequence holds) that
// matches the most of them, and writes the rest. K/V of position p depends only on tokens 0..p (causal
// attention), so with row-independent kernels (the CPU's scalar ones) the result is bit for bit that of
// prefilling everything; the AVX2 f32 GEMV sums one row (decode) in another order than several (prefill),
// so there a reused position that was decoded differs by ulps, as it does when a prefill chunk has one
// token.
//
// Sliding window (a model's `sliding_window` shorter than max_context): a sequence's pages that fall
// wholly before the first position its next chunk attends to go back to the free list, so the
// cache holds kv_pages_per_sequence() pages per sequence, not max_context's; prefix caching is off
// (a sequence gives up the pages a shorter shared prefix needs).
//
// Preemption (EngineOptions::kv_positions below max_sequences x max_context): sequences take pages as they
// grow, from one pool. When a sequence finds none free (cached pages go first), it takes the pages of the
// newest sequences that are not in the step yet: they drop their K/V (their tokens, sampler and count
// stay) and prefill them again once pages are free, as vLLM's recompute preemption does. Older sequences
// come first: a sequence may preempt any newer one that is not in the step yet (decode tokens are placed
// before prefill chunks), and a decoding sequence with nothing newer left to take waits itself; a sequence
// preempts only as many as free what it misses (pages shared with others are freed when all their holders
// go). A prefill chunk leaves the pages the step's decoding sequences need next step. The pool holds one
// whole context, so the oldest sequence always progresses (fit_chunk). A recomputed position gets the K/V
// it had (row-independent kernels: bit for bit; the SIMD GEMV sums one row and several in different
// orders, a few ulps, as with prefix reuse).
//
//   Engine eng(model, backend, opts);
//   int id = eng.add(prompt_ids, params);
//   while (!eng.idle()) for (const TokenEvent& e : eng.step()) ...;
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/backend/host_buffer.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/sampler.h"
#include "mx8/runtime/token_constraint.h"

namespace mx8::cpu {
class ThreadPool;
}

namespace mx8::runtime {

struct EngineOptions {
  backend::KvFormat kv_format = backend::KvFormat::bf16;
  int max_context = 4096;    // positions per sequence (prompt + generated)
  int max_sequences = 1;     // sequences resident at once
  int page_size = 16;        // positions per KV page
  bool prefix_reuse = true;  // prefix caching (see above)
  // Positions the KV cache holds for all sequences together (rounded up to whole pages). 0: each of
  // max_sequences sequences its whole context (kv_pages_per_sequence), so none is ever preempted.
  // Fewer: a shared pool (see "Preemption" above); it must hold one sequence's context.
  int64_t kv_positions = 0;
  // Greedy and top-k rows (penalized or not) choose on the backend (Engine::where_drawn) where its memory is
  // not the host's (a GPU: the row would have to be downloaded); `always` does it on any backend (tests),
  // `never` on none.
  enum class BackendDraw { auto_, always, never };
  BackendDraw backend_draw = BackendDraw::auto_;
};

// The most alternatives a token's log-probability comes with (OpenAI's limit; more are not reported).
inline constexpr int kMaxTopLogprobs = 20;

struct GenerationParams {
  SamplingParams sampling;
  int max_new_tokens = 256;
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one of these (it is reported)
  int logprobs = -1;  // >= 0: each token's log-probability and this many alternatives (kMaxTopLogprobs)
  // With logprobs >= 0: also those of the prompt's tokens but the first (the OpenAI completions' `echo`),
  // each under the logits of the position before it; they come with the first generated token. Such a
  // sequence computes its whole prompt (no prefix caching) and reads back a row of logits per position.
  bool prompt_logprobs = false;
  // Which tokens may come next (structured output), or none. Each sequence gets its own copy (clone);
  // its rows are drawn on the host, from the logits it leaves (log-probabilities are the model's own).
  std::shared_ptr<const TokenConstraint> constraint;
  // An embedding instead of tokens: the request reads its prompt and ends (FinishReason::embedded) with
  // the final hidden state of the prompt's last position (TokenEvent::embedding; last-token pooling, as
  // decoder embedding models such as Qwen3-Embedding are read), not normalized. Nothing is generated.
  bool embed = false;
};

enum class FinishReason { none, stop_token, max_tokens, context_full, cancelled, embedded };
const char* finish_reason_name(FinishReason r);

struct TokenEvent {
  int request = 0;
  int32_t token = -1;  // -1 when the event only reports finishing
  FinishReason finish = FinishReason::none;
  std::optional<TokenLogprobs> logprobs;       // of `token`, when its request asked (GenerationParams)
  std::vector<TokenLogprobs> prompt_logprobs;  // with the first token: prompt positions 1.. (when asked)
  std::vector<float> embedding;                // GenerationParams::embed: [dim], with FinishReason::embedded
};

struct EngineStats {
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;
  double prefill_seconds = 0;  // time of steps that carried only prefill work
  double decode_seconds = 0;   // time of steps that carried decode work
  int64_t steps = 0;
  int64_t reused_tokens = 0;      // positions taken from cached pages instead of prefilled
  int64_t evicted_pages = 0;      // cached pages given to new positions
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
  // Pages kept for prefix caching that no sequence holds (for tests and diagnostics).
  size_t cached_pages() const { return cached_.size(); }

 private:
  struct Seq;
  // A page of the cache, for prefix caching.
  struct Page {
    int holders = 0;                   // sequences whose block table has it
    bool indexed = false;              // full, and in prefix_index_ under `hash`
    bool kept = false;                 // in children_ under `before`: indexed, or a finished sequence's last
    uint64_t hash = 0;                 // indexed: the prefix hash of positions [0, page end)
    uint64_t before = 0;               // kept: the prefix hash of the pages before it
    int32_t parent = -1;               // kept: the page before it in the sequence that wrote it (-1: none)
    std::vector<int32_t> tokens;       // kept: the tokens of its positions that hold K/V
    std::list<int32_t>::iterator lru;  // in cached_ while kept and held by no sequence
  };

  int alloc_page();
  size_t obtainable_pages() const;  // free, or cached and held by no sequence
  void hold(int32_t page);
  void drop(int32_t page);
  void keep(int32_t page, uint64_t before, int32_t parent, const int32_t* tokens, size_t n);
  void unkeep(int32_t page);
  void evict_cached_page();
  void index_full_pages(Seq& s);
  // Pages `s` lacks for positions [0, end).
  size_t pages_missing(const Seq& s, size_t end) const;
  // How many of `want` positions sequence `i` can have this step, preempting newer sequences as the
  // rules above allow (Preemption); 0 when it waits. `state` marks the step's sequences.
  enum class InStep : char { no, yes, preempted };
  size_t fit_chunk(size_t i, size_t want, bool decoding, size_t reserve, std::vector<InStep>& state);
  void preempt(Seq& s);
  void release_window_pages(Seq& s);
  void release(Seq& s);
  void take_prefix(Seq& s);
  // Whether new sequence `i` waits for an older one that is prefilling a prompt with the same first
  // page: once that one's pages are indexed, take_prefix finds them, where prefilling beside it would
  // compute the same positions twice (the choices of an OpenAI request with n > 1 arrive together).
  bool waits_for_shared_prefill(size_t i) const;
  // Where a sequence's next token is chosen. With no logits kept, on a backend that draws
  // (EngineOptions::backend_draw), the backend does what needs the whole row: it applies the penalties,
  // then greedy takes the arg max there, top-k sampling selects its candidates there, and a sequence that
  // asks for log-probabilities gets the row's log sum exp, best logits and its token's logit from there;
  // only indices and a few values leave the backend's memory instead of a vocabulary of logits (0.5 MB
  // per sequence and step at 128k). Unrestricted sampling is the host's.
  enum class Where { host, top_k, argmax };
  Where where_drawn(const Seq& s) const;
  // Whether the backend reads whole logit rows for the engine (penalties, selection, log-probabilities)
  // where it can, so that only results leave its memory (EngineOptions::backend_draw).
  bool backend_reads_rows() const;
  // What the rows the backend selects from ask of it besides the selection: their penalties
  // (StepBatch::penalties, penalty_entries) and log-probabilities (selected_logprobs, top_logprobs).
  void add_selected_rows(const std::vector<Seq*>& top_k_seqs, const std::vector<Seq*>& greedy_seqs,
                         model::StepBatch& b) const;

  model::LlamaModel& model_;
  backend::Backend& backend_;
  EngineOptions opts_;
  std::unique_ptr<backend::KvCache> kv_;
  std::vector<int> free_pages_;                          // held by no sequence, not cached
  std::vector<Page> pages_;                              // by page number
  std::unordered_map<uint64_t, int32_t> prefix_index_;   // full pages by hash (one page per hash)
  std::unordered_multimap<uint64_t, int32_t> children_;  // kept pages by the hash of the pages before them
  std::list<int32_t> cached_;               // cached pages no sequence holds, least recently used first
  std::vector<std::unique_ptr<Seq>> seqs_;  // active, in arrival order
  int next_id_ = 0;
  int max_pages_per_seq_ = 0;  // block table width: pages of max_context
  int window_ = 0;             // the model's sliding window when it is shorter than max_context, else 0
  EngineStats stats_;
  bool keep_logits_ = false;
  backend::HostBuffer<float> logits_;  // the step's logits rows, in the backend's fastest host memory
  std::unique_ptr<cpu::ThreadPool> sample_pool_;  // made at the first step that samples in parallel
};

}  // namespace mx8::runtime
