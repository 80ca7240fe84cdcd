// The Llama-family forward pass over the backend interface, and weight preparation at load.
//
// Per layer (pre-norm transformer):
//   h = rmsnorm(x) ; q,k,v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)
//   [qwen3] q,k = rmsnorm per head (q_norm, k_norm) ; q,k = rope(q,k) ; cache k,v
//   x += attention(q, cache) Wo^T ; h = rmsnorm(x) ; x += (silu(h Wg^T) * (h Wu^T)) Wd^T
// then logits = rmsnorm(x) Wout^T (Wout = token embedding when tied).
#include "mx8/model/llama.h"

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <unordered_map>
#include <unordered_set>

#include "model/model_source.h"
#include "model/weight_convert.h"
#include "mx8/error.h"
#include "mx8/format/common.h"

namespace mx8::model {

using backend::Backend;
using backend::ScaleType;
using backend::WeightFormat;
using backend::WeightView;

WeightMode parse_weight_mode(const std::string& s) {
  if (s == "as-given" || s == "auto" || s.empty()) return WeightMode::as_given;
  if (s == "f32") return WeightMode::f32;
  if (s == "bf16") return WeightMode::bf16;
  if (s == "fp8") return WeightMode::fp8;
  if (s == "mxfp8") return WeightMode::mxfp8;
  throw Error("--weights " + s + ": expected one of as-given, f32, bf16, fp8, mxfp8");
}

WeightSpec parse_weight_spec(const std::string& s) {
  const size_t colon = s.find(':');
  WeightSpec w;
  w.mode = parse_weight_mode(s.substr(0, colon));
  if (colon == std::string::npos) return w;
  const std::string rule = s.substr(colon + 1);
  const auto r = format::parse_scale_rule(rule);
  if (!r)
    throw Error("--weights " + s + ": unknown scale rule '" + rule + "' (expected ceil, floor or fp32)");
  if (w.mode != WeightMode::fp8 && w.mode != WeightMode::mxfp8)
    throw Error("--weights " + s + ": a scale rule applies only to fp8 and mxfp8");
  if (w.mode == WeightMode::mxfp8 && *r == format::ScaleRule::fp32)
    throw Error("--weights " + s + ": MXFP8 scales are UE8M0 powers of two; fp32 scales exist for fp8 only");
  w.rule = *r;
  return w;
}

const char* weight_mode_name(WeightMode m) {
  switch (m) {
    case WeightMode::as_given:
      return "as-given";
    case WeightMode::f32:
      return "f32";
    case WeightMode::bf16:
      return "bf16";
    case WeightMode::fp8:
      return "fp8";
    case WeightMode::mxfp8:
      return "mxfp8";
  }
  return "?";
}

namespace {

// Backend memory owned by the model.
class BackendArena {
 public:
  explicit BackendArena(Backend& b) : b_(b) {}
  ~BackendArena() {
    for (void* p : ptrs_) b_.free(p);
  }
  void* alloc(size_t bytes) {
    void* p = b_.alloc(bytes);
    ptrs_.push_back(p);
    return p;
  }
  // Copies host data into new backend memory.
  void* upload(const void* src, size_t bytes) {
    void* p = alloc(bytes);
    b_.upload(p, src, bytes);
    return p;
  }

 private:
  Backend& b_;
  std::vector<void*> ptrs_;
};

class Llama final : public LlamaModel {
 public:
  Llama(Backend& b, int max_tokens) : b_(b), arena_(b), max_tokens_(max_tokens) {}

  int max_tokens_per_step() const override { return max_tokens_; }

  void load(const ModelSource& src, const LoadOptions& opts) {
    scale_rule_ = opts.scale_rule;
    config_ = src.config();
    source_ = src.describe();
    const LlamaConfig& c = config_;
    embed_ = prepare_table(src.require("token_embd.weight"), c.vocab, c.dim);
    output_norm_ = prepare_vector(src.require("output_norm.weight"), c.dim);
    if (!c.tied_embeddings) {
      // An untied model without its head is broken, not tied: the embeddings would give other
      // logits. (A GGUF without output.weight is tied by llama.cpp's convention, set in its config.)
      const SourceTensor* out = src.find("output.weight");
      if (!out)
        throw Error(
            "model " + src.describe() +
            ": missing tensor 'output.weight' (lm_head.weight in a Hugging Face folder), and the "
            "config does not tie the head to the embeddings (tie_word_embeddings is false or absent)");
      output_ = prepare_linear(*out, c.vocab, c.dim,
                               opts.quantize_output_head ? opts.weights : high_precision(opts.weights));
    } else {
      // Tied: the head is the embedding table (kept as loaded unless quantizing the head).
      output_ =
          opts.quantize_output_head && (opts.weights == WeightMode::fp8 || opts.weights == WeightMode::mxfp8)
              ? prepare_linear(src.require("token_embd.weight"), c.vocab, c.dim, opts.weights)
              : embed_;
    }
    layers_.resize(size_t(c.n_layers));
    const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
    for (int64_t l = 0; l < c.n_layers; ++l) {
      Layer& L = layers_[size_t(l)];
      auto name = [&](const char* part, const char* kind = "weight") {
        return "blk." + std::to_string(l) + "." + part + "." + kind;
      };
      L.attn_norm = prepare_vector(src.require(name("attn_norm")), c.dim);
      L.ffn_norm = prepare_vector(src.require(name("ffn_norm")), c.dim);
      L.wq = prepare_linear(src.require(name("attn_q")), qd, c.dim, opts.weights);
      L.wk = prepare_linear(src.require(name("attn_k")), kvd, c.dim, opts.weights);
      L.wv = prepare_linear(src.require(name("attn_v")), kvd, c.dim, opts.weights);
      L.wo = prepare_linear(src.require(name("attn_output")), c.dim, qd, opts.weights);
      L.w_gate = prepare_linear(src.require(name("ffn_gate")), c.ffn, c.dim, opts.weights);
      L.w_up = prepare_linear(src.require(name("ffn_up")), c.ffn, c.dim, opts.weights);
      L.w_down = prepare_linear(src.require(name("ffn_down")), c.dim, c.ffn, opts.weights);
      if (c.qkv_bias) {
        L.bq = prepare_vector(src.require(name("attn_q", "bias")), qd);
        L.bk = prepare_vector(src.require(name("attn_k", "bias")), kvd);
        L.bv = prepare_vector(src.require(name("attn_v", "bias")), kvd);
      }
      if (c.qk_norm) {
        L.q_norm = prepare_vector(src.require(name("attn_q_norm")), c.head_dim);
        L.k_norm = prepare_vector(src.require(name("attn_k_norm")), c.head_dim);
      }
    }
    std::vector<float> inv = rope_inv_freq(c);
    std::vector<float> div = src.rope_freq_divisors();
    if (!div.empty()) {
      if (div.size() != inv.size())
        throw Error("model " + source_ + ": rope_freqs.weight has " + std::to_string(div.size()) +
                    " values, expected " + std::to_string(inv.size()));
      for (size_t j = 0; j < inv.size(); ++j) inv[j] /= div[j];
    }
    setup_common(inv);
  }

