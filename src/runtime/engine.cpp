// Engine: continuous batching over a paged KV cache (see engine.h).
#include "mx8/runtime/engine.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <thread>

#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/error.h"

namespace mx8::runtime {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none:
      return "none";
    case FinishReason::stop_token:
      return "stop";
    case FinishReason::max_tokens:
      return "length";
    case FinishReason::context_full:
      return "context_full";
    case FinishReason::cancelled:
      return "cancelled";
    case FinishReason::embedded:
      return "embedded";
  }
  return "?";
}

struct Engine::Seq {
  int id = 0;
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  size_t prompt_len = 0;
  size_t cached = 0;           // positions whose K/V are in the cache
  std::vector<int32_t> pages;  // by position / page_size; -1 once a sliding window has passed it
  size_t released = 0;         // pages[0, released) went back to the free list
  GenerationParams params;
  Sampler sampler;
  int generated = 0;
  FinishReason finish = FinishReason::none;
  std::vector<float> last_logits;
  std::unique_ptr<TokenConstraint> constraint;  // params.constraint's copy for this sequence
  Seq(const GenerationParams& p)
      : params(p), sampler(p.sampling), constraint(p.constraint ? p.constraint->clone() : nullptr) {}
  std::vector<uint64_t> hashes;           // of pages [0, hashes.size()): each full page's prefix hash
  bool prefix_looked_up = false;          // take_prefix ran since the sequence (re)started
  std::vector<TokenLogprobs> prompt_lps;  // GenerationParams::prompt_logprobs: of positions 1..
  // The log-probabilities the prompt still needs (all but the first token's), from the logits of the
  // positions before them.
  bool wants_prompt_logprobs() const {
    return params.prompt_logprobs && params.logprobs >= 0 && generated == 0 &&
           prompt_lps.size() + 1 < prompt_len;
  }
  // One token to feed after the prompt. A preempted sequence prefills its generated tokens too first.
  bool decoding() const { return tokens.size() == cached + 1 && cached >= prompt_len; }
};

namespace {

// The prefix hash of a page: of the hash of the pages before it (kNoPages for the first) and its tokens.
constexpr uint64_t kNoPages = 0x6d78382070616765ull;
uint64_t mix(uint64_t h, uint64_t v) {  // splitmix64's finalizer over h and v
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}
uint64_t page_hash(uint64_t before, const int32_t* tokens, size_t n) {
  uint64_t h = mix(before, n);
  for (size_t i = 0; i < n; ++i) h = mix(h, uint32_t(tokens[i]));
  return h;
}

}  // namespace

Engine::Engine(model::LlamaModel& model, backend::Backend& backend, const EngineOptions& opts)
    : model_(model), backend_(backend), opts_(opts), logits_(backend) {
  const model::LlamaConfig& c = model.config();
  if (opts.max_context <= 0 || opts.max_sequences <= 0 || opts.page_size <= 0)
    throw Error("engine: max_context, max_sequences and page_size must be positive");
  if (const int64_t limit = model::rope_position_limit(c); limit > 0 && opts.max_context > limit)
    throw Error("engine: a context of " + std::to_string(opts.max_context) + " positions is past the " +
                std::to_string(limit) + " to which the model's dynamic RoPE scaling keeps its frequencies " +
                "(mx8 does not recompute them past that point)");
  if (!backend.supports_kv(opts.kv_format))
    throw Error("backend " + backend.info().name + " does not support a " +
                std::string(backend::kv_format_name(opts.kv_format)) + " KV cache");
  max_pages_per_seq_ = (opts.max_context + opts.page_size - 1) / opts.page_size;
  window_ = c.sliding_window > 0 && c.sliding_window < opts.max_context ? int(c.sliding_window) : 0;
  backend::KvCacheDesc d;
  d.format = opts.kv_format;
  d.n_layers = int(c.n_layers);
  d.n_kv_heads = int(c.n_kv_heads);
  d.head_dim = int(c.head_dim);
  d.page_size = opts.page_size;
  d.n_pages = kv_pool_pages(c, opts, model.max_tokens_per_step());
  kv_ = backend.create_kv_cache(d);
  free_pages_.resize(size_t(d.n_pages));
  pages_.resize(size_t(d.n_pages));
  // Hand out low page numbers first (pop_back takes the end).
  for (int i = 0; i < d.n_pages; ++i) free_pages_[size_t(i)] = d.n_pages - 1 - i;
}

Engine::~Engine() = default;

bool Engine::backend_reads_rows() const {
  return !keep_logits_ &&
         (opts_.backend_draw == EngineOptions::BackendDraw::always ||
          (opts_.backend_draw == EngineOptions::BackendDraw::auto_ && !backend_.info().host_memory));
}

