// Internals of the CUDA backend (backend_cuda*.cu), shared by its translation units.
//
// Owned by the cudabackend engineer. Each op's kernels live in one file:
//   backend_cuda.cu              the Backend class: memory, staging of uploads, dispatch, errors
//   backend_cuda_elementwise.cu  embedding, rmsnorm, rope, add, silu_mul, softmax
//   kv_cache.cu                  the paged KV cache: storage, kv_write, rope_kv_write
//   attention_*.cu               attention over it (attention_decode.cu: decode steps and the dispatch)
//   backend_cuda_gemv.cu         matmul for m <= gemv_max_rows: weight-streaming GEMV, every weight format
//   backend_cuda_gemm.cu         matmul for larger m: a tiled SIMT GEMM (correct fallback) and the
//                                kernels engineer's FP8 wgmma GEMM where it applies
//
// Index arrays (token ids, slots, block tables, kv lengths) live in device memory, so they cannot
// be checked on the host before a launch. Kernels check them and, on a bad index, skip the work and
// set a bit in a host-mapped error word; the backend turns that bit into mx8::Error (naming the op)
// at the next synchronize() or download(). A bad index is never silently read or written.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "backend/cuda/launch_ex.cuh"
#include "backend/cuda/ptx/griddep.cuh"
#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

// Bits of the device error word.
enum ErrorBit : uint32_t {
  kErrEmbeddingId = 1u << 0,  // embedding: id outside [0, table rows)
  kErrKvSlot = 1u << 1,       // kv_write: slot outside the cache
  kErrAttnKvLen = 1u << 2,    // attention: kv_len <= 0 or beyond the block table, or seq < 0
  kErrAttnPage = 1u << 3,     // attention: block table names a page outside the cache
};
std::string describe_error_bits(uint32_t bits);

// 16-byte alignment, which the vector loads and TMA of the matmul kernels need.
inline bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Throws mx8::Error("cuda backend: <what>: <cuda error>") when e is not cudaSuccess.
void check(cudaError_t e, const char* what);
// Checks the launch that was just enqueued.
inline void check_launch(const char* op) {
  check(cudaGetLastError(), op);
}

// Bumped whenever device memory that a recorded step (a CUDA graph) may refer to is freed: backend
// free(), a KV cache's destruction, scratch reallocation. Recorded graphs older than the current
// epoch are dropped instead of replayed (a graph holds raw pointers).
uint64_t memory_epoch();
void bump_memory_epoch();
// Step recording into CUDA graphs (Backend::begin_recording): on unless MX8_CUDA_GRAPHS=0 when the
// backend was created; benchmarks switch it for A/B runs. Off: replay() returns false and the
// recording bracket is ignored.
bool graphs_enabled();
void set_graphs_enabled(bool on);

// Programmatic dependent launch (Hopper): kernels are launched with programmatic stream
// serialization, so kernel N+1 is scheduled while kernel N drains instead of after it. Every kernel
// of this backend starts with pdl_trigger() (let the next kernel be scheduled) and calls pdl_wait()
// (wait for the previous kernel to finish and its writes to be visible) before it reads anything a
// previous kernel may have written; the GEMV issues its first weight loads before pdl_wait(), as
// weights are never written by kernels. Decode is ~500 small launches per token, so the launch gaps
// this hides are a measurable part of the token time. MX8_CUDA_PDL=0 turns it off.
bool pdl_enabled();
void set_pdl_enabled(bool on);
// Whether the last CUDA backend created takes the tensor-core GEMMs above gemv_max_rows (sm_90a, unless
// MX8_CUDA_WGMMA=0): FP8 weights then quantize x, and tests choose their quantized reference by it.
bool wgmma_gemm_enabled();
void set_wgmma_gemm_enabled(bool on);
// The most rows of activations that a matmul with weights of format f streams through the GEMV
// (f32 activations); more rows take the tensor-core GEMMs where they run (sm_90a, and the shape
// theirs). FP8 and MXFP8 weights: 4 (backend_cuda.cu has the measurements), or MX8_CUDA_GEMV_MAX_ROWS;
// BF16: 1, or MX8_CUDA_BF16_GEMV_MAX_ROWS (1..16, read once); other formats, or no tensor-core GEMMs: 16.
// One row always stays on the GEMV (through the FP8 GEMM, batch-1 decode ran 280 tok/s against 391).
int64_t gemv_max_rows(WeightFormat f);
// Sets it for f's group (FP8 and MXFP8, or BF16) and returns the previous value (tests, A/B runs).
int64_t set_gemv_max_rows(WeightFormat f, int64_t rows);
// set_gemv_max_rows for a scope.
class ScopedGemvMaxRows {
 public:
  ScopedGemvMaxRows(WeightFormat f, int64_t rows) : f_(f), was_(set_gemv_max_rows(f, rows)) {}
  ~ScopedGemvMaxRows() { set_gemv_max_rows(f_, was_); }
  ScopedGemvMaxRows(const ScopedGemvMaxRows&) = delete;
  ScopedGemvMaxRows& operator=(const ScopedGemvMaxRows&) = delete;