  void build_random(const LlamaConfig& c, WeightMode mode, uint64_t seed) {
    config_ = c;
    source_ = "random weights (seed " + std::to_string(seed) + ")";
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
    // Uniform in [-a, a] with a = 0.02 * sqrt(3): standard deviation 0.02, cheap to draw.
    auto fill = [&](int64_t n, int64_t k) {
      std::vector<float> f(size_t(n * k));
      const float a = 0.02f * std::sqrt(3.0f);
      for (float& x : f) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        x = (float(state >> 40) * (1.0f / 16777216.0f) * 2 - 1) * a;
      }
      return f;
    };
    auto linear = [&](int64_t n, int64_t k) {
      SourceTensor t;
      std::vector<float> f = fill(n, k);
      t.type = SourceTensor::Type::f32;
      t.shape = {n, k};
      t.data = reinterpret_cast<const uint8_t*>(f.data());
      t.name = "random";
      return prepare_linear(t, n, k, mode, true);
    };
    WeightView table;
    {
      std::vector<float> e = fill(c.vocab, c.dim);
      SourceTensor t;
      t.type = SourceTensor::Type::f32;
      t.shape = {c.vocab, c.dim};
      t.data = reinterpret_cast<const uint8_t*>(e.data());
      table = prepare_table(t, c.vocab, c.dim, mode == WeightMode::f32 ? WeightMode::f32 : WeightMode::bf16,
                            true);
    }
    assemble(table, [&](const std::string&, int64_t n, int64_t k) { return linear(n, k); });
  }

  void build_external(const LlamaConfig& c, const WeightMaker& make) {
    config_ = c;
    source_ = "weights made by the caller";
    WeightView table = make("token_embd", c.vocab, c.dim);
    note(table, false);
    assemble(table, [&](const std::string& name, int64_t n, int64_t k) {
      WeightView w = make(name, n, k);
      if (w.n != n || w.k != k)
        throw Error("model: weight " + name + " made as [" + std::to_string(w.n) + ", " +
                    std::to_string(w.k) + "], expected [" + std::to_string(n) + ", " + std::to_string(k) +
                    "]");
      note(w, true);
      return w;
    });
  }

  // Everything but the weights' values: the embedding table `table`, the matmul weights from
  // `linear` (named as in GGUF, without ".weight"), norms 1, biases 0, then the buffers.
  void assemble(const WeightView& table, const WeightMaker& linear) {
    const LlamaConfig& c = config_;
    embed_ = table;
    output_ = c.tied_embeddings ? embed_ : linear("output", c.vocab, c.dim);
    const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
    // Norms of ones and biases of zeros, counted as prepare_vector counts a loaded model's.
    auto vec = [&](int64_t n, float value = 1.0f) {
      const std::vector<float> v(size_t(n), value);
      stats_.bytes += size_t(n) * 4;
      stats_.parameters += n;
      return static_cast<float*>(arena_.upload(v.data(), size_t(n) * 4));
    };
    output_norm_ = vec(c.dim);
    layers_.resize(size_t(c.n_layers));
    for (size_t l = 0; l < layers_.size(); ++l) {
      Layer& L = layers_[l];
      const std::string blk = "blk." + std::to_string(l) + ".";
      L.attn_norm = vec(c.dim);
      L.ffn_norm = vec(c.dim);
      L.wq = linear(blk + "attn_q", qd, c.dim);
      L.wk = linear(blk + "attn_k", kvd, c.dim);
      L.wv = linear(blk + "attn_v", kvd, c.dim);
      L.wo = linear(blk + "attn_output", c.dim, qd);
      L.w_gate = linear(blk + "ffn_gate", c.ffn, c.dim);
      L.w_up = linear(blk + "ffn_up", c.ffn, c.dim);
      L.w_down = linear(blk + "ffn_down", c.dim, c.ffn);
      if (c.qk_norm) {
        L.q_norm = vec(c.head_dim);
        L.k_norm = vec(c.head_dim);
      }
      if (c.qkv_bias) {
        L.bq = vec(qd, 0.0f);
        L.bk = vec(kvd, 0.0f);
        L.bv = vec(kvd, 0.0f);
      }
    }
    setup_common(rope_inv_freq(c));
  }