Engine::Where Engine::where_drawn(const Seq& s) const {
  const SamplingParams& p = s.params.sampling;
  if (!backend_reads_rows()) return Where::host;
  if (!p.logit_bias.empty()) return Where::host;  // backends apply penalties, not biases: rarely asked for
  if (s.constraint && s.constraint->holds_next()) return Where::host;
  if (p.temperature <= 0.0f) return Where::argmax;
  if (p.top_k > 0 && p.top_k <= backend::Backend::kMaxTopK && p.top_k < model_.config().vocab)
    return Where::top_k;
  return Where::host;
}

void Engine::add_selected_rows(const std::vector<Seq*>& top_k_seqs, const std::vector<Seq*>& greedy_seqs,
                               model::StepBatch& b) const {
  const int32_t vocab = int32_t(model_.config().vocab);
  int32_t row = 0;
  for (const auto* seqs : {&top_k_seqs, &greedy_seqs})
    for (const Seq* s : *seqs) {
      for (auto [token, count] : s->sampler.penalty_counts(s->tokens, vocab))
        b.penalty_entries.insert(b.penalty_entries.end(), {row, token, count});
      const SamplingParams& p = s->params.sampling;
      b.penalties.insert(b.penalties.end(), {p.repetition_penalty, p.frequency_penalty, p.presence_penalty});
      if (s->params.logprobs >= 0) {
        b.selected_logprobs = true;
        b.top_logprobs = std::max(b.top_logprobs, std::min(s->params.logprobs, kMaxTopLogprobs));
      }
      ++row;
    }
  if (b.penalty_entries.empty()) b.penalties.clear();
}

size_t Engine::kv_bytes() const {
  return kv_->desc().total_bytes();
}

int Engine::add(std::vector<int32_t> prompt, const GenerationParams& params) {
  if (prompt.empty()) throw Error("engine: empty prompt (a model needs at least one token, e.g. BOS)");
  if (prompt.size() >= size_t(opts_.max_context))
    throw Error("engine: prompt of " + std::to_string(prompt.size()) +
                " tokens does not fit the context of " + std::to_string(opts_.max_context));
  if (int(seqs_.size()) >= opts_.max_sequences)
    throw Error("engine: already " + std::to_string(seqs_.size()) + " sequences (max_sequences)");
  for (int32_t t : prompt)
    if (t < 0 || t >= model_.config().vocab)
      throw Error("engine: prompt token " + std::to_string(t) + " outside the vocabulary");
  check_logit_bias(params.sampling, model_.config().vocab);
  auto s = std::make_unique<Seq>(params);
  s->id = next_id_++;
  s->prompt_len = prompt.size();
  s->tokens = std::move(prompt);
  seqs_.push_back(std::move(s));
  return seqs_.back()->id;
}

void Engine::cancel(int request) {
  for (auto& s : seqs_)
    if (s->id == request && s->finish == FinishReason::none) s->finish = FinishReason::cancelled;
}

bool Engine::idle() const {
  return seqs_.empty();
}

const std::vector<float>* Engine::last_logits(int request) const {
  for (auto& s : seqs_)
    if (s->id == request) return &s->last_logits;
  return nullptr;
}

int Engine::alloc_page() {
  // Cached pages give way once the free list is empty. fit_chunk has counted what this step takes, so
  // the throw is a defensive check.
  if (free_pages_.empty() && !cached_.empty()) evict_cached_page();
  if (free_pages_.empty()) throw Error("engine: KV cache out of pages");
  const int p = free_pages_.back();
  free_pages_.pop_back();
  pages_[size_t(p)].holders = 1;
  return p;
}

size_t Engine::obtainable_pages() const {
  return free_pages_.size() + cached_.size();
}

void Engine::hold(int32_t p) {
  Page& pg = pages_[size_t(p)];
  if (pg.holders++ == 0) cached_.erase(pg.lru);  // only kept pages are taken while nobody holds them
}

void Engine::drop(int32_t p) {
  Page& pg = pages_[size_t(p)];
  if (--pg.holders > 0) return;
  if (pg.kept)
    pg.lru = cached_.insert(cached_.end(), p);
  else
    free_pages_.push_back(p);
}

void Engine::keep(int32_t p, uint64_t before, int32_t parent, const int32_t* tokens, size_t n) {
  Page& pg = pages_[size_t(p)];
  pg.kept = true;
  pg.before = before;
  pg.parent = parent;
  pg.tokens.assign(tokens, tokens + n);
  children_.emplace(before, p);
}

void Engine::unkeep(int32_t p) {
  Page& pg = pages_[size_t(p)];
  if (pg.indexed) prefix_index_.erase(pg.hash);
  for (auto [it, end] = children_.equal_range(pg.before); it != end; ++it)
    if (it->second == p) {
      children_.erase(it);
      break;
    }
  const int holders = pg.holders;
  pg = Page();
  pg.holders = holders;
}

