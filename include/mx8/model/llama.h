// The Llama family: Llama 2/3/3.1/3.2 (llama3 RoPE scaling), Mistral, Qwen2/2.5 (q/k/v biases),
// Qwen3 (per-head q/k RMSNorm); GQA; tied embeddings. Loaded from a GGUF file or a Hugging Face
// folder (config.json + safetensors, including mx8 convert's ds-fp8 output and DeepSeek-style FP8
// checkpoints), with the linear weights kept as given or converted at load (--weights).
//
// The forward pass runs a StepBatch: any mix of tokens of several sequences (prefill chunks and
// decode tokens together), each with its position and its KV slot; logits come back for the rows
// the caller asks for. Everything numeric happens in the Backend.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/format/scale_rule.h"

namespace mx8::model {

struct RopeScaling {
  // dynamic: transformers' dynamic NTK, which keeps the model's own frequencies below
  // original_max_position and recomputes them past it; mx8 runs it below that point only (the
  // engine and forward refuse positions past it), where it is exact.
  enum class Type { none, linear, llama3, yarn, dynamic };
  Type type = Type::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;              // llama3
  double high_freq_factor = 4.0;             // llama3
  int64_t original_max_position = 8192;      // llama3, yarn, dynamic
  double beta_fast = 32.0, beta_slow = 1.0;  // yarn: the correction range, in rotations
  bool truncate = true;                      // yarn: the correction range rounded outwards to whole bands
  // yarn: cos and sin are scaled by it (so q . k by its square). Unless the config gives
  // attention_factor: m(mscale) / m(mscale_all_dim) where it gives both (nonzero), else m(1), with
  // m(s) = 0.1 s ln(factor) + 1 (transformers' get_mscale). 1 for the other types.
  double attention_factor = 1.0;
};

struct LlamaConfig {
  std::string arch;  // "llama", "mistral", "qwen2", "qwen3"
  int64_t vocab = 0;
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn = 0;
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  backend::RopeStyle rope_style = backend::RopeStyle::half;
  int64_t max_position = 0;  // trained context (informational; the runtime may go further with scaling)
  // > 0: each token attends only to the last this-many positions, itself included (Mistral v0.1's
  // 4096; AttentionArgs::window).
  int64_t sliding_window = 0;
  bool qkv_bias = false;
  bool qk_norm = false;
  bool tied_embeddings = false;
  int32_t bos = -1;
  std::vector<int32_t> eos;
};

// Inverse frequencies of each rotated pair (head_dim / 2 values) with the scaling folded in, computed
// in f32 as llama2.c does (1 / powf(theta, 2j / head_dim)) for unscaled models, and as transformers'
// _compute_llama3_parameters does for llama3 scaling.
std::vector<float> rope_inv_freq(const LlamaConfig& c);

// Positions the model is made for: max_position, or factor x the original window for YaRN, whose
// configs (Qwen2.5) keep max_position at the original length. 0: the config does not say.
int64_t supported_context(const LlamaConfig& c);

// Positions mx8 computes RoPE for as the model's scaling asks: dynamic NTK's window (past it the
// frequencies would change with the sequence's length); 0: no limit.
int64_t rope_position_limit(const LlamaConfig& c);

// What the linear weights become at load.
enum class WeightMode {
  as_given,  // f32 stays f32, bf16 stays bf16, FP8 checkpoints stay FP8; GGUF MXFP4 -> mxfp8 (exact);
             // f16/Q8_0 -> f32
  f32,
  bf16,
  fp8,    // E4M3 + UE8M0 per 128x128 block, `ceil` rule (DeepSeek-V3.1 layout)
  mxfp8,  // E4M3 + UE8M0 per 1x32 along the input dimension
};
WeightMode parse_weight_mode(const std::string& s);  // "as-given"/"auto", "f32", "bf16", "fp8", "mxfp8"
const char* weight_mode_name(WeightMode m);

// A --weights value: a mode, and for fp8 / mxfp8 made at load the scale rule after a colon
// ("fp8:floor"; format/scale_rule.h): ceil (the default; DeepSeek-V3.1, UE8M0 scales), floor (OCP MX,
// UE8M0 scales; may saturate a block's largest value) or fp32 (DeepSeek-V3's float scales; fp8
// only, since MX scales are UE8M0 by definition).
struct WeightSpec {
  WeightMode mode = WeightMode::as_given;
  format::ScaleRule rule = format::ScaleRule::ceil;
};
WeightSpec parse_weight_spec(const std::string& s);

struct LoadOptions {
  WeightMode weights = WeightMode::as_given;
  // The scale rule of FP8 weights quantized at load (weights fp8 or mxfp8; FP8 checkpoints keep theirs).
  format::ScaleRule scale_rule = format::ScaleRule::ceil;
  int max_tokens_per_step = 256;     // activation buffers are sized for this many tokens per forward
  bool quantize_output_head = true;  // with fp8/mxfp8, also the lm_head (llama.cpp does the same for Q8_0)
};

// A batch of tokens for one forward step. Token i belongs to sequence seq[i] (a row of block_tables),
// sits at position pos[i] and writes its K/V to slot[i] (page * page_size + offset). It attends to
// kv_len[i] positions of its sequence (pos[i] + 1 for causal decoding).
struct StepBatch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> pos;
  std::vector<int32_t> seq;
  std::vector<int32_t> slot;
  std::vector<int32_t> kv_len;
  std::vector<int32_t> block_tables;  // [n_seqs][max_pages_per_seq]
  int max_pages_per_seq = 0;
  std::vector<int32_t> logit_rows;  // rows of `tokens` whose logits are wanted, in output order
  // The last this-many logit rows want only the index of their largest logit (greedy decoding): the
  // backend finds it, and only the index leaves its memory (Backend::argmax).
  int argmax_rows = 0;
  // The top_k_rows logit rows before those want only their top_k best sampling candidates at their
  // temperature (Backend::top_k: sampling with top-k; temperature has one value per such row).
  int top_k_rows = 0;
  int top_k = 0;
  std::vector<float> temperature;
  // Sampling penalties of the top_k_rows + argmax_rows rows (in that order; row i below is the i-th of
  // them), applied on the backend before it selects (Backend::penalize): penalties[i * 3 + 0..2] row i's
  // repetition, frequency and presence penalties, and penalty_entries[j * 3 + 0..2] a row i, a token id
  // and its count, each (row, token) once. No entries: nothing is penalized (penalties may be empty).
  std::vector<float> penalties;
  std::vector<int32_t> penalty_entries;
  // The logprob_tokens.size() logit rows before the top-k rows want only what the log-probability of
  // logprob_tokens[i] and of the row's top_logprobs best tokens needs (runtime::token_logprobs): the
  // row's log sum exp, that token's logit and the top_logprobs best logits with their ids
  // (Backend::log_sum_exp, Backend::top_k at temperature 1; 0 <= top_logprobs <= kMaxTopK).
  std::vector<int32_t> logprob_tokens;
  int top_logprobs = 0;
  // The top-k and arg max rows also want what their drawn token's log-probability needs, from their own
  // logits before any penalty: the log sum exps and top_logprobs best logits continue after the
  // log-probability rows' with one entry per such row (top-k rows, then arg max rows; their token logits
  // are NaN), and StepOutput::drawn_logits gets the logits of each top-k row's top_k candidates and of
  // each arg max row's choice.
  bool selected_logprobs = false;
  // Rows of `tokens` whose final hidden state is wanted (embeddings): the residual stream after the last
  // layer through the final norm, what the head reads. Any rows, beside the logit rows or instead.
  std::vector<int32_t> hidden_rows;
};