 private:
  WeightFormat f_;
  int64_t was_;
};

#if defined(__CUDACC__)
__device__ __forceinline__ void pdl_wait() {
  mx8::cuda::ptx::griddep_wait();
}
__device__ __forceinline__ void pdl_trigger() {
  mx8::cuda::ptx::griddep_launch_dependents();
}

// Rope of pair j at position pos: the angle float(pos) * inv_freq[j] as sine and cosine, the indices
// of the pair's two elements, and the rotation. rope_pair is all of it on a head vector in memory
// (rope_kernel and the fused kernels share these, so all round alike); the cluster attention computes
// the angle before griddepcontrol.wait and rotates values it holds in registers. __fmul_rn/__fadd_rn:
// no FMA contraction, so each output is rounded as the CPU rounds it.
struct RopeAngle {
  float sn, cs;
};
__device__ __forceinline__ RopeAngle rope_angle(int j, int32_t pos, const RopeArgs& r) {
  RopeAngle a;
  sincosf(float(pos) * r.inv_freq[j], &a.sn, &a.cs);
  return a;
}
__device__ __forceinline__ int rope_i0(int j, const RopeArgs& r) {
  return r.style == RopeStyle::interleaved ? 2 * j : j;
}
__device__ __forceinline__ int rope_i1(int j, const RopeArgs& r) {
  return r.style == RopeStyle::interleaved ? 2 * j + 1 : j + r.rot_dim / 2;
}
__device__ __forceinline__ void rope_rotate(float& v0, float& v1, RopeAngle a) {
  const float x0 = v0, x1 = v1;
  v0 = __fsub_rn(__fmul_rn(x0, a.cs), __fmul_rn(x1, a.sn));
  v1 = __fadd_rn(__fmul_rn(x0, a.sn), __fmul_rn(x1, a.cs));
}
__device__ __forceinline__ void rope_pair(float* v, int j, int32_t pos, const RopeArgs& r) {
  const RopeAngle a = rope_angle(j, pos, r);
  const int i0 = rope_i0(j, r), i1 = rope_i1(j, r);
  float v0 = v[i0], v1 = v[i1];
  rope_rotate(v0, v1, a);
  v[i0] = v0;
  v[i1] = v1;
}

// Launches `kernel` on `s` with `smem` bytes of dynamic shared memory (with the PDL attribute when
// enabled) and checks the launch.
template <typename... KArgs, typename... Args>
void launch_smem(const char* op, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                 Args... args) {
  check(mx8::cuda::launch_ex(kernel, grid, block, smem, s, 1, pdl_enabled(), args...), op);
}
template <typename... KArgs, typename... Args>
void launch(const char* op, void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t s, Args... args) {
  launch_smem(op, kernel, grid, block, 0, s, args...);
}
#endif