void Engine::evict_cached_page() {
  const int32_t p = cached_.front();
  cached_.pop_front();
  unkeep(p);
  free_pages_.push_back(p);
  stats_.evicted_pages++;
}

void Engine::index_full_pages(Seq& s) {
  if (!opts_.prefix_reuse || window_) return;
  const size_t ps = size_t(opts_.page_size);
  while (s.hashes.size() < s.cached / ps) {
    const size_t i = s.hashes.size();
    const int32_t* t = s.tokens.data() + i * ps;
    const uint64_t before = i ? s.hashes.back() : kNoPages, h = page_hash(before, t, ps);
    s.hashes.push_back(h);
    const int32_t p = s.pages[i], parent = i ? s.pages[i - 1] : -1;
    Page& pg = pages_[size_t(p)];
    // Chains of indexed pages only (take_prefix follows `parent`), one page per hash: a page another
    // sequence also wrote (both prefilled the same tokens at once) stays out, and the pages after it.
    if (pg.indexed || (parent >= 0 && !pages_[size_t(parent)].indexed) || prefix_index_.count(h)) continue;
    pg.indexed = true;
    pg.hash = h;
    keep(p, before, parent, t, ps);
    prefix_index_.emplace(h, p);
  }
}

size_t Engine::pages_missing(const Seq& s, size_t end) const {
  const size_t pages = (end + size_t(opts_.page_size) - 1) / size_t(opts_.page_size);
  return pages > s.pages.size() ? pages - s.pages.size() : 0;
}

void Engine::preempt(Seq& s) {
  stats_.preemptions++;
  stats_.recomputed_tokens += int64_t(s.cached);
  release(s);
  s.cached = 0;
  s.prefix_looked_up = false;
}

size_t Engine::fit_chunk(size_t i, size_t want, bool decoding, size_t reserve, std::vector<InStep>& state) {
  Seq& s = *seqs_[i];
  const size_t ps = size_t(opts_.page_size);
  // Positions [cached, cached + n) fit in the pages s holds plus `extra` new ones.
  auto fits = [&](size_t extra) { return std::min(want, (s.pages.size() + extra) * ps - s.cached); };
  // A prefill chunk leaves the pages that the step's decoding sequences need next step.
  auto spare = [&] {
    const size_t n = obtainable_pages(), keep = decoding ? 0 : reserve;
    return n > keep ? n - keep : 0;
  };
  const size_t need = pages_missing(s, s.cached + (decoding ? want : 1));
  // Victims: the newest sequences first, not in the step, newer than s; as few as free what is
  // missing between them (a shared page is freed when all its holders go), and none if all of them
  // together could not.
  std::vector<size_t> victims;
  std::unordered_map<int32_t, int> leaving;  // page -> its holders among the victims
  size_t freed = 0;
  for (size_t v = seqs_.size(); v-- > i + 1 && spare() + freed < need;) {
    if (state[v] != InStep::no || seqs_[v]->pages.empty()) continue;
    victims.push_back(v);
    for (int32_t p : seqs_[v]->pages)
      if (p >= 0 && ++leaving[p] == pages_[size_t(p)].holders) ++freed;
  }
  if (spare() + freed >= need) {
    for (size_t v : victims) {
      preempt(*seqs_[v]);
      state[v] = InStep::preempted;
    }
    return fits(spare());
  }
  // Not enough newer pages: a decoding sequence gives its own to the older ones and waits.
  if (decoding) {
    preempt(s);
    state[i] = InStep::preempted;
  }
  return 0;
}

void Engine::release_window_pages(Seq& s) {
  // Pages wholly before the first position the next chunk attends to are done with.
  const size_t ps = size_t(opts_.page_size);
  for (; window_ && s.released < s.pages.size() &&
         int64_t((s.released + 1) * ps) <= int64_t(s.cached) + 1 - window_;
       ++s.released) {
    drop(s.pages[s.released]);
    s.pages[s.released] = -1;
  }
}

void Engine::release(Seq& s) {
  // A finished sequence's last, partly filled page is kept when it alone holds it and the pages before
  // it are indexed (take_prefix finds it through them). Pages cover exactly [0, cached).
  const size_t ps = size_t(opts_.page_size), full = s.cached / ps, part = s.cached % ps;
  if (opts_.prefix_reuse && !window_ && part > 0 && s.pages.size() == full + 1 && s.hashes.size() == full &&
      pages_[size_t(s.pages[full])].holders == 1 && (full == 0 || pages_[size_t(s.pages[full - 1])].indexed))
    keep(s.pages[full], full ? s.hashes.back() : kNoPages, full ? s.pages[full - 1] : -1,
         s.tokens.data() + full * ps, part);
  // Last page first: the cache then gives up a sequence's later pages before the earlier ones that
  // lead to them (a page is found only through the pages before it).
  for (auto p = s.pages.rbegin(); p != s.pages.rend(); ++p)
    if (*p >= 0) drop(*p);
  s.pages.clear();
  s.hashes.clear();
  s.released = 0;
}