// Where forward() puts what the step's logit rows asked for (StepBatch): the logits of the other rows
// ([rows][vocab]), the top-k rows' candidates ([top_k_rows][top_k] values and ids), the arg max rows'
// indices, and for the log-probability rows (and the selected rows, with selected_logprobs) their log sum
// exp, token logit and top_logprobs best logits and ids ([rows][top_logprobs]), and the logits of what the
// selected rows chose from ([top_k_rows][top_k], then [argmax_rows]). Host memory.
struct StepOutput {
  float* logits = nullptr;
  float* top_values = nullptr;
  int32_t* top_ids = nullptr;
  int32_t* argmax = nullptr;
  double* lse = nullptr;
  float* token_logits = nullptr;
  float* top_logprob_values = nullptr;
  int32_t* top_logprob_ids = nullptr;
  float* drawn_logits = nullptr;
  // With selected_logprobs and penalties: each penalty entry's logit before its penalty (drawn_logits
  // holds the penalized one where a candidate is a penalized token). [penalty entries]
  float* penalty_raw_logits = nullptr;
  // The hidden rows' states ([hidden rows][dim]).
  float* hidden = nullptr;
};

struct WeightStats {
  size_t bytes = 0;         // all weights as the backend holds them
  size_t linear_bytes = 0;  // the matmul weights only
  int64_t parameters = 0;
  std::string formats;         // e.g. "fp8 (E4M3, 128x128 blocks) x 35, f32 x 11"
  bool linear_all_f32 = true;  // every matrix is f32 (then an f32 KV cache keeps the model exact)
};