// Device memory of a paged KV cache: layers x {K, V} x pages, each page_bytes long, laid out as the
// CPU backend lays out its pages (elements [slot][kv head][head_dim], then fp8 scales).
class CudaKvCache final : public KvCache {
 public:
  // Zeroed on `s` (stream-ordered before the backend's later ops).
  CudaKvCache(const KvCacheDesc& d, cudaStream_t s);
  ~CudaKvCache() override;
  uint8_t* base() const { return base_; }
  size_t page_bytes() const { return page_bytes_; }
  // Start of the K (kv = 0) or V (kv = 1) pool of `layer`.
  uint8_t* pool(int layer, int kv) const {
    return base_ + (size_t(layer) * 2 + size_t(kv)) * size_t(desc_.n_pages) * page_bytes_;
  }

 private:
  uint8_t* base_ = nullptr;
  size_t page_bytes_ = 0;
};

// ---- launchers (all asynchronous on `s`) -------------------------------------------------------

void launch_embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out, uint32_t* err,
                      cudaStream_t s);
void launch_rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y,
                    cudaStream_t s);
void launch_rope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads, const RopeArgs& r,
                 cudaStream_t s);
void launch_add(float* y, const float* x, int64_t n, cudaStream_t s);
void launch_silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t s);
void launch_softmax(float* x, int64_t rows, int64_t cols, cudaStream_t s);
// argmax and top_k split each row over blocks (backend_cuda_select.cu); `scratch` is
// select_scratch_bytes of device memory, zero before the first call (every call leaves its counters so).
size_t select_scratch_bytes(int64_t rows, int64_t cols, int k);
void launch_argmax(const float* x, int64_t rows, int64_t cols, int32_t* out, void* scratch, cudaStream_t s);
void launch_top_k(const float* x, int64_t rows, int64_t cols, int k, const float* temperature, float* values,
                  int32_t* ids, void* scratch, cudaStream_t s);
// Backend::penalize; entries outside the rows, columns or counts >= 1 are skipped (the model checks them
// on the host before they are uploaded).
void launch_penalize(float* x, int64_t rows, int64_t cols, const PenaltyArgs& p, cudaStream_t s);
void launch_gather(const float* x, int64_t rows, int64_t cols, const int32_t* ids, int k, float* out,
                   cudaStream_t s);
void launch_log_sum_exp(const float* x, int64_t rows, int64_t cols, const int32_t* tokens, double* lse,
                        float* picked, cudaStream_t s);

void launch_kv_write(CudaKvCache& c, int layer, const float* k, const float* v, const int32_t* slots,
                     int64_t n_tokens, uint32_t* err, cudaStream_t s);
// scratch: attention_scratch_floats(c, a) floats of device memory (nullptr when that is 0).
void launch_attention(CudaKvCache& c, const AttentionArgs& a, uint32_t* err, cudaStream_t s,
                      float* scratch = nullptr);