void Engine::take_prefix(Seq& s) {
  s.prefix_looked_up = true;
  if (!opts_.prefix_reuse || window_ || !s.pages.empty() || s.wants_prompt_logprobs()) return;
  const size_t ps = size_t(opts_.page_size);
  // At least the last token is fed: its logits are the next token's.
  const size_t limit = s.tokens.size() - 1;
  uint64_t before = kNoPages;
  int32_t parent = -1;
  while ((s.pages.size() + 1) * ps <= limit) {
    const int32_t* t = s.tokens.data() + s.pages.size() * ps;
    const uint64_t h = page_hash(before, t, ps);
    const auto it = prefix_index_.find(h);
    if (it == prefix_index_.end()) break;
    const Page& pg = pages_[size_t(it->second)];
    if (pg.parent != parent || !std::equal(pg.tokens.begin(), pg.tokens.end(), t)) break;  // a collision
    hold(it->second);
    s.pages.push_back(it->second);
    s.hashes.push_back(h);
    before = h;
    parent = it->second;
  }
  s.cached = s.pages.size() * ps;
  // Then the kept page after those that shares the most tokens with what follows and that no sequence
  // holds (a finished sequence's last page, or a full page whose later tokens differ or lie past the
  // limit). It becomes this sequence's own page: its positions from the first difference on are
  // overwritten before attention reads them (kv_len = pos + 1), as a page from the free list holds
  // what its last owner left.
  const int32_t* next = s.tokens.data() + s.cached;
  const size_t room = std::min(limit - s.cached, ps);
  int32_t best = -1;
  size_t best_n = 0;
  for (auto [it, end] = children_.equal_range(before); it != end; ++it) {
    const Page& pg = pages_[size_t(it->second)];
    if (pg.holders > 0 || pg.parent != parent) continue;
    size_t n = 0;
    while (n < std::min(room, pg.tokens.size()) && pg.tokens[n] == next[n]) ++n;
    if (n > best_n) best = it->second, best_n = n;
  }
  if (best >= 0) {
    hold(best);
    unkeep(best);
    s.pages.push_back(best);
    s.cached += best_n;
  }
  stats_.reused_tokens += int64_t(s.cached);
}

bool Engine::waits_for_shared_prefill(size_t i) const {
  const Seq& s = *seqs_[i];
  const size_t ps = size_t(opts_.page_size);
  // take_prefix would find nothing (off, a window, prompt log-probabilities) or no whole page.
  if (!opts_.prefix_reuse || window_ || s.wants_prompt_logprobs() || s.tokens.size() <= ps) return false;
  const size_t limit = s.tokens.size() - 1;  // take_prefix's: the last token is fed
  auto same_page = [&](const Seq& o, size_t at) {
    return at + ps <= limit && at + ps <= o.tokens.size() &&
           std::equal(s.tokens.begin() + std::ptrdiff_t(at), s.tokens.begin() + std::ptrdiff_t(at + ps),
                      o.tokens.begin() + std::ptrdiff_t(at));
  };
  for (size_t j = 0; j < i; ++j) {  // older ones only, so that the oldest of them never waits
    const Seq& o = *seqs_[j];
    // `o`'s first page not indexed yet (to be written, or written this step: pages are indexed as
    // the step ends). Two pages compared, not the whole prompt: a wrong guess only delays `s` while
    // `o` goes on.
    if (same_page(o, 0) && same_page(o, o.hashes.size() * ps)) return true;
  }
  return false;
}

