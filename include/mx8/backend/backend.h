// The backend interface: every op the model and runtime need, over raw pointers and shapes.
//
// The model layer (src/model) and runtime (src/runtime) see only this class; cpu/ and cuda/
// implement it. Adding a backend (ROCm, Metal, ...) touches backend/ and nothing above it.
//
// Conventions
// - Pointers passed to ops are *backend memory*: obtained from alloc() (device memory on CUDA,
//   host memory on CPU). Host data enters through upload() and leaves through download().
// - Activations are f32, row-major [rows][cols]. Every op is stream-ordered: on CUDA it is
//   enqueued and returns; synchronize() (or download(), which synchronizes) waits. On CPU ops run
//   to completion (using the backend's thread pool).
// - A linear layer's weight W is row-major [n][k] (out, in), as in safetensors/PyTorch, so
//   y[m][n] = sum_k x[m][k] * W[n][k]. GGUF's ne = {k, n} is the same memory.
// - Unsupported op/format/shape => mx8::Error naming the backend, the op and what was asked;
//   never a silent fallback to another path. supports() answers in advance.
// - Numerics of matmul: products are accumulated in f32. A backend with FP8 tensor cores may
//   quantize activations to E4M3 with 1x128 `ceil` UE8M0 scales for FP8 weights; it says so in
//   activation_quantization() so callers and tests know which tolerance applies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "mx8/backend/penalty.h"

namespace mx8::backend {

// How a linear weight (or an embedding table) is stored.
enum class WeightFormat : uint8_t {
  f32,        // [n][k] f32
  bf16,       // [n][k] bf16 bits
  fp8_block,  // [n][k] E4M3 + scales [ceil(n/128)][ceil(k/128)] per 128x128 block (DeepSeek-V3/V3.1)
  mxfp8,      // [n][k] E4M3 + UE8M0 scales [n][ceil(k/32)] per 1x32 along k (OCP MXFP8)
};
const char* weight_format_name(WeightFormat f);

// Scale storage of fp8_block weights: f32 multipliers (DeepSeek's weight_scale_inv, possibly not
// powers of two) or UE8M0 bytes. mxfp8 scales are always UE8M0 bytes.
enum class ScaleType : uint8_t { f32, ue8m0 };

// A weight as the backend sees it. All pointers are backend memory.
struct WeightView {
  WeightFormat format = WeightFormat::f32;
  int64_t n = 0;  // rows (output features, or vocabulary for an embedding table)
  int64_t k = 0;  // columns (input features, or embedding width)
  const void* data = nullptr;
  const void* scales = nullptr;  // fp8_block / mxfp8 only
  ScaleType scale_type = ScaleType::ue8m0;
};

// Bytes of the element data and of the scales of a weight in `f` with shape [n][k].
size_t weight_data_bytes(WeightFormat f, int64_t n, int64_t k);
size_t weight_scale_bytes(WeightFormat f, ScaleType st, int64_t n, int64_t k);

// ---------------------------------------------------------------------------------------------
// Paged KV cache. Each layer has a K pool and a V pool of `n_pages` pages; a page holds
// `page_size` consecutive token positions of one sequence, for all kv heads. The arrangement inside
// a page is the backend's own (the CPU backend stores it head-major, [kv head][slot][head_dim], so
// that attention streams each head's rows); page_bytes() fixes only the size. A token's place is its slot id
// = page * page_size + slot in page. Sequences own lists of pages (block tables); the runtime's KV manager
// hands pages out, the backend only reads/writes them.
enum class KvFormat : uint8_t {
  f32,   // exact: for golden tests against f32 references
  bf16,  // round-to-nearest-even bf16
  fp8,   // E4M3 with one UE8M0 `ceil` scale per (token, head, 128 values): scale storage
         // bytes (one per token, head and 128 values) in the same page as the elements
};
const char* kv_format_name(KvFormat f);

struct KvCacheDesc {
  KvFormat format = KvFormat::bf16;
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int page_size = 16;  // token positions per page
  int n_pages = 0;     // per layer
  // Bytes of one page of K (or of V) in one layer, elements plus scales.
  size_t page_bytes() const;
  // Bytes of the whole cache: layers x (K + V) x pages.
  size_t total_bytes() const;
};

// Opaque backend-owned storage for a KV cache.
class KvCache {
 public:
  virtual ~KvCache() = default;
  const KvCacheDesc& desc() const { return desc_; }