class LlamaModel {
 public:
  virtual ~LlamaModel() = default;
  const LlamaConfig& config() const { return config_; }
  const WeightStats& weight_stats() const { return stats_; }
  const std::string& source() const { return source_; }

  // Runs the batch and writes what its logit rows ask for to `out` (StepOutput).
  virtual void forward(const StepBatch& batch, backend::KvCache& kv, const StepOutput& out) = 0;
  // The same when every logit row wants its logits.
  void forward(const StepBatch& batch, backend::KvCache& kv, float* logits) {
    forward(batch, kv, StepOutput{logits});
  }
  virtual int max_tokens_per_step() const = 0;
  // Whether prompt steps' attention rounds q and the probabilities to the KV cache's operand type
  // (backend::AttentionArgs::round_operands); off (the default): f32 precision, as the CPU computes.
  void set_round_attention_operands(bool on) { round_attention_operands_ = on; }
  bool round_attention_operands() const { return round_attention_operands_; }

 protected:
  bool round_attention_operands_ = false;
  LlamaConfig config_;
  WeightStats stats_;
  std::string source_;
};

// Loads a GGUF file or a Hugging Face folder into `backend`. The backend must outlive the model.
// Throws mx8::Error naming an unsupported architecture, a missing tensor or a bad shape.
std::unique_ptr<LlamaModel> load_llama(const std::string& path, backend::Backend& backend,
                                       const LoadOptions& opts);

// Reads just the configuration (for memory planning before loading).
LlamaConfig read_llama_config(const std::string& path);

// A model with random weights of the given shape (benchmarks): weights drawn N(0, 0.02) then stored in
// `mode` (f32, bf16, fp8 or mxfp8), norms 1.
std::unique_ptr<LlamaModel> make_random_llama(const LlamaConfig& c, backend::Backend& backend,
                                              WeightMode mode, int max_tokens_per_step, uint64_t seed);

// A model whose weights the caller made in backend memory (benchmarks that make large weights on
// the device): make(name, n, k) returns the [n][k] weight `name` - "token_embd" (the embedding
// table), "output" (unless tied), "blk.<i>.attn_q", attn_k, attn_v, attn_output, ffn_gate, ffn_up,
// ffn_down. Norms are 1 and biases 0. The weights' memory must outlive the model.
using WeightMaker = std::function<backend::WeightView(const std::string& name, int64_t n, int64_t k)>;
std::unique_ptr<LlamaModel> make_llama_with_weights(const LlamaConfig& c, backend::Backend& backend,
                                                    int max_tokens_per_step, const WeightMaker& make);

}  // namespace mx8::model