std::vector<TokenEvent> Engine::step() {
  std::vector<TokenEvent> events;
  // Drop cancelled sequences first.
  for (auto& s : seqs_)
    if (s->finish == FinishReason::cancelled) {
      events.push_back({s->id, -1, FinishReason::cancelled, std::nullopt, {}, {}});
      release(*s);
    }
  std::erase_if(seqs_, [](auto& s) { return s->finish == FinishReason::cancelled; });
  if (seqs_.empty()) return events;

  const auto t0 = std::chrono::steady_clock::now();
  int budget = model_.max_tokens_per_step();
  model::StepBatch b;
  std::vector<Seq*> rows;  // the block tables' rows, filled once the step's width is known
  // Sequences whose next token is drawn this step, with their rows: sampled on the host from their
  // logits (`sampled`, b.logit_rows), from the k candidates the backend selected (`top_k_seqs`), or the
  // backend's arg max (greedy). The forward pass gets the rows in that order.
  std::vector<Seq*> sampled, top_k_seqs, greedy_seqs;
  // Prompt positions whose logits give a prompt token's log-probability: the sequence, the row.
  std::vector<std::pair<Seq*, int32_t>> prompt_rows;
  std::vector<int32_t> top_k_rows, greedy_rows;
  struct Drawn {
    Seq* s;
    Where where;
    size_t index;  // among the sequences drawn there
  };
  std::vector<Drawn> drawn;    // in row order
  std::vector<Seq*> embedded;  // sequences whose prompt ends this step and that want its hidden state
  int64_t n_decode = 0, n_prefill = 0;
  // Decode tokens first (one per running sequence), then prefill chunks with what budget is left, each
  // within the pages it can get (fit_chunk).
  std::vector<InStep> state(seqs_.size(), InStep::no);
  size_t reserve = 0;  // pages the step's decoding sequences need for their next token
  for (int pass = 0; pass < 2 && budget > 0; ++pass) {
    for (size_t i = 0; i < seqs_.size() && budget > 0; ++i) {
      Seq& s = *seqs_[i];
      const bool decoding = s.decoding();
      if (s.tokens.size() == s.cached || decoding != (pass == 0) || state[i] != InStep::no) continue;
      // A sequence looks for cached pages when it first gets budget: the pages of prompts ahead of it,
      // prefilled meanwhile, are indexed by then.
      if (!s.prefix_looked_up && waits_for_shared_prefill(i)) continue;
      if (!s.prefix_looked_up) take_prefix(s);
      const size_t pending = s.tokens.size() - s.cached;
      release_window_pages(s);
      const int chunk =
          int(fit_chunk(i, std::min<size_t>(pending, size_t(budget)), decoding, reserve, state));
      if (chunk == 0) continue;  // waits for pages
      state[i] = InStep::yes;

      const int row = int(rows.size());
      rows.push_back(&s);
      const size_t last_pos = s.cached + size_t(chunk) - 1;
      while (s.pages.size() <= last_pos / size_t(opts_.page_size)) s.pages.push_back(alloc_page());
      for (int t = 0; t < chunk; ++t) {
        const int32_t pos = int32_t(s.cached) + t;
        // Position pos predicts token pos + 1; prompt_lps holds those of positions [0, its size) (a
        // preempted sequence computes them again, but reads them only once).
        if (s.wants_prompt_logprobs() && size_t(pos) + 1 < s.prompt_len && size_t(pos) >= s.prompt_lps.size())
          prompt_rows.emplace_back(&s, int32_t(b.tokens.size()));
        b.tokens.push_back(s.tokens[size_t(pos)]);
        b.pos.push_back(pos);
        b.seq.push_back(row);
        b.slot.push_back(s.pages[size_t(pos / opts_.page_size)] * opts_.page_size + pos % opts_.page_size);
        b.kv_len.push_back(pos + 1);
      }
      s.cached += size_t(chunk);
      reserve += decoding && s.cached % size_t(opts_.page_size) == 0;
      budget -= chunk;
      (decoding ? n_decode : n_prefill) += chunk;
      if (s.cached == s.tokens.size()) {
        const int32_t row = int32_t(b.tokens.size()) - 1;
        const Where where = where_drawn(s);
        if (s.params.embed) {
          b.hidden_rows.push_back(row);
          embedded.push_back(&s);
        } else if (where == Where::argmax) {
          drawn.push_back({&s, where, greedy_rows.size()});
          greedy_rows.push_back(row);
          greedy_seqs.push_back(&s);
        } else if (where == Where::top_k) {
          drawn.push_back({&s, where, top_k_seqs.size()});
          top_k_rows.push_back(row);
          top_k_seqs.push_back(&s);
          b.temperature.push_back(s.params.sampling.temperature);
          b.top_k = std::max(b.top_k, s.params.sampling.top_k);  // each row takes its own first top_k
        } else {
          drawn.push_back({&s, where, sampled.size()});
          b.logit_rows.push_back(row);
          sampled.push_back(&s);
        }
      }
    }
  }
  // The oldest sequence can always take the pages it needs (fit_chunk), so a step without work is a bug.
  if (b.tokens.empty()) throw Error("engine: no sequence could get KV cache pages this step");
  // The block tables are as wide as the step's longest sequence needs, rounded up to a power of two,
  // not max_context: the backend chooses attention's layout by that capacity (the lengths are on the
  // device), and at a long max_context short sequences would pay for splits over positions they do not
  // have (H200, Llama-3-8B shape, 128 positions, max_context 131072: 346 against 374 tok/s), and each
  // step would upload 32 KB of table per row. Powers of two keep the CUDA graphs of decode steps, one
  // per width, to a few.
  size_t width = 1;
  for (const Seq* s : rows) width = std::max(width, s->pages.size());
  width = std::min(std::bit_ceil(width), size_t(max_pages_per_seq_));
  b.max_pages_per_seq = int(width);
  b.block_tables.assign(rows.size() * width, 0);
  for (size_t r = 0; r < rows.size(); ++r)
    std::copy(rows[r]->pages.begin(), rows[r]->pages.end(),
              b.block_tables.begin() + std::ptrdiff_t(r * width));
  const size_t vocab = size_t(model_.config().vocab);
  // Prompt rows come after the sampled rows: downloaded whole too, or (StepBatch::logprob_tokens) only what
  // their log-probabilities need.
  const bool lps_on_backend = backend_reads_rows();
  for (const auto& [s, row] : prompt_rows) {
    b.logit_rows.push_back(row);
    if (!lps_on_backend) continue;
    b.logprob_tokens.push_back(s->tokens[size_t(b.pos[size_t(row)]) + 1]);  // what the position predicts
    b.top_logprobs = std::max(b.top_logprobs, std::min(s->params.logprobs, kMaxTopLogprobs));
  }
  float* logits = logits_.reserve((sampled.size() + (lps_on_backend ? 0 : prompt_rows.size())) * vocab);
  b.logit_rows.insert(b.logit_rows.end(), top_k_rows.begin(), top_k_rows.end());
  b.logit_rows.insert(b.logit_rows.end(), greedy_rows.begin(), greedy_rows.end());
  b.top_k_rows = int(top_k_rows.size());
  b.argmax_rows = int(greedy_rows.size());
  add_selected_rows(top_k_seqs, greedy_seqs, b);
  const size_t K = size_t(b.top_k);
  std::vector<float> top_values(top_k_rows.size() * K);
  std::vector<int32_t> top_ids(top_k_rows.size() * K), greedy_picked(greedy_rows.size());
  // Log-probability results: the prompt rows', then (selected_logprobs) the top-k and greedy rows'.
  const size_t L = b.logprob_tokens.size(), KL = size_t(b.top_logprobs),
               LS = L + (b.selected_logprobs ? top_k_rows.size() + greedy_rows.size() : 0);
  std::vector<double> lse(LS);
  std::vector<float> token_logits(LS), top_lp_values(LS * KL),
      drawn_logits(b.selected_logprobs ? top_k_rows.size() * K + greedy_rows.size() : 0);
  std::vector<int32_t> top_lp_ids(LS * KL);
  std::vector<float> penalty_raw(b.selected_logprobs ? b.penalty_entries.size() / 3 : 0);
  const size_t dim = size_t(model_.config().dim);
  std::vector<float> hidden(embedded.size() * dim);
  model_.forward(
      b, *kv_,
      {logits, top_values.data(), top_ids.data(), greedy_picked.data(), lse.data(), token_logits.data(),
       top_lp_values.data(), top_lp_ids.data(), drawn_logits.data(), penalty_raw.data(), hidden.data()});
  for (Seq* s : rows) index_full_pages(*s);
  for (size_t i = 0; i < embedded.size(); ++i) {
    TokenEvent e{embedded[i]->id, -1, FinishReason::embedded, std::nullopt, {}, {}};
    e.embedding.assign(hidden.begin() + std::ptrdiff_t(i * dim),
                       hidden.begin() + std::ptrdiff_t((i + 1) * dim));
    embedded[i]->finish = FinishReason::embedded;
    events.push_back(std::move(e));
  }
  for (size_t r = 0; r < prompt_rows.size(); ++r) {
    Seq& s = *prompt_rows[r].first;
    const size_t next = s.prompt_lps.size() + 1;  // the token this row predicts
    const int top_n = std::min(s.params.logprobs, kMaxTopLogprobs);
    s.prompt_lps.push_back(lps_on_backend ? token_logprobs(lse[r], s.tokens[next], token_logits[r],
                                                           {top_lp_values.data() + r * KL, size_t(top_n)},
                                                           {top_lp_ids.data() + r * KL, size_t(top_n)})
                                          : token_logprobs({logits + (sampled.size() + r) * vocab, vocab},
                                                           s.tokens[next], top_n));
  }
  std::vector<int32_t> picked(sampled.size());
  std::vector<std::optional<TokenLogprobs>> logprobs(sampled.size());

  // Sampling: each sequence has its own sampler and logits row, so rows are independent and the result
  // does not depend on how they are spread over threads. With a large vocabulary and several
  // sequences, they run on a pool: ~50 us per 128k-entry row, serially 3 ms of a 64-sequence step.
  auto sample_rows = [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) {
      Seq& s = *sampled[r];
      std::span<float> lg(logits + r * vocab, vocab);
      if (keep_logits_) s.last_logits.assign(lg.begin(), lg.end());
      std::vector<float> raw;  // the constraint and the penalties change lg in place
      if (s.params.logprobs >= 0) raw.assign(lg.begin(), lg.end());
      if (s.constraint) s.constraint->mask(lg);
      picked[r] = s.sampler.sample(lg, s.tokens);
      if (s.constraint) s.constraint->accept(picked[r]);
      if (s.params.logprobs >= 0)
        logprobs[r] = token_logprobs(raw, picked[r], std::min(s.params.logprobs, kMaxTopLogprobs));
    }
  };
  if (sampled.size() >= 2 && vocab >= 32768) {
    if (!sample_pool_)
      sample_pool_ = std::make_unique<cpu::ThreadPool>(
          int(std::min(8u, std::max(1u, std::thread::hardware_concurrency()))));
    sample_pool_->parallel_for(sampled.size(), 1, sample_rows);
  } else {
    sample_rows(0, sampled.size());
  }
  for (const Drawn& d : drawn) {
    Seq& s = *d.s;
    const int32_t tok =
        d.where == Where::host ? picked[d.index]
        : d.where == Where::argmax
            ? greedy_picked[d.index]
            : s.sampler.sample_top_k({top_values.data() + d.index * K, K}, {top_ids.data() + d.index * K, K});
    s.tokens.push_back(tok);
    s.generated++;
    if (s.constraint && d.where != Where::host) s.constraint->accept(tok);  // one free this step
    TokenEvent e{s.id, tok, FinishReason::none, std::nullopt, {}, {}};
    if (d.where == Where::host) {
      e.logprobs = std::move(logprobs[d.index]);
    } else if (s.params.logprobs >= 0) {  // from the backend's results for this row (selected_logprobs)
      const size_t row = d.where == Where::top_k ? d.index : top_k_rows.size() + d.index, i = L + row;
      float logit = NAN;  // the drawn token's: of its candidate, or the arg max's
      if (d.where == Where::argmax) {
        logit = drawn_logits[top_k_rows.size() * K + d.index];
      } else {
        for (size_t j = 0; j < K; ++j)
          if (top_ids[d.index * K + j] == tok) logit = drawn_logits[d.index * K + j];
      }
      for (size_t j = 0; j < penalty_raw.size(); ++j)  // a penalized token: its logit before the penalty
        if (b.penalty_entries[3 * j] == int32_t(row) && b.penalty_entries[3 * j + 1] == tok)
          logit = penalty_raw[j];
      const size_t top_n = size_t(std::min(s.params.logprobs, kMaxTopLogprobs));
      e.logprobs = token_logprobs(lse[i], tok, logit, {top_lp_values.data() + i * KL, top_n},
                                  {top_lp_ids.data() + i * KL, top_n});
    }
    if (s.generated == 1) e.prompt_logprobs = std::move(s.prompt_lps);
    const auto& st = s.params.stop_tokens;
    if (std::find(st.begin(), st.end(), tok) != st.end())
      e.finish = FinishReason::stop_token;
    else if (s.generated >= s.params.max_new_tokens)
      e.finish = FinishReason::max_tokens;
    else if (s.tokens.size() >= size_t(opts_.max_context))
      e.finish = FinishReason::context_full;
    s.finish = e.finish;
    events.push_back(e);
  }
  for (auto& s : seqs_)
    if (s->finish != FinishReason::none) release(*s);
  std::erase_if(seqs_, [](auto& s) { return s->finish != FinishReason::none; });

  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.steps++;
  stats_.prefill_tokens += n_prefill;
  stats_.decode_tokens += n_decode;
  if (n_decode > 0)
    stats_.decode_seconds += dt;
  else
    stats_.prefill_seconds += dt;
  return events;
}