 protected:
  explicit KvCache(const KvCacheDesc& d) : desc_(d) {}
  KvCacheDesc desc_;
};

// ---------------------------------------------------------------------------------------------
// RoPE. The model computes the per-pair inverse frequencies (with llama3 / linear scaling folded
// in) on the host once and uploads them; the backend rotates pair j of each head by
// angle = float(position) * inv_freq[j] (an f32 product, then cosf/sinf, as llama2.c does).
enum class RopeStyle : uint8_t {
  interleaved,  // pairs (0,1), (2,3), ...: Meta's original layout, GGUF llama Q/K as stored
  half,         // pairs (j, j + rot_dim/2): Hugging Face rotate_half layout
};

struct RopeArgs {
  RopeStyle style = RopeStyle::half;
  int head_dim = 0;
  int rot_dim = 0;                  // rotated dims per head (== head_dim for the Llama family)
  const float* inv_freq = nullptr;  // backend memory, rot_dim / 2 values
};

// ---------------------------------------------------------------------------------------------
// Attention over the paged cache for a batch of query tokens that may belong to different sequences.
// Token t (0 <= t < n_tokens) attends to positions [0, kv_len[t]) of sequence seq[t], whose pages are
// block_tables[seq[t] * max_pages_per_seq + p] for p = position / page_size. Causality is expressed
// by kv_len (a prefill chunk passes kv_len[t] = position[t] + 1). All index arrays are backend memory.
struct AttentionArgs {
  const float* q = nullptr;  // [n_tokens][n_heads][head_dim]
  float* out = nullptr;      // [n_tokens][n_heads][head_dim]
  int n_tokens = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  // n_heads % n_kv_heads == 0 (GQA groups consecutive query heads)
  int head_dim = 0;
  float scale = 0;  // usually 1/sqrt(head_dim)
  int layer = 0;
  const int32_t* seq = nullptr;     // [n_tokens]
  const int32_t* kv_len = nullptr;  // [n_tokens]
  const int32_t* block_tables = nullptr;
  int max_pages_per_seq = 0;
  // > 0: a sliding window (Mistral v0.1): a token attends to its last `window` positions only,
  // [kv_len - window, kv_len), as Hugging Face transformers masks them.
  int window = 0;
  // Every token of this call is the only one of its sequence (the decode tokens of a step that
  // serves many sequences), so kernels that share K/V reads between a sequence's tokens gain nothing
  // (CUDA then keeps its per-token kernels), and rope_kv_write_attention may store each token's K/V
  // while other tokens attend (CUDA: one launch). Must be true when set; false is always correct.
  bool one_token_per_seq = false;
  // Prompt steps may round q and the probabilities to the cache's operand type (CUDA: bf16 for a bf16
  // cache, f16 for fp8) as FlashAttention does, instead of keeping f32 precision in several parts:
  // H200, a 512-token chunk after 65536 positions 188 -> 124 ms. Decode and the CPU keep f32.
  bool round_operands = false;
};

// ---------------------------------------------------------------------------------------------
// matmul_fused: the input side and the output side of a group of matmuls sharing one input.
struct MatmulInput {
  const float* x = nullptr;     // [m][k]
  const float* x_up = nullptr;  // when set, the input row is silu(x) * x_up (SwiGLU), both [m][k]
  int64_t m = 0;
  bool accumulate = false;  // y += x W^T (+ bias): the residual connection fused into the matmul
  // When set, the input row is rmsnorm(x) with these weights [k] and norm_eps (not with x_up): the
  // normalization fused into the matmul.
  const float* norm = nullptr;
  float norm_eps = 0.0f;
};
struct MatmulTarget {
  WeightView w;
  float* y = nullptr;           // [m][w.n]
  const float* bias = nullptr;  // [w.n] or nullptr
};

// What a backend can do; supports*() must agree with what the ops accept.
struct BackendInfo {
  std::string name;         // "cpu", "cuda"
  std::string description;  // e.g. "cpu: 2 threads, avx2" or the GPU name
  bool host_memory = true;  // alloc() returns host-addressable memory (the model may skip copies)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const BackendInfo& info() const = 0;

  // Memory.
  virtual void* alloc(size_t bytes) = 0;  // 64-byte aligned; throws mx8::Error when out of memory
  virtual void free(void* p) = 0;
  // Host memory that download() fills and upload() reads fastest: page-locked on a GPU (on the H200
  // a 0.5 MB logits row downloads in ~15 us, ~53 us into pageable memory). The default is ordinary
  // 64-byte aligned host memory. free_host releases it.
  virtual void* alloc_host(size_t bytes);
  virtual void free_host(void* p);
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void download(void* dst, const void* src, size_t bytes) = 0;  // synchronizes first
  virtual void synchronize() = 0;
  // Bytes this backend could still allocate (host MemAvailable on the CPU, free device memory on a
  // GPU); 0 when unknown. Used by the memory plan.
  virtual size_t available_memory() const { return 0; }