// Decode attention for block tables of up to 1024 positions: one kv head per thread-block cluster of
// up to 8 blocks (split by query head and position, merged through distributed shared memory in a
// fixed order); MX8_CUDA_CLUSTER_ATTN=0 keeps the grouped kernel. The split/heads knobs are for tests
// (0: the heuristic).
void set_cluster_attention_splits(int s);
void set_cluster_attention_heads_per_block(int gb);
// Split attention (positions spread over blocks, then a merge kernel) for block tables of more than
// 1024 positions with the grouped kernel's shapes: on unless MX8_CUDA_SPLIT_ATTN=0 when the backend
// is created (H200, batch 1 at 4096 positions: 109 -> 270 tok/s with FP8 weights; at 65536 positions
// 215 tok/s with a bf16 cache since the partials run on the tensor cores, docs/CUDA_BACKEND.md).
bool split_attention_enabled();
void set_split_attention_enabled(bool on);
// Query heads per block of split attention, for tests and comparisons (0: the default, 2; a value that
// does not divide the group takes the default).
void set_split_attention_heads_per_block(int gb);
// Split attention's partials on the tensor cores (attention_split_mma.cu) for bf16 and fp8 caches
// with pages of a power of two of at least 16 positions and groups of 1, 2 or 4: on unless
// MX8_CUDA_SPLIT_MMA=0 when the backend is created; off, the grouped SIMT kernel takes them.
bool split_attention_mma_enabled();
void set_split_attention_mma_enabled(bool on);
// fp8 caches' split partials from the transposed products (attention_split_fp8.cu) rather than
// attention_split_mma.cu's (MX8_CUDA_SPLIT_FP8T=0 when the backend is created, for comparisons).
bool split_fp8_transposed_enabled();
void set_split_fp8_transposed_enabled(bool on);
// Prompt steps (attention_prefill.cu): steps of more than kPrefillMinTokens query tokens with
// head_dim 128, a bf16 or fp8 cache and groups dividing 64 take the tensor-core kernel, which reads
// each K/V row once per 64 query rows (decode-sized steps keep the per-token kernels, whose blocks
// serve one token). MX8_CUDA_PREFILL_ATTN=0 turns it off (comparisons).
constexpr int kPrefillMinTokens = 16;
bool attention_prefill_enabled();
bool attention_prefill_applies(const CudaKvCache& c, const AttentionArgs& a);
// Prompt-step attention on mma.sync m16n8k16 (attention_prefill_mma.cu) where pages hold a power of
// two of at least 16 positions: on unless MX8_CUDA_PREFILL_MMA=0 when the backend is created; off, the
// TF32 kernel of attention_prefill.cu takes those calls too (comparisons, tests).
bool attention_prefill_mma_enabled();
void set_attention_prefill_mma_enabled(bool on);
void launch_attention_prefill(CudaKvCache& c, const AttentionArgs& a, uint32_t* err, cudaStream_t s);

// Scratch launch_attention needs for `a` (the partial results of split attention), or 0.
size_t attention_scratch_floats(const CudaKvCache& c, const AttentionArgs& a);
// rope_kv_write of one token, then attention, in one launch (the cluster attention kernel, or the
// grouped one, with a rope + kv_write prologue); returns false, having launched nothing, where no
// fused kernel applies (more than one token, q != a.q, head_dim or rot_dim != 128, GQA groups above
// 8): the caller composes. With `qo`, the attention output is also written quantized there (row t,
// tile h: token t's head h), and only the cluster kernel applies (false where it does not).
struct ActQuantOut;
bool launch_rope_kv_write_attention(CudaKvCache& c, float* q, float* k, const float* v,
                                    const int32_t* positions, const int32_t* slots, const RopeArgs& r,
                                    const AttentionArgs& a, uint32_t* err, cudaStream_t s,
                                    const ActQuantOut* qo = nullptr);
// rope on q [n_tokens][n_heads][head_dim] and k, then kv_write of k and v: one launch.
void launch_rope_kv_write(CudaKvCache& c, int layer, float* q, float* k, const float* v,
                          const int32_t* positions, const int32_t* slots, int64_t n_tokens, int64_t n_heads,
                          const RopeArgs& r, uint32_t* err, cudaStream_t s);