  using LlamaModel::forward;
  void forward(const StepBatch& sb, backend::KvCache& kv, const StepOutput& out) override {
    const LlamaConfig& c = config_;
    const int T = int(sb.tokens.size());
    if (T <= 0) return;
    if (T > max_tokens_)
      throw Error("forward: " + std::to_string(T) + " tokens in one step, more than the " +
                  std::to_string(max_tokens_) + " the model was set up for");
    if (sb.pos.size() != size_t(T) || sb.seq.size() != size_t(T) || sb.slot.size() != size_t(T) ||
        sb.kv_len.size() != size_t(T))
      throw Error("forward: batch arrays have inconsistent lengths");
    if (rope_limit_ > 0)
      for (int32_t p : sb.pos)
        if (p >= rope_limit_)
          throw Error("forward: position " + std::to_string(p) + " is past the " +
                      std::to_string(rope_limit_) +
                      " to which the model's dynamic RoPE scaling keeps its frequencies");
    StepShape sh;
    sh.T = T;
    sh.R = int(sb.logit_rows.size());
    const int R = sh.R;
    if (R > max_tokens_)
      throw Error("forward: " + std::to_string(R) + " logit rows, more than the " +
                  std::to_string(max_tokens_) + " the model was set up for");
    for (int32_t r : sb.logit_rows)
      if (r < 0 || r >= T) throw Error("forward: logit row " + std::to_string(r) + " outside the batch");
    for (int32_t r : sb.hidden_rows)
      if (r < 0 || r >= T) throw Error("forward: hidden row " + std::to_string(r) + " outside the batch");
    if (!sb.hidden_rows.empty() && !out.hidden) throw Error("forward: no place for the hidden rows");
    if (sb.hidden_rows.size() > size_t(max_tokens_))
      throw Error("forward: " + std::to_string(sb.hidden_rows.size()) + " hidden rows, more than the " +
                  std::to_string(max_tokens_) + " the model was set up for");
    sh.A = sb.argmax_rows, sh.KR = sb.top_k_rows, sh.K = sh.KR > 0 ? sb.top_k : 0;
    sh.L = int(sb.logprob_tokens.size()), sh.SL = sb.selected_logprobs ? sh.A + sh.KR : 0;
    sh.KL = sh.L + sh.SL > 0 ? sb.top_logprobs : 0;
    const int A = sh.A, KR = sh.KR, K = sh.K, L = sh.L, KL = sh.KL, LS = sh.L + sh.SL;
    if (A < 0 || KR < 0 || A + KR + L > R)
      throw Error("forward: " + std::to_string(A) + " arg max, " + std::to_string(KR) + " top-k and " +
                  std::to_string(L) + " log-probability rows of " + std::to_string(R) + " logit rows");
    if ((A > 0 && !out.argmax) || (KR > 0 && (!out.top_values || !out.top_ids)) ||
        (LS > 0 && (!out.lse || !out.token_logits)) ||
        (KL > 0 && (!out.top_logprob_values || !out.top_logprob_ids)) || (sh.SL > 0 && !out.drawn_logits) ||
        (sh.SL > 0 && !sb.penalty_entries.empty() && !out.penalty_raw_logits) ||
        (R > A + KR + L && !out.logits))
      throw Error("forward: no place for what the logit rows ask for");
    if (KR > 0 && (K < 1 || K > backend::Backend::kMaxTopK || sb.temperature.size() != size_t(KR)))
      throw Error("forward: top-k rows need 1 <= top_k <= " + std::to_string(backend::Backend::kMaxTopK) +
                  " and one temperature each");
    if (LS > 0 && (KL < 0 || KL > backend::Backend::kMaxTopK))
      throw Error("forward: top_logprobs " + std::to_string(KL) + " outside 0.." +
                  std::to_string(backend::Backend::kMaxTopK));
    for (float t : sb.temperature)
      if (!(t > 0.0f) || !std::isfinite(t))
        throw Error("forward: a top-k row's temperature must be positive");
    for (const auto* ids : {&sb.tokens, &sb.logprob_tokens})
      for (int32_t t : *ids)
        if (t < 0 || t >= c.vocab)
          throw Error("forward: token id " + std::to_string(t) + " outside the vocabulary");
    sh.penalized = !sb.penalty_entries.empty();
    if (sh.penalized) check_penalties(sb, A + KR);
    sh.max_pages = sb.max_pages_per_seq;

    upload_step_ints(sb);
    if (sh.penalized) upload_penalties(sb);
    singles_ = leading_single_tokens(sb);

    // A small step is recorded and replayed afterwards (CUDA graphs): at batch 1 the ~300 launches
    // of a step cost about as much host time as the GPU needs to stream the weights. A shape is
    // recorded the second time it comes (a prompt's odd-sized last chunk would pay for a recording
    // it never replays). Large steps (prefill) are launch-cheap relative to their work and vary in
    // shape, so they run as they are.
    if (T <= kMaxRecordedTokens) {
      const uint64_t key = step_key(sh, singles_ == T, kv);
      if (!b_.replay(key)) {
        if (seen_.size() > 4096) seen_.clear();  // keys of dead caches accumulate otherwise
        const bool first = seen_.insert(key).second;
        if (first || unrecordable_.count(key)) {
          run_step(sh, kv);
        } else {
          bool ran = false;
          try {
            b_.begin_recording(key);
            run_step(sh, kv);
            b_.end_recording();  // runs what was recorded
            ran = true;
          } catch (const Error&) {
            b_.discard_recording();
          }
          if (!ran) {
            // Nothing of the step ran: run it without recording (a real error throws again from
            // there) and do not try to record this shape again.
            unrecordable_.insert(key);
            run_step(sh, kv);
          }
        }
      }
    } else {
      run_step(sh, kv);
    }
    if (R > A + KR + L) b_.download(out.logits, logits_, size_t(R - A - KR - L) * size_t(c.vocab) * 4);
    if (LS >
        0) {  // lse, token logits, top values, top ids, drawn logits back to back (run_step): one download
      const size_t drawn = sh.SL > 0 ? size_t(KR) * size_t(K) + size_t(A) : 0;
      const size_t n = size_t(LS) * (3 + 2 * size_t(KL)) + drawn;
      host_lp_.resize(n);
      b_.download(host_lp_.data(), lp_, n * 4);
      std::memcpy(out.lse, host_lp_.data(), size_t(LS) * 8);
      std::memcpy(out.token_logits, host_lp_.data() + 2 * LS, size_t(LS) * 4);
      if (KL > 0) {
        std::memcpy(out.top_logprob_values, host_lp_.data() + 3 * LS, size_t(LS * KL) * 4);
        std::memcpy(out.top_logprob_ids, host_lp_.data() + 3 * LS + LS * KL, size_t(LS * KL) * 4);
      }
      if (drawn > 0) std::memcpy(out.drawn_logits, host_lp_.data() + 3 * LS + 2 * LS * KL, drawn * 4);
      if (sh.SL > 0 && sh.penalized)
        b_.download(out.penalty_raw_logits, pen_saved(), sb.penalty_entries.size() / 3 * 4);
    }
    if (KR > 0) {  // values and ids lie back to back: one download (each one waits for the device)
      const size_t n = size_t(KR) * size_t(K);
      host_top_.resize(2 * n);
      b_.download(host_top_.data(), top_, 2 * n * 4);
      std::memcpy(out.top_values, host_top_.data(), n * 4);
      std::memcpy(out.top_ids, host_top_.data() + n, n * 4);
    }
    if (A > 0) b_.download(out.argmax, argmax_, size_t(A) * 4);
    if (!sb.hidden_rows.empty()) hidden_states(sb.hidden_rows, out.hidden);
  }