  // Capabilities.
  virtual bool supports_weight(WeightFormat f, ScaleType st) const = 0;
  virtual bool supports_kv(KvFormat f) const = 0;
  // Describes how FP8 matmuls treat activations, e.g. "f32 (weights dequantized in registers)".
  virtual std::string activation_quantization(WeightFormat f) const = 0;

  // y[m][n] = x[m][k] * W^T (+ bias[n] when bias != nullptr). x and y do not alias.
  virtual void matmul(const WeightView& w, const float* x, int64_t m, float* y,
                      const float* bias = nullptr) = 0;
  // Several matmuls that read the same input (q/k/v; gate/up), with the input transform and output
  // mode of `in`, in one launch where the backend can: a decode step is a handful of weight streams,
  // and each launch saved is a ramp-up and a tail saved. Every target's weight has k == the input's
  // width; targets' y do not alias the input or each other. The default composes the plain ops
  // (silu_mul, matmul, add) with temporaries from alloc().
  virtual void matmul_fused(const MatmulInput& in, const MatmulTarget* targets, int count);
  // A gated FFN's two projections (gate and up: one shape, `in` without x_up or accumulate) and the
  // input of the matmul that follows, h = silu(in W_gate^T) * (in W_up^T). Returns h in the form the
  // backend produced: {x = gate.y, x_up = up.y} (the default: matmul_fused into both targets, the
  // consumer forms h as it reads them), or {x = gate.y} with h itself written there (a backend that
  // forms h in the same launch; up.y is then left alone). The caller sets accumulate on the result.
  virtual MatmulInput matmul_swiglu(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up);
  // The whole gated FFN: down.y = h W_down^T (+ down.bias), or += with accumulate (the residual), for
  // h = matmul_swiglu(in, gate, up) (gate.y and up.y are its scratch; down.w.k == gate.w.n, down.y
  // aliases none of the inputs). The default composes matmul_swiglu and matmul_fused; a backend may
  // overlap the two (CUDA, one row: the down projection starts on the rows of h already made).
  virtual void swiglu_ffn(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                          const MatmulTarget& down, bool accumulate);
  // out[t][:] = row ids[t] of `table` as f32 (any WeightFormat), t < n.
  virtual void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) = 0;
  // y[r][:] = x[r][:] / sqrt(mean(x[r]^2) + eps) * w[:]; rows x dim; y may equal x.
  virtual void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y) = 0;
  // In place on x[n_tokens][n_heads][head_dim]; positions[n_tokens].
  virtual void rope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                    const RopeArgs& r) = 0;
  // y[i] += x[i], i < n.
  virtual void add(float* y, const float* x, int64_t n) = 0;
  // out[i] = silu(gate[i]) * up[i], i < n; out may equal gate or up.
  virtual void silu_mul(const float* gate, const float* up, float* out, int64_t n) = 0;
  // In place, row-wise softmax over x[rows][cols].
  virtual void softmax(float* x, int64_t rows, int64_t cols) = 0;
  // out[r] = the index of the largest value of x[r][0..cols), r < rows: the first such index, NaN
  // skipped, 0 for a row of NaN only (runtime::argmax's rule, so that greedy decoding on the backend
  // picks what the sampler would). out is backend memory.
  virtual void argmax(const float* x, int64_t rows, int64_t cols, int32_t* out) = 0;
  // The k best candidates of each row for sampling with top-k, in the sampler's order
  // (runtime::Sampler): for row r the values x[r][j] / temperature[r] (an IEEE division; NaN x
  // skipped), ordered by value, larger first, then by the lower j; values[r][i] and ids[r][i], i < k,
  // ids -1 past the row's non-NaN values. temperature (> 0), values and ids are backend memory;
  // 1 <= k <= kMaxTopK.
  static constexpr int kMaxTopK = 64;
  virtual void top_k(const float* x, int64_t rows, int64_t cols, int k, const float* temperature,
                     float* values, int32_t* ids) = 0;
  // In place on x[rows][cols]: each entry of p (penalty.h) replaces x[row][token] by
  // penalized_logit(x[row][token], count, row's penalties), so that argmax and top_k then draw what the
  // sampler would from the penalized logits; where p.saved is set, the values it replaced go there.
  virtual void penalize(float* x, int64_t rows, int64_t cols, const PenaltyArgs& p) = 0;
  // For each row r of x[rows][cols]: lse[r] = log sum exp of the row by backend::log_sum_exp's rule
  // (log_sum_exp.h; the sum may be ordered otherwise, so its last bits may differ from the host's), and
  // picked[r] = x[r][tokens[r]] (NaN where tokens[r] is outside 0..cols): with top_k at temperature 1,
  // what runtime::token_logprobs needs of a row. tokens, lse and picked are backend memory.
  virtual void log_sum_exp(const float* x, int64_t rows, int64_t cols, const int32_t* tokens, double* lse,
                           float* picked) = 0;
  // out[r * k + j] = x[r][ids[r * k + j]] (NaN where the id is outside 0..cols), r < rows, j < k: the
  // logits of the candidates top_k or argmax chose. ids and out are backend memory.
  virtual void gather(const float* x, int64_t rows, int64_t cols, const int32_t* ids, int k, float* out) = 0;

  // KV cache.
  virtual std::unique_ptr<KvCache> create_kv_cache(const KvCacheDesc& d) = 0;
  // Stores k, v [n_tokens][n_kv_heads][head_dim] of `layer` at slot ids slots[n_tokens],
  // converting to the cache's format (fp8: per (token, head, 128) UE8M0 ceil scale, saturating E4M3).
  virtual void kv_write(KvCache& cache, int layer, const float* k, const float* v, const int32_t* slots,
                        int64_t n_tokens) = 0;
  virtual void attention(KvCache& cache, const AttentionArgs& a) = 0;
  // rope(q, positions, n_tokens, n_heads, r), rope(k, positions, n_tokens, cache's n_kv_heads, r),
  // then kv_write(cache, layer, k, v, slots, n_tokens): the step between a layer's q/k/v projections
  // and its attention, in one launch where the backend can. The default composes those three ops.
  virtual void rope_kv_write(KvCache& cache, int layer, float* q, float* k, const float* v,
                             const int32_t* positions, const int32_t* slots, int64_t n_tokens,
                             int64_t n_heads, const RopeArgs& r);
  // rope_kv_write(cache, a.layer, q, k, v, positions, slots, a.n_tokens, a.n_heads, r), then
  // attention(cache, a), with a.q == q: a layer's attention from its projections on, in one launch
  // where the backend can (CUDA: decode steps of one token, or of one token per sequence with
  // a.one_token_per_seq). The default composes the two.
  virtual void rope_kv_write_attention(KvCache& cache, float* q, float* k, const float* v,
                                       const int32_t* positions, const int32_t* slots, const RopeArgs& r,
                                       const AttentionArgs& a);
  // rope_kv_write_attention(cache, q, k, v, positions, slots, r, a), then o.y += a.out W_o^T (+ o.bias)
  // (matmul_fused of a.out with accumulate: the residual add): a layer's attention through its output
  // projection. The default composes the two; a backend may hand the projection its input in the form
  // it needs from the attention itself (CUDA, batched decode on the FP8 GEMMs: the attention kernel
  // writes the quantized rows as well, one launch fewer). o.w.k == a.n_heads * a.head_dim.
  virtual void attention_output(KvCache& cache, float* q, float* k, const float* v, const int32_t* positions,
                                const int32_t* slots, const RopeArgs& r, const AttentionArgs& a,
                                const MatmulTarget& o);

  // Step recording, for backends where launching costs more than running (CUDA graphs). The caller
  // brackets a sequence of ops whose launches depend only on `key` (shapes and pointers) - the data
  // they read may change between replays, only through backend memory (upload() before the
  // bracket). replay(key) enqueues the sequence recorded under `key` and returns true, or returns
  // false when there is none; then the caller enqueues the ops between begin_recording(key) and
  // end_recording(), which also runs them. Backends without recording return false and ignore
  // the bracket. No upload(), download() or synchronize() inside the bracket. When an op throws
  // inside the bracket, the caller ends it with discard_recording() instead: nothing recorded runs
  // or is kept (the caller may then enqueue the same ops without a bracket). A recording is
  // dropped by the backend when memory it may refer to is freed or reallocated, so a replay never
  // touches freed memory; the caller's key must still name every pointer and shape that is not
  // fixed for the caller's lifetime.
  virtual bool replay(uint64_t key) {
    (void)key;
    return false;
  }
  virtual void begin_recording(uint64_t key) { (void)key; }
  virtual void end_recording() {}
  virtual void discard_recording() {}
};

// The CPU backend. threads <= 0: all hardware threads.
std::unique_ptr<Backend> make_cpu_backend(int threads);
// The CUDA backend on GPU `device`; defined in the mx8_cuda library (builds with -DMX8_CUDA=ON).
// By name: mx8/backend/backend_by_name.h.
std::unique_ptr<Backend> make_cuda_backend(int device);

}  // namespace mx8::backend