// ---------------------------------------------------------------------------------------------

size_t host_available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

size_t estimate_weight_bytes(const model::LlamaConfig& c, model::WeightMode mode,
                             int source_bytes_per_weight) {
  const double per_layer = double(c.dim) * double(c.n_heads * c.head_dim) * 2 +
                           double(c.dim) * double(c.n_kv_heads * c.head_dim) * 2 +
                           double(c.dim) * double(c.ffn) * 3;
  const double linear = per_layer * double(c.n_layers);
  const double head = c.tied_embeddings ? 0 : double(c.vocab) * double(c.dim);
  const double embed = double(c.vocab) * double(c.dim);
  double bpw = source_bytes_per_weight;
  switch (mode) {
    case model::WeightMode::f32:
      bpw = 4;
      break;
    case model::WeightMode::bf16:
      bpw = 2;
      break;
    case model::WeightMode::fp8:
      bpw = 1 + 1.0 / 16384;
      break;
    case model::WeightMode::mxfp8:
      bpw = 1 + 1.0 / 32;
      break;
    case model::WeightMode::as_given:
      break;
  }
  const double embed_bpw = source_bytes_per_weight >= 2 ? source_bytes_per_weight : 2;
  return size_t((linear + head) * bpw + embed * embed_bpw);
}