 private:
  struct Layer {
    float* attn_norm = nullptr;
    float* ffn_norm = nullptr;
    float* q_norm = nullptr;
    float* k_norm = nullptr;
    float* bq = nullptr;
    float* bk = nullptr;
    float* bv = nullptr;
    WeightView wq, wk, wv, wo, w_gate, w_up, w_down;
  };

  // A step's counts (forward's checks say what each is): tokens, logit rows, arg max rows, top-k rows and
  // their k, log-probability rows, selected rows that want log-probabilities too and the top count of
  // both; the block tables' width; penalties or not.
  struct StepShape {
    int T = 0, R = 0, A = 0, KR = 0, K = 0, L = 0, SL = 0, KL = 0, max_pages = 0;
    bool penalized = false;
  };

  // Steps of up to this many tokens are recorded (Backend::begin_recording) and replayed.
  static constexpr int kMaxRecordedTokens = 16;

  // Everything the launches of run_step depend on besides the model's own buffers (fixed at load):
  // the shapes, the KV cache and the block table buffer (reallocated when it grows).
  uint64_t step_key(const StepShape& sh, bool one_token_per_seq, const backend::KvCache& kv) const {
    uint64_t h = 0x6d78385f73746570ull;  // any non-zero start
    auto mix = [&h](uint64_t v) {
      h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
      h *= 0xBF58476D1CE4E5B9ull;
      h ^= h >> 31;
    };
    mix(reinterpret_cast<uintptr_t>(this));
    for (int v : {sh.T, sh.R, sh.A, sh.KR, sh.K, sh.L, sh.SL, sh.KL, sh.max_pages})
      mix(uint64_t(uint32_t(v)));
    mix(one_token_per_seq ? 1 : 2);  // the backend may fuse more then (AttentionArgs::one_token_per_seq)
    mix(round_attention_operands_ ? 3 : 4);  // another attention kernel
    mix(reinterpret_cast<uintptr_t>(&kv));
    mix(reinterpret_cast<uintptr_t>(d_bt_));
    mix(sh.penalized ? reinterpret_cast<uintptr_t>(d_pen_) : 0);  // one more launch, reading that buffer
    return h;
  }

  // The backend ops of one step, from the token ids in d_tokens_ to the logits in logits_, then for the
  // last A of the R rows their arg max (argmax_) and for the KR before those their K best candidates
  // (top_: KR x K values, then their ids), from logits penalized first where sh.penalized (d_pen_); for the L
  // rows before those, and the SL selected rows, what their log-probabilities need from the logits before
  // any penalty (lp_: LS = L + SL log sum exps, LS token logits, LS x KL best logits, their ids, then the
  // logits of the top-k candidates and arg max choices). Enqueues only (no upload, download or
  // synchronize), so that it can be recorded.
  void run_step(const StepShape& sh, backend::KvCache& kv) {
    const int R = sh.R, A = sh.A, KR = sh.KR, K = sh.K, L = sh.L, KL = sh.KL, LS = sh.L + sh.SL;
    compute_logits(sh.T, R, sh.max_pages, kv);
    const size_t vocab = size_t(config_.vocab);
    if (LS > 0) {
      const float* rows = logits_ + size_t(R - A - KR - L) * vocab;
      b_.log_sum_exp(rows, LS, int64_t(vocab), d_lp_tokens_, reinterpret_cast<double*>(lp_), lp_ + 2 * LS);
      if (KL > 0)
        b_.top_k(rows, LS, int64_t(vocab), KL, d_ones_, lp_ + 3 * LS,
                 reinterpret_cast<int32_t*>(lp_ + 3 * LS + LS * KL));
    }
    if (sh.penalized)
      b_.penalize(logits_ + size_t(R - A - KR) * vocab, A + KR, int64_t(vocab),
                  {reinterpret_cast<const float*>(d_pen_ + 4), d_pen_, d_pen_ + 4 + 3 * max_tokens_,
                   sh.SL > 0 ? pen_saved() : nullptr});
    if (KR > 0)
      b_.top_k(logits_ + size_t(R - A - KR) * vocab, KR, int64_t(vocab), K, d_temp_, top_,
               reinterpret_cast<int32_t*>(top_ + size_t(KR) * size_t(K)));
    if (A > 0) b_.argmax(logits_ + size_t(R - A) * vocab, A, int64_t(vocab), argmax_);
    if (sh.SL > 0) {  // what the selected rows chose from (the candidates' logits are unpenalized where
                      // their rows had no penalties, which is when the engine asks)
      float* drawn = lp_ + 3 * LS + 2 * LS * KL;
      b_.gather(logits_ + size_t(R - A - KR) * vocab, KR, int64_t(vocab),
                reinterpret_cast<const int32_t*>(top_ + size_t(KR) * size_t(K)), K, drawn);
      b_.gather(logits_ + size_t(R - A) * vocab, A, int64_t(vocab), argmax_, 1,
                drawn + size_t(KR) * size_t(K));
    }
  }