// y[m][n] = x[m][k] W^T (+ bias), m <= 16 recommended (launch_gemv_group's kernels; W is streamed
// once per call for fp8_block weights, once per 8 rows of x for the other formats).
void launch_gemv(const WeightView& w, const float* x, int64_t m, float* y, const float* bias, cudaStream_t s);
// Several GEMVs that share their input, in one launch (matmul_fused for m <= 16): for every target,
// y = in W^T (+ bias), or y += in W^T (+ bias) when in.accumulate; in = x, or silu(x) * x_up when
// in.x_up is set. Requirements (gemv_group_applies): 1 <= count <= kMaxGemvTargets, m <= 16, every
// target of the same WeightFormat and ScaleType and the same k.
constexpr int kMaxGemvTargets = 4;
bool gemv_group_applies(const MatmulInput& in, const MatmulTarget* targets, int count);
void launch_gemv_group(const MatmulInput& in, const MatmulTarget* targets, int count, cudaStream_t s);
// matmul_swiglu in one launch where the group {gate, up} takes the tensor-core FP8 GEMV: gate.y =
// silu(in W_gate^T) * (in W_up^T), bit for bit silu_mul of the products launch_gemv_group would
// store. Returns false (and launches nothing) where it does not apply.
bool launch_gemv_swiglu(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                        cudaStream_t s);
// Bytes of the quantized activations the FP8 GEMM needs for m rows against w (the backend keeps
// them in its scratch slots 4 and 5).
struct Fp8GemmWorkspace {
  size_t code_bytes, scale_bytes;
};
Fp8GemmWorkspace fp8_gemm_workspace(const WeightView& w, int64_t m);
// True when the tensor-core path takes this matmul: fp8_block or (UE8M0-scaled) mxfp8 weights,
// m > gemv_max_rows, n % 16 == 0, k % 128 == 0, 16-byte aligned pointers.
bool fp8_gemm_applies(const WeightView& w, const float* x, int64_t m, const float* y);
// Quantizes x, silu(x) * x_up where x_up is set (formed as silu_mul_kernel forms it), or rmsnorm(x)
// with weights `norm` and `eps` where norm is set (16-byte aligned; formed as rmsnorm_vec_kernel
// forms it, in the same launch), for the FP8 GEMM against w: E4M3 with `ceil` scales, 1x128 for
// fp8_block weights (UE8M0 or f32 as the weights'), 1x32 UE8M0 for mxfp8; codes and scales sized
// by fp8_gemm_workspace, 16-byte aligned. One quantization serves every weight of the same format,
// scale type and k.
void quantize_fp8_act(const WeightView& w, const float* x, const float* x_up, const float* norm, float eps,
                      int64_t m, uint8_t* codes, void* scales, cudaStream_t s);
// Each target's y = (or, accumulate: y +=) x_q W^T (+ bias), from quantize_fp8_act's codes and
// scales: fp8_block targets on the wgmma FP8 GEMM, 3 targets per launch; mxfp8 ones on gemv_fp8x8 up
// to 16 rows (all targets in one launch; MX8_CUDA_FP8X8=0 turns it off), else on the wgmma MXFP8
// GEMM one after another (the weights' transposed scales are then written behind the activations').
void run_fp8_gemm(const MatmulTarget* targets, int count, const uint8_t* codes, void* scales, int64_t m,
                  bool accumulate, cudaStream_t s);
// y[m][n] += bias[n].
void launch_add_bias(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t s);
// True where Bf16Gemm may take the matmul: bf16 weights, k % 8 == 0, n % 4 == 0, 16-byte aligned.
bool bf16_gemm_applies(const WeightView& w, const float* x, const float* y);
// matmul for m > gemv_max_rows with bf16 weights on the tensor cores (backend_cuda_bf16gemm.cu): x
// split into three bf16 planes, cuBLASLt bf16 GEMMs with f32 output (one of 3m rows up to 16 rows,
// else three); no rounding of x beyond ~2^-24.
class Bf16Gemm {
 public:
  Bf16Gemm();
  ~Bf16Gemm();
  Bf16Gemm(const Bf16Gemm&) = delete;
  Bf16Gemm& operator=(const Bf16Gemm&) = delete;
  // Scratch that run needs for m rows against w (16-byte aligned): the planes of x, and up to 16 rows
  // the three planes' products.
  static size_t scratch_bytes(int64_t m, const WeightView& w);
  // y = x W^T (+ bias) for bf16 weights. False, with nothing launched, where cuBLASLt has no algorithm
  // for the shape (the caller falls back to the SIMT GEMM).
  bool run(const WeightView& w, const float* x, int64_t m, float* y, const float* bias, uint16_t* planes,
           cudaStream_t s);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
// Tiled SIMT GEMM for any m (the fallback for m > 16): W decoded to f32 in shared memory.
void launch_gemm_simt(const WeightView& w, const float* x, int64_t m, float* y, const float* bias,
                      cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