int kv_pool_pages(const model::LlamaConfig& c, const EngineOptions& o, int max_tokens_per_step) {
  const int64_t one = kv_pages_per_sequence(c, o, max_tokens_per_step);
  const int64_t all = one * o.max_sequences;
  if (o.kv_positions <= 0) return int(all);
  const int64_t pool = (o.kv_positions + o.page_size - 1) / o.page_size;
  if (pool < one)
    throw Error("KV cache of " + std::to_string(o.kv_positions) + " positions: one sequence needs " +
                std::to_string(one * o.page_size) + " (its context of " + std::to_string(o.max_context) +
                " in pages of " + std::to_string(o.page_size) +
                "); give more positions or a shorter context");
  return int(std::min(pool, all));
}

int kv_pages_per_sequence(const model::LlamaConfig& c, const EngineOptions& o, int max_tokens_per_step) {
  const int all = (o.max_context + o.page_size - 1) / o.page_size;
  if (c.sliding_window <= 0 || c.sliding_window >= o.max_context) return all;
  // A chunk at p0 reads from p0 + 1 - W and writes up to p0 + T - 1: W + T - 1 positions, which can
  // touch one page more than they fill.
  const int64_t span = c.sliding_window + std::max(1, max_tokens_per_step) - 1;
  return int(std::min<int64_t>(all, (span + o.page_size - 1) / o.page_size + 1));
}