  void compute_logits(int T, int R, int max_pages, backend::KvCache& kv) {
    const LlamaConfig& c = config_;
    const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
    // q, k and v of the step lie back to back in qkv_: [T][qd], then [T][kvd] twice.
    float* q = qkv_;
    float* k = q + int64_t(T) * qd;
    float* v = k + int64_t(T) * kvd;
    b_.embedding(embed_, d_tokens_, T, x_);
    backend::RopeArgs rope{c.rope_style, int(c.head_dim), int(c.head_dim), inv_freq_};
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const Layer& L = layers_[size_t(l)];
      // q, k, v = rmsnorm(x) W^T: the normalization fused into the matmul.
      const backend::MatmulTarget qkv[3] = {{L.wq, q, L.bq}, {L.wk, k, L.bk}, {L.wv, v, L.bv}};
      b_.matmul_fused({x_, nullptr, T, false, L.attn_norm, c.norm_eps}, qkv, 3);
      if (c.qk_norm) {
        b_.rmsnorm(q, L.q_norm, int64_t(T) * c.n_heads, c.head_dim, c.norm_eps, q);
        b_.rmsnorm(k, L.k_norm, int64_t(T) * c.n_kv_heads, c.head_dim, c.norm_eps, k);
      }
      backend::AttentionArgs a;
      a.q = q;
      a.out = att_;
      a.n_tokens = T;
      a.n_heads = int(c.n_heads);
      a.n_kv_heads = int(c.n_kv_heads);
      a.head_dim = int(c.head_dim);
      a.scale = 1.0f / std::sqrt(float(c.head_dim));
      // YaRN scales cos and sin (q and k) by its attention factor: the scores by its square.
      const double af = c.rope_scaling.attention_factor;
      if (af != 1.0) a.scale = float(double(a.scale) * af * af);
      a.layer = int(l);
      a.seq = d_seq_;
      a.kv_len = d_kvlen_;
      a.block_tables = d_bt_;
      a.max_pages_per_seq = max_pages;
      a.window = int(c.sliding_window);  // 0: none
      a.round_operands = round_attention_operands_;
      // x += att Wo^T: the residual add fused into the matmul.
      const backend::MatmulTarget o{L.wo, x_, nullptr};
      if (T > kMaxRecordedTokens && singles_ > 0 && singles_ < T) {
        // A step of decode tokens (leading, one per sequence) and prompt chunks: two attention calls,
        // so that each part takes the kernels suited to it (CUDA: per-token kernels for the decode
        // tokens, K/V tiles shared by a chunk's tokens for the rest).
        b_.rope_kv_write(kv, int(l), q, k, v, d_pos_, d_slot_, T, c.n_heads, rope);
        backend::AttentionArgs decode = a;
        decode.n_tokens = singles_;
        decode.one_token_per_seq = true;
        b_.attention(kv, decode);
        backend::AttentionArgs chunks = a;
        chunks.q = q + int64_t(singles_) * qd;
        chunks.out = att_ + int64_t(singles_) * qd;
        chunks.seq = d_seq_ + singles_;
        chunks.kv_len = d_kvlen_ + singles_;
        chunks.n_tokens = T - singles_;
        b_.attention(kv, chunks);
        b_.matmul_fused({att_, nullptr, T, true}, &o, 1);
      } else {
        // rope on q and k, K/V into the cache, attention and the projection: on CUDA one attention
        // launch for one token, or for a token of each of several sequences (batched decode), which
        // also hands the FP8 GEMM its quantized input.
        a.one_token_per_seq = singles_ == T;
        b_.attention_output(kv, q, k, v, d_pos_, d_slot_, rope, a, o);
      }
      // x += h Wd^T for h = silu(rmsnorm(x) Wg^T) * (rmsnorm(x) Wu^T): the residual add fused into
      // the down matmul, h made in the form the backend chooses (Backend::matmul_swiglu).
      b_.swiglu_ffn({x_, nullptr, T, false, L.ffn_norm, c.norm_eps}, {L.w_gate, gate_, nullptr},
                    {L.w_up, up_, nullptr}, {L.w_down, x_, nullptr}, true);
    }
    if (R == 0) return;
    if (T == 1) {
      // The only row (logit_rows are checked to lie within the batch); the final norm fused.
      const backend::MatmulTarget head{output_, logits_, nullptr};
      b_.matmul_fused({x_, nullptr, 1, false, output_norm_, c.norm_eps}, &head, 1);
      return;
    }
    // Gather the rows that need logits (an embedding lookup into the activations), then the head.
    WeightView rows{WeightFormat::f32, T, c.dim, x_, nullptr, ScaleType::ue8m0};
    b_.embedding(rows, d_rows_, R, h_);
    b_.rmsnorm(h_, output_norm_, R, c.dim, c.norm_eps, h_);
    b_.matmul(output_, h_, R, logits_);
  }

  // After a step: x_ still holds every row's residual stream past the last layer (the head reads it
  // through the norm without writing it), so the wanted rows are gathered from it as the logit rows
  // are, normalized, and downloaded. Outside the step's recording: d_rows_ is free once the step ran.
  void hidden_states(const std::vector<int32_t>& rows, float* out) {
    const LlamaConfig& c = config_;
    const int64_t H = int64_t(rows.size());
    b_.upload(d_rows_, rows.data(), size_t(H) * 4);
    WeightView all{WeightFormat::f32, max_tokens_, c.dim, x_, nullptr, ScaleType::ue8m0};
    b_.embedding(all, d_rows_, H, h_);
    b_.rmsnorm(h_, output_norm_, H, c.dim, c.norm_eps, h_);
    b_.download(out, h_, size_t(H * c.dim) * 4);
  }