int64_t kv_positions_that_fit(const MemoryPlan& plan, const model::LlamaConfig& c, const EngineOptions& o,
                              int max_tokens_per_step) {
  if (plan.fits || plan.kv_bytes_per_token == 0) return 0;
  // What the estimates leave out (the backend's workspaces, graphs, the allocator's rounding).
  const int64_t margin = int64_t(plan.available_bytes / 20) + (int64_t(512) << 20);
  const int64_t room =
      int64_t(plan.available_bytes) - int64_t(plan.weight_bytes + plan.activation_bytes) - margin;
  const int64_t positions = room / int64_t(plan.kv_bytes_per_token) / o.page_size * o.page_size;
  const int64_t one = int64_t(kv_pages_per_sequence(c, o, max_tokens_per_step)) * o.page_size;
  return positions >= one ? positions : 0;
}

MemoryPlan plan_memory(const model::LlamaConfig& c, size_t weight_bytes, const EngineOptions& o,
                       int max_tokens_per_step, size_t available_bytes) {
  MemoryPlan p;
  p.weight_bytes = weight_bytes;
  backend::KvCacheDesc d;
  d.format = o.kv_format;
  d.n_layers = int(c.n_layers);
  d.n_kv_heads = int(c.n_kv_heads);
  d.head_dim = int(c.head_dim);
  d.page_size = o.page_size;
  d.n_pages = 1;
  p.kv_bytes_per_token = d.total_bytes() / size_t(o.page_size);
  const size_t per_sequence = size_t(kv_pages_per_sequence(c, o, max_tokens_per_step));
  const size_t pages = size_t(kv_pool_pages(c, o, max_tokens_per_step));
  p.kv_bytes = d.total_bytes() * pages;
  p.activation_bytes =
      size_t(max_tokens_per_step) *
      size_t(c.dim * 2 + c.n_heads * c.head_dim * 3 + c.n_kv_heads * c.head_dim * 2 + c.ffn * 2 + c.vocab) *
      4;
  p.available_bytes = available_bytes;
  const size_t total = p.weight_bytes + p.kv_bytes + p.activation_bytes;
  p.fits = p.available_bytes == 0 || total <= p.available_bytes;
  auto mib = [](size_t b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / 1048576.0);
    return std::string(buf);
  };
  std::ostringstream s;
  s << "memory plan: weights " << mib(p.weight_bytes) << " + KV cache ("
    << backend::kv_format_name(o.kv_format) << ", " << o.max_context << " positions x " << o.max_sequences
    << " sequences, " << p.kv_bytes_per_token << " bytes/position";
  if (per_sequence < size_t((o.max_context + o.page_size - 1) / o.page_size))
    s << "; sliding window " << c.sliding_window << ": " << per_sequence * size_t(o.page_size)
      << " positions kept";
  if (pages < per_sequence * size_t(o.max_sequences))
    s << "; one pool of " << pages * size_t(o.page_size) << " positions for all, " << std::fixed
      << std::setprecision(1) << 100.0 * double(pages) / double(per_sequence * size_t(o.max_sequences))
      << "% of every sequence's whole context: the newest wait when it is full";
  s << ") " << mib(p.kv_bytes) << " + activations " << mib(p.activation_bytes) << " = " << mib(total);
  if (p.available_bytes) {
    s << "; available " << mib(p.available_bytes) << ": " << (p.fits ? "fits" : "DOES NOT FIT");
    if (!p.fits && p.kv_bytes_per_token) {
      long long room = (long long)p.available_bytes - (long long)(p.weight_bytes + p.activation_bytes);
      long long positions = room > 0 ? room / (long long)p.kv_bytes_per_token / o.max_sequences : 0;
      s << " (at most about " << positions << " positions per sequence would)";
    }
  }
  p.text = s.str();
  return p;
}

}  // namespace mx8::runtime