  static WeightMode high_precision(WeightMode m) {
    return m == WeightMode::fp8 || m == WeightMode::mxfp8 ? WeightMode::as_given : m;
  }

  void note(const WeightView& w, bool linear) {
    size_t bytes = backend::weight_data_bytes(w.format, w.n, w.k) +
                   backend::weight_scale_bytes(w.format, w.scale_type, w.n, w.k);
    stats_.bytes += bytes;
    if (linear) stats_.linear_bytes += bytes;
    stats_.parameters += w.n * w.k;
    if (w.format != WeightFormat::f32) stats_.linear_all_f32 = false;
    // FP8 blocks with float32 scales (DeepSeek-V3 checkpoints, the fp32 rule) are named apart.
    const bool f32_scales = w.format == WeightFormat::fp8_block && w.scale_type == ScaleType::f32;
    format_counts_[backend::weight_format_name(w.format) +
                   std::string(f32_scales ? " with f32 scales" : "")]++;
    stats_.formats.clear();
    for (auto& [name, count] : format_counts_)
      stats_.formats += (stats_.formats.empty() ? "" : ", ") + name + " x " + std::to_string(count);
  }

  void check_shape(const SourceTensor& t, int64_t n, int64_t k) const {
    bool ok = (t.shape.size() == 2 && t.shape[0] == n && t.shape[1] == k);
    if (!ok) {
      std::string got;
      for (int64_t d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
      throw Error("model " + source_ + ": tensor '" + t.name + "' has shape [" + got + "], expected [" +
                  std::to_string(n) + ", " + std::to_string(k) + "]");
    }
  }

  // Keeps host data without a copy when the backend computes on host memory (the source stays mapped).
  const void* keep(const void* host, size_t bytes) {
    return b_.info().host_memory ? host : arena_.upload(host, bytes);
  }

  // A matmul weight in the format `mode` asks for. `temporary`: t's memory goes away after the call
  // (random weights), so it is copied even where the backend could read it in place.
  WeightView prepare_linear(const SourceTensor& t, int64_t n, int64_t k, WeightMode mode,
                            bool temporary = false) {
    check_shape(t, n, k);
    WeightView w;
    w.n = n;
    w.k = k;
    using T = SourceTensor::Type;
    const bool src_fp8_block = t.type == T::e4m3 && t.scale_block_rows == 128 && t.scale_block_cols == 128;
    const bool src_mxfp8 =
        t.type == T::e4m3 && t.scales_ue8m0 && t.scale_block_rows == 1 && t.scale_block_cols == 32;
    const bool src_mxfp4_gguf = t.type == T::ggml_blocks && t.ggml_type == io::GgmlType::kMXFP4;
    if (mode == WeightMode::as_given) {
      // GGUF MXFP4 becomes MXFP8 losslessly: E2M1 x 2^e re-encodes exactly as E4M3 under a `ceil`
      // UE8M0 scale per the same 32 values (largest 6 x 2^e -> 384 x 2^(e-6), smallest 0.5 -> 32).
      mode = t.type == T::bf16   ? WeightMode::bf16
             : src_fp8_block     ? WeightMode::fp8
             : src_mxfp8         ? WeightMode::mxfp8
             : src_mxfp4_gguf    ? WeightMode::mxfp8
             : t.type == T::e4m3 ? WeightMode::bf16
                                 : WeightMode::f32;
    }
    const bool fp8 = mode == WeightMode::fp8 || mode == WeightMode::mxfp8;
    w.format = mode == WeightMode::f32    ? WeightFormat::f32
               : mode == WeightMode::bf16 ? WeightFormat::bf16
               : mode == WeightMode::fp8  ? WeightFormat::fp8_block
                                          : WeightFormat::mxfp8;
    const bool same_layout =
        !temporary &&
        ((mode == WeightMode::f32 && t.type == T::f32) || (mode == WeightMode::bf16 && t.type == T::bf16) ||
         (mode == WeightMode::fp8 && src_fp8_block) || (mode == WeightMode::mxfp8 && src_mxfp8));
    if (fp8)
      w.scale_type = same_layout ? (t.scales_ue8m0 ? ScaleType::ue8m0 : ScaleType::f32)
                     : scale_rule_ == format::ScaleRule::fp32 ? ScaleType::f32
                                                              : ScaleType::ue8m0;
    const size_t data_bytes = backend::weight_data_bytes(w.format, n, k);
    const size_t scale_bytes = fp8 ? backend::weight_scale_bytes(w.format, w.scale_type, n, k) : 0;
    if (same_layout) {
      w.data = keep(t.data, data_bytes);
      if (fp8) w.scales = keep(t.scales, scale_bytes);
    } else if (b_.info().host_memory) {
      void* data = arena_.alloc(data_bytes);
      void* scales = fp8 ? arena_.alloc(scale_bytes) : nullptr;
      convert_weight(t, n, k, w.format, scale_rule_, data, scales);
      w.data = data;
      w.scales = scales;
    } else {
      // Converted on the host, then copied to the device in one piece.
      std::unique_ptr<uint8_t[]> host(new uint8_t[data_bytes + scale_bytes]);
      convert_weight(t, n, k, w.format, scale_rule_, host.get(), host.get() + data_bytes);
      w.data = arena_.upload(host.get(), data_bytes);
      if (fp8) w.scales = arena_.upload(host.get() + data_bytes, scale_bytes);
    }
    note(w, true);
    return w;
  }

  // The embedding table: f32 or bf16 as given (other types are dequantized to f32; FP8 is kept).
  WeightView prepare_table(const SourceTensor& t, int64_t n, int64_t k,
                           WeightMode mode = WeightMode::as_given, bool temporary = false) {
    check_shape(t, n, k);
    using T = SourceTensor::Type;
    WeightMode m = mode != WeightMode::as_given ? mode
                   : t.type == T::bf16          ? WeightMode::bf16
                   : t.type == T::e4m3          ? WeightMode::as_given
                                                : WeightMode::f32;
    WeightView w = prepare_linear(t, n, k, m, temporary);
    // prepare_linear counted it as a linear weight; an embedding table is not read by matmuls.
    stats_.linear_bytes -= backend::weight_data_bytes(w.format, n, k) +
                           backend::weight_scale_bytes(w.format, w.scale_type, n, k);
    return w;
  }

  float* prepare_vector(const SourceTensor& t, int64_t n) {
    if (t.numel() != n || t.shape.size() != 1)
      throw Error("model " + source_ + ": tensor '" + t.name + "' has " + std::to_string(t.numel()) +
                  " values, expected a vector of " + std::to_string(n));
    std::vector<float> v = source_to_f32(t);
    stats_.bytes += size_t(n) * 4;
    stats_.parameters += n;
    return static_cast<float*>(arena_.upload(v.data(), v.size() * 4));
  }

  void setup_common(const std::vector<float>& inv) {
    const LlamaConfig& c = config_;
    inv_freq_ = static_cast<float*>(arena_.upload(inv.data(), inv.size() * 4));
    rope_limit_ = rope_position_limit(c);
    const size_t T = size_t(max_tokens_);
    auto buf = [&](int64_t per_token) {
      return static_cast<float*>(arena_.alloc(T * size_t(per_token) * 4));
    };
    x_ = buf(c.dim);
    h_ = buf(std::max(c.dim, c.n_heads * c.head_dim));
    qkv_ = buf(c.n_heads * c.head_dim + 2 * c.n_kv_heads * c.head_dim);
    att_ = buf(c.n_heads * c.head_dim);
    gate_ = buf(c.ffn);
    up_ = buf(c.ffn);
    logits_ = buf(c.vocab);
    argmax_ = static_cast<int32_t*>(arena_.alloc(T * sizeof(int32_t)));
    top_ = static_cast<float*>(arena_.alloc(2 * T * backend::Backend::kMaxTopK * 4));
    lp_ = static_cast<float*>(arena_.alloc(T * (4 + 3 * backend::Backend::kMaxTopK) * 4));
  }

  // The step's index arrays go to the device in one upload (each upload is a copy the device
  // waits for before the step): sections of max_tokens_ values for tokens, positions, sequences,
  // slots, kv lengths, logit rows, the log-probability rows' tokens, the top-k rows' temperatures and
  // ones, then the block tables. The buffer grows with the block tables. How many leading tokens of the
  // step are each the only token of their sequence: the engine puts decode tokens first, then prompt
  // chunks (run_step's attention hint).
  static int leading_single_tokens(const StepBatch& sb) {
    std::unordered_map<int32_t, int> count;
    for (int32_t s : sb.seq) ++count[s];
    int n = 0;
    while (n < int(sb.seq.size()) && count[sb.seq[size_t(n)]] == 1) ++n;
    return n;
  }

  void upload_step_ints(const StepBatch& sb) {
    const size_t M = size_t(max_tokens_), need = 9 * M + sb.block_tables.size();
    if (need > ints_capacity_) {
      if (d_ints_) b_.free(d_ints_);
      d_ints_ = nullptr;
      const size_t cap = 9 * M + std::max<size_t>(2 * sb.block_tables.size(), 64);
      d_ints_ = static_cast<int32_t*>(b_.alloc(cap * 4));
      ints_capacity_ = cap;
      int32_t* p = d_ints_;
      for (int32_t** d : {&d_tokens_, &d_pos_, &d_seq_, &d_slot_, &d_kvlen_, &d_rows_, &d_lp_tokens_}) {
        *d = p;
        p += M;
      }
      d_temp_ = reinterpret_cast<float*>(p);  // the top-k rows' temperatures, as their bits
      d_ones_ = reinterpret_cast<float*>(p + M);
      d_bt_ = p + 2 * M;
    }
    host_ints_.resize(need);
    int32_t* h = host_ints_.data();
    for (const std::vector<int32_t>* v :
         {&sb.tokens, &sb.pos, &sb.seq, &sb.slot, &sb.kv_len, &sb.logit_rows, &sb.logprob_tokens}) {
      std::copy(v->begin(), v->end(), h);
      h += M;
    }
    if (sb.selected_logprobs)  // the selected rows' token for log_sum_exp: none
      std::fill_n(h - M + sb.logprob_tokens.size(), size_t(sb.top_k_rows + sb.argmax_rows), -1);
    if (!sb.temperature.empty()) std::memcpy(h, sb.temperature.data(), sb.temperature.size() * 4);
    h += M;
    std::fill_n(reinterpret_cast<float*>(h), M, 1.0f);  // the log-probability rows' top_k temperature
    h += M;
    std::copy(sb.block_tables.begin(), sb.block_tables.end(), h);
    b_.upload(d_ints_, host_ints_.data(), need * 4);
  }

  // StepBatch::penalties and penalty_entries for `rows` top-k and arg max rows: the shapes, the values,
  // and no (row, token) twice (Backend::penalize applies the entries in parallel).
  void check_penalties(const StepBatch& sb, int rows) const {
    if (sb.penalties.size() != size_t(rows) * 3 || sb.penalty_entries.size() % 3 != 0)
      throw Error("forward: penalties need three values for each of the " + std::to_string(rows) +
                  " top-k and arg max rows, and entries of three ints");
    for (int r = 0; r < rows; ++r)
      if (!(sb.penalties[size_t(r) * 3] > 0.0f))
        throw Error("forward: the repetition penalty of selected row " + std::to_string(r) +
                    " must be positive");
    std::unordered_set<int64_t> seen;
    for (size_t j = 0; j < sb.penalty_entries.size(); j += 3) {
      const int32_t r = sb.penalty_entries[j], t = sb.penalty_entries[j + 1], n = sb.penalty_entries[j + 2];
      if (r < 0 || r >= rows || t < 0 || t >= config_.vocab || n < 1)
        throw Error("forward: penalty entry (row " + std::to_string(r) + ", token " + std::to_string(t) +
                    ", count " + std::to_string(n) + ") outside the " + std::to_string(rows) +
                    " selected rows, the vocabulary or counts >= 1");
      if (!seen.insert(int64_t(r) * config_.vocab + t).second)
        throw Error("forward: penalty entries name token " + std::to_string(t) + " of row " +
                    std::to_string(r) + " twice");
    }
  }

  // d_pen_: the entry count (then 3 unused ints), max_tokens_ rows of 3 penalties, room for
  // pen_entries_cap_ entries, then as many saved logits (pen_saved: where they are must not depend on the
  // step's count, which a recorded step does not know). One upload; the buffer grows with the entries (a
  // new address: step_key records it).
  void upload_penalties(const StepBatch& sb) {
    const size_t head = 4 + 3 * size_t(max_tokens_), n = sb.penalty_entries.size() / 3,
                 need = head + sb.penalty_entries.size();
    if (n > pen_entries_cap_) {
      if (d_pen_) b_.free(d_pen_);
      d_pen_ = nullptr;
      const size_t cap = std::max<size_t>(2 * n, 1024);
      d_pen_ = static_cast<int32_t*>(b_.alloc((head + 4 * cap) * 4));
      pen_entries_cap_ = cap;
    }
    host_pen_.assign(need, 0);
    host_pen_[0] = int32_t(sb.penalty_entries.size() / 3);
    std::memcpy(host_pen_.data() + 4, sb.penalties.data(), sb.penalties.size() * 4);
    std::copy(sb.penalty_entries.begin(), sb.penalty_entries.end(), host_pen_.begin() + std::ptrdiff_t(head));
    b_.upload(d_pen_, host_pen_.data(), need * 4);
  }

  float* pen_saved() const {
    return reinterpret_cast<float*>(d_pen_ + 4 + 3 * size_t(max_tokens_) + 3 * pen_entries_cap_);
  }

  Backend& b_;
  BackendArena arena_;
  format::ScaleRule scale_rule_ = format::ScaleRule::ceil;  // of FP8 weights quantized at load
  int max_tokens_;
  int64_t rope_limit_ = 0;  // rope_position_limit: forward refuses positions from it on
  std::map<std::string, int> format_counts_;
  WeightView embed_, output_;
  float* output_norm_ = nullptr;
  std::vector<Layer> layers_;
  float* inv_freq_ = nullptr;
  float *x_ = nullptr, *h_ = nullptr, *qkv_ = nullptr, *att_ = nullptr;
  float *gate_ = nullptr, *up_ = nullptr, *logits_ = nullptr;
  int32_t* argmax_ = nullptr;  // [max_tokens_]: Backend::argmax of the step's last rows
  float* top_ = nullptr;       // Backend::top_k of the rows before those: KR x K values, then as many ids
  std::vector<uint32_t> host_top_;
  float* lp_ = nullptr;  // the log-probability rows' results (run_step)
  std::vector<uint32_t> host_lp_;
  int singles_ = 0;  // leading_single_tokens of the step being run
  int32_t *d_tokens_ = nullptr, *d_pos_ = nullptr, *d_seq_ = nullptr, *d_slot_ = nullptr, *d_kvlen_ = nullptr,
          *d_rows_ = nullptr;
  int32_t* d_lp_tokens_ = nullptr;  // the log-probability rows' tokens
  float* d_temp_ = nullptr;
  float* d_ones_ = nullptr;  // max_tokens_ values 1.0f
  int32_t* d_bt_ = nullptr;
  int32_t* d_ints_ = nullptr;  // holds all of the above (upload_step_ints)
  size_t ints_capacity_ = 0;
  std::vector<int32_t> host_ints_;
  int32_t* d_pen_ = nullptr;  // upload_penalties
  size_t pen_entries_cap_ = 0;
  std::vector<int32_t> host_pen_;
  std::unordered_set<uint64_t> seen_;          // step keys that ran at least once
  std::unordered_set<uint64_t> unrecordable_;  // step keys whose recording failed

 public:
  ~Llama() override {
    if (d_ints_) b_.free(d_ints_);
    if (d_pen_) b_.free(d_pen_);
  }
  std::unique_ptr<ModelSource> source_holder_;  // keeps mapped files alive for zero-copy weights
};

}  // namespace

std::unique_ptr<LlamaModel> load_llama(const std::string& path, Backend& backend, const LoadOptions& opts) {
  if (opts.max_tokens_per_step <= 0) throw Error("load: max_tokens_per_step must be positive");
  auto src = open_model_source(path);
  auto m = std::make_unique<Llama>(backend, opts.max_tokens_per_step);
  m->load(*src, opts);
  m->source_holder_ = std::move(src);
  return m;
}

std::unique_ptr<LlamaModel> make_llama_with_weights(const LlamaConfig& c, Backend& backend,
                                                    int max_tokens_per_step, const WeightMaker& make) {
  auto m = std::make_unique<Llama>(backend, max_tokens_per_step);
  m->build_external(c, make);
  return m;
}

std::unique_ptr<LlamaModel> make_random_llama(const LlamaConfig& c, Backend& backend, WeightMode mode,
                                              int max_tokens_per_step, uint64_t seed) {
  auto m = std::make_unique<Llama>(backend, max_tokens_per_step);
  m->build_random(c, mode, seed);
  return m;
}

}  // namespace mx8::model
