// The CUDA implementation of the backend interface (include/mx8/backend/backend.h).
//
// Owned by the cudabackend engineer; kernels engineer's GEMM/GEMV are called from here.
//
// One CUDA stream per backend; every op is enqueued on it and returns. Small uploads (the per-step
// token ids, positions, slots and block tables) are copied into a pinned staging ring and sent
// with cudaMemcpyAsync, so that a decode step does not wait on the host; large uploads (weights)
// synchronize. Kernels report bad indices through a host-mapped error word, checked at
// synchronize() and download() (backend_cuda.cuh explains why).
//
// matmul: m <= 16 rows of activations (on sm_90a: m <= 4 for FP8 and MXFP8 weights, 1 for BF16;
// gemv_max_rows) take the weight-streaming GEMV (backend_cuda_gemv.cu), which dequantizes in registers and
// keeps activations f32; larger m take the tiled GEMMs (the FP8 ones quantize the activations). matmul_fused:
// one grouped GEMV launch where launch_gemv_group applies, else the plain ops composed with scratch buffers
// owned by the backend.
//
// Step recording (Backend::begin_recording) is CUDA stream capture into a graph, instantiated and
// launched at end_recording and kept in a small cache by key; replay() launches it: one launch
// instead of ~300 for a decode step. PDL launch attributes become programmatic edges of the graph.
// Inside a capture nothing may synchronize or copy from the staging ring (upload, download and
// synchronize throw), and device memory is never freed (free() defers to the next synchronize(),
// scratch grows by retiring the old buffer the same way), because the captured kernels keep raw
// pointers. Any free bumps memory_epoch(), which drops every graph recorded before it.
// MX8_CUDA_GRAPHS=0 turns recording off (for comparisons).
#include "backend/cuda/act_quantize.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/gemv_fp8_mma.cuh"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mx8/backend/cuda/gemm.h"
#include "mx8/error.h"

namespace mx8::backend {
namespace cuda_impl {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(std::string("cuda backend: ") + what + ": " + cudaGetErrorName(e) + " (" +
                cudaGetErrorString(e) + ")");
}

std::string describe_error_bits(uint32_t bits) {
  std::string s;
  auto add = [&](uint32_t bit, const char* what) {
    if (bits & bit) s += (s.empty() ? "" : "; ") + std::string(what);
  };
  add(kErrEmbeddingId, "embedding: a token id is outside the table");
  add(kErrKvSlot, "kv_write: a slot id is outside the KV cache");
  add(kErrAttnKvLen, "attention: a kv_len is <= 0 or beyond the block table, or a seq index is negative");
  add(kErrAttnPage, "attention: a block table names a page outside the KV cache");
  return s;
}

namespace {
std::atomic<bool> g_pdl{true};
std::atomic<bool> g_wgmma_gemm{false};
std::atomic<uint64_t> g_memory_epoch{0};
std::atomic<bool> g_graphs{true};
}  // namespace

bool graphs_enabled() {
  return g_graphs.load(std::memory_order_relaxed);
}
void set_graphs_enabled(bool on) {
  g_graphs.store(on, std::memory_order_relaxed);
}

uint64_t memory_epoch() {
  return g_memory_epoch.load(std::memory_order_acquire);
}
void bump_memory_epoch() {
  g_memory_epoch.fetch_add(1, std::memory_order_acq_rel);
}

bool pdl_enabled() {
  return g_pdl.load(std::memory_order_relaxed);
}
void set_pdl_enabled(bool on) {
  g_pdl.store(on, std::memory_order_relaxed);
}
bool wgmma_gemm_enabled() {
  return g_wgmma_gemm.load(std::memory_order_relaxed);
}
void set_wgmma_gemm_enabled(bool on) {
  g_wgmma_gemm.store(on, std::memory_order_relaxed);
}
// Batched decode of a Llama-3-8B shape on the H200 (`mx8 bench decode-cuda --batch`, tok/s with the
// GEMV for every batch -> the tensor-core GEMMs above the row count given): FP8 weights, above 1 row:
// batch 2 565 -> 545, 4 1064 -> 1048; above 4 rows: batch 5 1202 -> 1336, 6 1425 -> 1587, 8 1832 ->
// 2087, 16 2944 -> 3802. MXFP8 (whose tensor-core GEMV takes at most 4 rows, the SIMT GEMV beyond):
// batch 2 515 -> 234 and 4 729 -> 460 above 1 row, batch 5 285 -> 582 and 8 324 -> 921 above 4.
// BF16 (cuBLASLt on the three stacked planes of x) above 1 row: batch 2 357 -> 365, 3 334 -> 538,
// 4 374 -> 695, 8 385 -> 1368, 16 388 -> 2510. Since the FP8 GEMMs launch as programmatic dependents
// and q/k/v and gate/up each as one launch (twentieth session), FP8 above 2 rows: batch 2 701 -> 637,
// 3 826 -> 956, 4 1075 -> 1268. Since MXFP8 rows past the GEMV go to gemv_fp8x8 (twenty-first
// session), MXFP8 above 2 rows: batch 3 621 -> 822, 4 766 -> 1054 (above 1 row: batch 2 529 -> 552,
// not taken, so that 2 rows keep f32 activations as FP8's do).
constexpr int kFp8GemvMaxRows = 2;
constexpr int kBf16GemvMaxRows = 1;
constexpr int kMxfp8GemvMaxRows = 2;

namespace {
// gemv_max_rows' settings, [0] FP8, [1] BF16, [2] MXFP8; 0 until first read from the environment
// (MX8_CUDA_GEMV_MAX_ROWS sets FP8 and MXFP8).
std::atomic<int> g_gemv_rows[3] = {0, 0, 0};

int gemv_rows_setting(int group) {
  int rows = g_gemv_rows[group].load(std::memory_order_relaxed);
  if (rows) return rows;
  const char* name = group == 1 ? "MX8_CUDA_BF16_GEMV_MAX_ROWS" : "MX8_CUDA_GEMV_MAX_ROWS";
  rows = group == 0 ? kFp8GemvMaxRows : group == 1 ? kBf16GemvMaxRows : kMxfp8GemvMaxRows;
  if (const char* e = std::getenv(name)) {
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    if (end == e || *end || v < 1 || v > 16)
      throw Error(std::string(name) + "=" + e + ": not a row count in 1..16");
    rows = int(v);
  }
  g_gemv_rows[group].store(rows, std::memory_order_relaxed);
  return rows;
}
int gemv_rows_group(WeightFormat f) {
  return f == WeightFormat::fp8_block ? 0 : f == WeightFormat::bf16 ? 1 : f == WeightFormat::mxfp8 ? 2 : -1;
}
}  // namespace

int64_t gemv_max_rows(WeightFormat f) {
  const int group = gemv_rows_group(f);
  return group < 0 || !wgmma_gemm_enabled() ? 16 : gemv_rows_setting(group);
}
int64_t set_gemv_max_rows(WeightFormat f, int64_t rows) {
  const int group = gemv_rows_group(f);
  if (group < 0 || rows < 1 || rows > 16)
    throw Error("set_gemv_max_rows: " + std::string(weight_format_name(f)) + " weights, " +
                std::to_string(rows) + " rows (FP8, MXFP8 or BF16 weights, 1..16 rows)");
  const int was = gemv_rows_setting(group);
  g_gemv_rows[group].store(int(rows), std::memory_order_relaxed);
  return was;
}

namespace {

constexpr size_t kStagingBytes = size_t(4) << 20;  // pinned ring for small uploads
constexpr size_t kStagedMax = size_t(256) << 10;   // uploads up to this size are staged
constexpr size_t kMaxGraphs = 8;                   // recorded steps kept (least recently used goes)

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    int count = 0;
    check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device < 0 || device >= count)
      throw Error("cuda backend: GPU " + std::to_string(device) + " does not exist (" +
                  std::to_string(count) + " visible)");
    check(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaHostAlloc(reinterpret_cast<void**>(&err_host_), sizeof(uint32_t), cudaHostAllocMapped),
          "cudaHostAlloc (error word)");
    *err_host_ = 0;
    check(cudaHostGetDevicePointer(reinterpret_cast<void**>(&err_dev_), err_host_, 0),
          "cudaHostGetDevicePointer");
    check(cudaHostAlloc(reinterpret_cast<void**>(&staging_), kStagingBytes, cudaHostAllocDefault),
          "cudaHostAlloc (staging)");
    info_.name = "cuda";
    info_.description = "cuda: " + std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                        std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) +
                        " SMs, " + std::to_string(prop.totalGlobalMem >> 30) + " GiB)";
    info_.host_memory = false;
    // PDL needs sm_90; MX8_CUDA_PDL=0 turns it off (for comparisons).
    const char* env = std::getenv("MX8_CUDA_PDL");
    set_pdl_enabled(prop.major >= 9 && !(env && std::string(env) == "0"));
    if (pdl_enabled()) info_.description += ", programmatic dependent launch";
    // Prompt steps and batched decode (m > gemv_max_rows) on the tensor cores: FP8 weights take the wgmma FP8
    // GEMMs (sm_90a), which quantize the activations to E4M3 on the fly, as issue 5 asks where the backend
    // has FP8 GEMMs; bf16 weights take cuBLASLt with x split into three bf16 planes (not rounded). The SIMT
    // GEMM is 10-20x slower (docs/CUDA_BACKEND.md); MX8_CUDA_WGMMA=0 keeps it for every format (comparisons).
    const char* wg = std::getenv("MX8_CUDA_WGMMA");
    use_wgmma_ = prop.major == 9 && prop.minor == 0 && !(wg && std::string(wg) == "0");
    set_wgmma_gemm_enabled(use_wgmma_);
    // MX8_CUDA_FUSED_ATTN=0: rope_kv_write_attention as two launches (for comparisons).
    const char* fa = std::getenv("MX8_CUDA_FUSED_ATTN");
    fused_attention_ = !(fa && std::string(fa) == "0");
    const char* sa = std::getenv("MX8_CUDA_SPLIT_ATTN");
    set_split_attention_enabled(!(sa && std::string(sa) == "0"));
    const char* sm = std::getenv("MX8_CUDA_SPLIT_MMA");
    set_split_attention_mma_enabled(!(sm && std::string(sm) == "0"));
    const char* ft = std::getenv("MX8_CUDA_SPLIT_FP8T");
    set_split_fp8_transposed_enabled(!(ft && std::string(ft) == "0"));
    const char* pm = std::getenv("MX8_CUDA_PREFILL_MMA");
    set_attention_prefill_mma_enabled(!(pm && std::string(pm) == "0"));
    // MX8_CUDA_SPLIT_GB=1|2|4: split attention's query heads per block (comparisons).
    if (const char* gb = std::getenv("MX8_CUDA_SPLIT_GB")) {
      const std::string v = gb;
      if (v != "1" && v != "2" && v != "4") throw Error("MX8_CUDA_SPLIT_GB=" + v + ": not 1, 2 or 4");
      set_split_attention_heads_per_block(std::stoi(v));
    }
    // MX8_CUDA_FFN_OVERLAP=0: swiglu_ffn's down projection waits for the whole pair (comparisons).
    const char* fo = std::getenv("MX8_CUDA_FFN_OVERLAP");
    ffn_overlap_ = !(fo && std::string(fo) == "0");
    const char* gr = std::getenv("MX8_CUDA_GRAPHS");
    set_graphs_enabled(!(gr && std::string(gr) == "0"));
    if (graphs_enabled()) info_.description += ", CUDA graphs";
  }
  ~CudaBackend() override {
    discard_recording();
    cudaStreamSynchronize(stream_);
    for (Recorded& g : graphs_) cudaGraphExecDestroy(g.exec);
    for (Scratch& sc : scratch_)
      if (sc.p) cudaFree(sc.p);
    for (void* p : retired_) cudaFree(p);
    cudaStreamDestroy(stream_);
    cudaFreeHost(staging_);
    cudaFreeHost(err_host_);
  }

  const BackendInfo& info() const override { return info_; }

  void* alloc(size_t bytes) override {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 64);  // 256-byte aligned
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      throw Error("cuda backend: out of GPU memory allocating " + std::to_string(bytes) + " bytes (" +
                  cudaGetErrorString(e) + ")");
    }
    return p;
  }
  void free(void* p) override {
    if (!p) return;
    bump_memory_epoch();
    if (capturing_) {
      retired_.push_back(p);  // the graph being captured may refer to it; freed at synchronize()
      return;
    }
    check(cudaFree(p), "cudaFree");
  }
  size_t available_memory() const override {
    size_t free_bytes = 0, total = 0;
    if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return free_bytes;
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    if (capturing_)
      throw Error("cuda backend: upload inside a recorded step (not allowed: see Backend::replay)");
    if (bytes <= kStagedMax) {
      if (staging_pos_ + bytes > kStagingBytes) {
        // The ring is full: wait until every staged copy has been consumed, then start over.
        check(cudaStreamSynchronize(stream_), "upload");
        staging_pos_ = 0;
      }
      std::memcpy(staging_ + staging_pos_, src, bytes);
      check(cudaMemcpyAsync(dst, staging_ + staging_pos_, bytes, cudaMemcpyHostToDevice, stream_), "upload");
      staging_pos_ += (bytes + 255) / 256 * 256;
      return;
    }
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "upload");
    synchronize();
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (capturing_) synchronize();  // throws: not inside a recorded step
    // The copy is queued behind the step's kernels and starts as they end; synchronize() then
    // waits for it and reports the errors the kernels flagged (dst is not to be used then).
    if (bytes) check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "download");
    synchronize();
  }
  void* alloc_host(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw Error("cuda backend: page-locked host allocation of " + std::to_string(bytes) +
                  " bytes failed: " + cudaGetErrorString(e));
    }
    return p;
  }
  void free_host(void* p) override {
    if (p) cudaFreeHost(p);  // called from destructors: nothing to report a failure to
  }
  void synchronize() override {
    if (capturing_)
      throw Error(
          "cuda backend: synchronize or download inside a recorded step (not allowed: see Backend::replay)");
    check(cudaStreamSynchronize(stream_), "synchronize");
    staging_pos_ = 0;
    for (void* p : retired_) check(cudaFree(p), "cudaFree (retired)");
    retired_.clear();
    const uint32_t bits = *static_cast<volatile uint32_t*>(err_host_);
    if (bits) {
      *err_host_ = 0;
      throw Error("cuda backend: " + describe_error_bits(bits));
    }
  }

  bool supports_weight(WeightFormat f, ScaleType st) const override {
    return f != WeightFormat::mxfp8 || st == ScaleType::ue8m0;
  }
  bool supports_kv(KvFormat) const override { return true; }
  std::string activation_quantization(WeightFormat f) const override {
    const std::string f32 = "none: f32 activations, weights decoded to f32 in registers, f32 accumulation";
    if (!use_wgmma_ || f == WeightFormat::f32)
      return f32 + " (m <= 16: streaming GEMV; larger m: tiled SIMT GEMM)";
    const std::string rows = std::to_string(gemv_max_rows(f));
    // FP8 and MXFP8 rows of that few take the tensor-core GEMV (gemv_fp8_mma.cu) where it applies.
    const std::string none =
        f == WeightFormat::bf16
            ? f32 + " (streaming GEMV)"
            : "none: f32 activations, on the tensor-core GEMV as two f16 parts (hi + lo, ~22 "
              "significant bits), weights exact in f16, f32 accumulation";
    if (f == WeightFormat::bf16)
      return "m <= " + rows + ": " + none + "; m > " + rows +
             " with k % 8 == 0 and n % 4 == 0: x split exactly into three bf16 parts (not rounded), "
             "cuBLASLt bf16 GEMMs with f32 accumulation";
    if (f == WeightFormat::mxfp8)
      return "m <= " + rows + ": " + none + "; m > " + rows +
             " with n % 16 == 0 and k % 128 == 0: E4M3 with 1x32 `ceil` UE8M0 scales (MXFP8), FP32 "
             "promotion every 32 of k: up to 16 rows the mma.sync FP8 GEMV (gemv_fp8x8), more the wgmma "
             "MXFP8 GEMM";
    return "m <= " + rows + ": " + none + "; m > " + rows +
           " with n % 16 == 0 and k % 128 == 0: E4M3 with 1x128 `ceil` scales (UE8M0, or f32 powers "
           "of two for f32-scaled weights), wgmma FP8 GEMM with FP32 promotion every 128 of k";
  }

  void matmul(const WeightView& w, const float* x, int64_t m, float* y, const float* bias) override {
    validate(w, "matmul");
    if (use_wgmma_ && fp8_gemm_applies(w, x, m, y)) {  // m > gemv_max_rows
      const Fp8GemmWorkspace need = fp8_gemm_workspace(w, m);
      uint8_t* codes = reinterpret_cast<uint8_t*>(scratch(4, (need.code_bytes + 3) / 4));
      float* scales = scratch(5, (need.scale_bytes + 3) / 4);
      quantize_fp8_act(w, x, nullptr, nullptr, 0.0f, m, codes, scales, stream_);
      const MatmulTarget t{w, y, bias};
      run_fp8_gemm(&t, 1, codes, scales, m, false, stream_);
    } else if (!(bf16_gemm_takes(w, x, m, y) &&
                 bf16_gemm_.run(
                     w, x, m, y, bias,
                     reinterpret_cast<uint16_t*>(scratch(4, (Bf16Gemm::scratch_bytes(m, w) + 3) / 4)),
                     stream_))) {
      if (m <= 16)
        launch_gemv(w, x, m, y, bias, stream_);
      else
        launch_gemm_simt(w, x, m, y, bias, stream_);
    }
  }
  MatmulInput matmul_swiglu(const MatmulInput& in, const MatmulTarget& gate,
                            const MatmulTarget& up) override {
    validate(gate.w, "matmul_swiglu");
    validate(up.w, "matmul_swiglu");
    const MatmulTarget pair[2] = {gate, up};
    if (!in.x_up && !in.accumulate && gate.w.n == up.w.n && gate.w.k == up.w.k &&
        !tensor_cores_take(in, pair, 2) && launch_gemv_swiglu(in, gate, up, stream_)) {
      MatmulInput h;
      h.x = gate.y;
      h.m = in.m;
      return h;
    }
    return Backend::matmul_swiglu(in, gate, up);
  }
  void swiglu_ffn(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                  const MatmulTarget& down, bool accumulate) override {
    validate(gate.w, "swiglu_ffn");
    validate(up.w, "swiglu_ffn");
    validate(down.w, "swiglu_ffn");
    const MatmulTarget pair[2] = {gate, up};
    if (ffn_overlap_ && !in.x_up && !in.accumulate && gate.w.n == up.w.n && gate.w.k == up.w.k &&
        !tensor_cores_take(in, pair, 2) && gemv_group_applies(in, pair, 2) &&
        gemv_fp8_mma_ffn_applies(in, gate, up, down)) {
      launch_gemv_fp8_mma_ffn(in, gate, up, down, accumulate, stream_);
      check_launch("swiglu_ffn (fp8 mma gemv pair, then the down projection on the rows made)");
      return;
    }
    Backend::swiglu_ffn(in, gate, up, down, accumulate);
  }
  void matmul_fused(const MatmulInput& in, const MatmulTarget* targets, int count) override {
    if (count <= 0) return;
    const int64_t k = targets[0].w.k;
    for (int i = 0; i < count; ++i) {
      validate(targets[i].w, "matmul_fused");
      if (targets[i].w.k != k)
        throw Error("cuda backend: matmul_fused: target " + std::to_string(i) +
                    " has k = " + std::to_string(targets[i].w.k) + ", target 0 has k = " + std::to_string(k));
    }
    const bool gemv = gemv_group_applies(in, targets, count);
    if (gemv && !tensor_cores_take(in, targets, count)) {
      launch_gemv_group(in, targets, count, stream_);
      return;
    }
    // The composition of Backend::matmul_fused, with scratch that outlives the call (a recorded
    // step keeps the pointers).
    if (in.x_up && in.norm) throw Error("cuda backend: matmul_fused: an input with both x_up and norm");
    if (fp8_group(in, targets, count)) return;
    if (in.norm) {
      // The normalized rows into scratch, then the plain group (the GEMV where it applies).
      float* normed = scratch(3, size_t(in.m * k));
      launch_rmsnorm(in.x, in.norm, in.m, k, in.norm_eps, normed, stream_);
      MatmulInput plain = in;
      plain.x = normed;
      plain.norm = nullptr;
      return matmul_fused(plain, targets, count);
    }
    const float* x = in.x;
    if (in.x_up) {
      float* swiglu = scratch(0, size_t(in.m * k));
      launch_silu_mul(in.x, in.x_up, swiglu, in.m * k, stream_);
      x = swiglu;
    }
    for (int i = 0; i < count; ++i) {
      const MatmulTarget& t = targets[i];
      if (!in.accumulate) {
        matmul(t.w, x, in.m, t.y, t.bias);
        continue;
      }
      float* product = scratch(1, size_t(in.m * t.w.n));
      matmul(t.w, x, in.m, product, t.bias);
      launch_add(t.y, product, in.m * t.w.n, stream_);
    }
  }
  void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) override {
    validate(table, "embedding");
    launch_embedding(table, ids, n, out, err_dev_, stream_);
  }
  void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y) override {
    launch_rmsnorm(x, w, rows, dim, eps, y, stream_);
  }
  void rope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
            const RopeArgs& r) override {
    launch_rope(x, positions, n_tokens, n_heads, r, stream_);
  }
  void add(float* y, const float* x, int64_t n) override { launch_add(y, x, n, stream_); }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
    launch_silu_mul(gate, up, out, n, stream_);
  }
  void softmax(float* x, int64_t rows, int64_t cols) override { launch_softmax(x, rows, cols, stream_); }
  void top_k(const float* x, int64_t rows, int64_t cols, int k, const float* temperature, float* values,
             int32_t* ids) override {
    launch_top_k(x, rows, cols, k, temperature, values, ids,
                 select_scratch(select_scratch_bytes(rows, cols, k)), stream_);
  }
  void log_sum_exp(const float* x, int64_t rows, int64_t cols, const int32_t* tokens, double* lse,
                   float* picked) override {
    launch_log_sum_exp(x, rows, cols, tokens, lse, picked, stream_);
  }
  void gather(const float* x, int64_t rows, int64_t cols, const int32_t* ids, int k, float* out) override {
    launch_gather(x, rows, cols, ids, k, out, stream_);
  }
  void penalize(float* x, int64_t rows, int64_t cols, const PenaltyArgs& p) override {
    launch_penalize(x, rows, cols, p, stream_);
  }
  void argmax(const float* x, int64_t rows, int64_t cols, int32_t* out) override {
    launch_argmax(x, rows, cols, out, select_scratch(select_scratch_bytes(rows, cols, 1)), stream_);
  }

  std::unique_ptr<KvCache> create_kv_cache(const KvCacheDesc& d) override {
    if (d.n_layers <= 0 || d.n_kv_heads <= 0 || d.head_dim <= 0 || d.page_size <= 0 || d.n_pages <= 0)
      throw Error("cuda backend: bad KV cache shape (layers " + std::to_string(d.n_layers) + ", kv heads " +
                  std::to_string(d.n_kv_heads) + ", head_dim " + std::to_string(d.head_dim) + ", page size " +
                  std::to_string(d.page_size) + ", pages " + std::to_string(d.n_pages) + ")");
    return std::make_unique<CudaKvCache>(d, stream_);
  }
  void kv_write(KvCache& cache, int layer, const float* k, const float* v, const int32_t* slots,
                int64_t n_tokens) override {
    launch_kv_write(as_cuda(cache), layer, k, v, slots, n_tokens, err_dev_, stream_);
  }
  void rope_kv_write(KvCache& cache, int layer, float* q, float* k, const float* v, const int32_t* positions,
                     const int32_t* slots, int64_t n_tokens, int64_t n_heads, const RopeArgs& r) override {
    launch_rope_kv_write(as_cuda(cache), layer, q, k, v, positions, slots, n_tokens, n_heads, r, err_dev_,
                         stream_);
  }
  void rope_kv_write_attention(KvCache& cache, float* q, float* k, const float* v, const int32_t* positions,
                               const int32_t* slots, const RopeArgs& r, const AttentionArgs& a) override {
    if (!fused_attention_ ||
        !launch_rope_kv_write_attention(as_cuda(cache), q, k, v, positions, slots, r, a, err_dev_, stream_))
      Backend::rope_kv_write_attention(cache, q, k, v, positions, slots, r, a);
  }
  void attention_output(KvCache& cache, float* q, float* k, const float* v, const int32_t* positions,
                        const int32_t* slots, const RopeArgs& r, const AttentionArgs& a,
                        const MatmulTarget& o) override {
    validate(o.w, "attention_output");
    // Batched decode on the FP8 GEMMs: the attention kernel writes the GEMM's quantized input too, so
    // the projection needs no quantize launch (H200, Llama-3-8B FP8, batch 16: docs/CUDA_BACKEND.md).
    const MatmulInput in{a.out, nullptr, a.n_tokens, true};
    if (fused_attention_ && o.w.k == int64_t(a.n_heads) * a.head_dim && fp8_gemm_takes(in, &o, 1)) {
      const Fp8GemmWorkspace need = fp8_gemm_workspace(o.w, a.n_tokens);
      uint8_t* codes = reinterpret_cast<uint8_t*>(scratch(4, (need.code_bytes + 3) / 4));
      float* scales = scratch(5, (need.scale_bytes + 3) / 4);
      const ActQuantOut qo{codes, scales, mx8::cuda::sa_ld(int(a.n_tokens)),
                           o.w.format == WeightFormat::mxfp8 || o.w.scale_type == ScaleType::ue8m0,
                           o.w.format == WeightFormat::mxfp8 ? 32 : 128};
      if (launch_rope_kv_write_attention(as_cuda(cache), q, k, v, positions, slots, r, a, err_dev_, stream_,
                                         &qo)) {
        run_fp8_gemm(&o, 1, codes, scales, a.n_tokens, true, stream_);
        return;
      }
    }
    Backend::attention_output(cache, q, k, v, positions, slots, r, a, o);
  }
  void attention(KvCache& cache, const AttentionArgs& a) override {
    CudaKvCache& c = as_cuda(cache);
    const size_t floats = attention_scratch_floats(c, a);
    launch_attention(c, a, err_dev_, stream_, floats ? scratch(2, floats) : nullptr);
  }

  bool replay(uint64_t key) override {
    if (!graphs_enabled() || capturing_) return false;
    const uint64_t epoch = memory_epoch();
    for (size_t i = 0; i < graphs_.size();) {
      if (graphs_[i].epoch != epoch) {
        // Recorded before some memory was freed: it may point at it. Destroying a graph that is
        // still running is allowed (CUDA frees it when it completes).
        cudaGraphExecDestroy(graphs_[i].exec);
        graphs_.erase(graphs_.begin() + std::ptrdiff_t(i));
        continue;
      }
      if (graphs_[i].key == key) {
        check(cudaGraphLaunch(graphs_[i].exec, stream_), "cudaGraphLaunch");
        graphs_[i].last_use = ++use_clock_;
        return true;
      }
      ++i;
    }
    return false;
  }
  void begin_recording(uint64_t key) override {
    if (!graphs_enabled()) return;
    if (capturing_) throw Error("cuda backend: begin_recording inside a recording");
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
    capturing_ = true;
    capture_key_ = key;
    capture_epoch_ = memory_epoch();
  }
  void end_recording() override {
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    if (e != cudaSuccess) {
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      check(e, "cudaStreamEndCapture");
    }
    cudaGraphExec_t exec = nullptr;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(e, "cudaGraphInstantiate");
    e = cudaGraphLaunch(exec, stream_);
    if (e != cudaSuccess) {
      cudaGraphExecDestroy(exec);
      check(e, "cudaGraphLaunch");
    }
    if (memory_epoch() != capture_epoch_) {
      cudaGraphExecDestroy(exec);  // scratch grew while recording: run once, do not keep
      return;
    }
    if (graphs_.size() >= kMaxGraphs) {
      auto lru = std::min_element(graphs_.begin(), graphs_.end(), [](const Recorded& a, const Recorded& b) {
        return a.last_use < b.last_use;
      });
      cudaGraphExecDestroy(lru->exec);
      graphs_.erase(lru);
    }
    graphs_.push_back({capture_key_, exec, capture_epoch_, ++use_clock_});
  }
  void discard_recording() override {
    if (!capturing_) return;
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(stream_, &graph);  // an invalidated capture reports an error: nothing to keep
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
  }

 private:
  struct Recorded {
    uint64_t key;
    cudaGraphExec_t exec;
    uint64_t epoch;
    uint64_t last_use;
  };
  struct Scratch {
    float* p = nullptr;
    size_t floats = 0;
  };

  // Whether the FP8 GEMMs take this group: more rows than the GEMV takes (gemv_max_rows), and every
  // target a shape they run (fp8_group's conditions, checked without launching).
  bool fp8_gemm_takes(const MatmulInput& in, const MatmulTarget* targets, int count) const {
    if (!use_wgmma_ || (in.x_up && reinterpret_cast<uintptr_t>(in.x_up) % 16 != 0)) return false;
    for (int i = 0; i < count; ++i)
      if (targets[i].w.format != targets[0].w.format || targets[i].w.scale_type != targets[0].w.scale_type ||
          !fp8_gemm_applies(targets[i].w, in.x, in.m, targets[i].y))
        return false;
    return true;
  }

  bool bf16_gemm_takes(const WeightView& w, const float* x, int64_t m, const float* y) const {
    return use_wgmma_ && m > gemv_max_rows(w.format) && bf16_gemm_applies(w, x, y);
  }
  // Whether a group's rows go to the tensor-core GEMMs rather than the grouped GEMV: the FP8 GEMMs
  // (above), or cuBLASLt's for BF16 weights, each target composed through matmul().
  bool tensor_cores_take(const MatmulInput& in, const MatmulTarget* targets, int count) const {
    if (fp8_gemm_takes(in, targets, count)) return true;
    for (int i = 0; i < count; ++i)
      if (!bf16_gemm_takes(targets[i].w, in.x, in.m, targets[i].y)) return false;
    return true;
  }

  // A prompt step's group of FP8 targets that share a format, scale type and k (q/k/v, gate/up) on
  // the wgmma GEMMs: x (or silu(x) * x_up, or rmsnorm(x)) quantized once for all of them,
  // accumulation into y done by the GEMM's epilogue. False, with nothing launched, where that does
  // not apply.
  bool fp8_group(const MatmulInput& in, const MatmulTarget* targets, int count) {
    if (!fp8_gemm_takes(in, targets, count) || (in.norm && reinterpret_cast<uintptr_t>(in.norm) % 16 != 0))
      return false;
    const WeightView& w0 = targets[0].w;
    Fp8GemmWorkspace need{0, 0};
    for (int i = 0; i < count; ++i) {
      const Fp8GemmWorkspace wi = fp8_gemm_workspace(targets[i].w, in.m);
      need.code_bytes = std::max(need.code_bytes, wi.code_bytes);
      need.scale_bytes = std::max(need.scale_bytes, wi.scale_bytes);
    }
    uint8_t* codes = reinterpret_cast<uint8_t*>(scratch(4, (need.code_bytes + 3) / 4));
    float* scales = scratch(5, (need.scale_bytes + 3) / 4);
    quantize_fp8_act(w0, in.x, in.x_up, in.norm, in.norm_eps, in.m, codes, scales, stream_);
    run_fp8_gemm(targets, count, codes, scales, in.m, in.accumulate, stream_);
    return true;
  }

  // Scratch buffer `i` with room for `floats` values. Growing retires the old buffer (freed at the
  // next synchronize(): enqueued or recorded work may still use it) and drops recorded steps.
  float* scratch(int i, size_t floats) {
    Scratch& sc = scratch_[i];
    if (sc.floats < floats) {
      const size_t n = std::max(floats, 2 * sc.floats);
      if (sc.p) retired_.push_back(sc.p);
      bump_memory_epoch();
      sc.p = nullptr;
      sc.floats = 0;
      sc.p = static_cast<float*>(alloc(n * sizeof(float)));
      sc.floats = n;
    }
    return sc.p;
  }

  // Scratch 6, for argmax and top_k: zeroed when it is made, since its counters must start at zero
  // (each call leaves them so).
  void* select_scratch(size_t bytes) {
    const bool grows = scratch_[6].floats * 4 < bytes;
    float* p = scratch(6, (bytes + 3) / 4);
    if (grows)
      check(cudaMemsetAsync(p, 0, scratch_[6].floats * 4, stream_), "cudaMemsetAsync (select scratch)");
    return p;
  }

  static CudaKvCache& as_cuda(KvCache& c) {
    auto* p = dynamic_cast<CudaKvCache*>(&c);
    if (!p) throw Error("cuda backend: KV cache was created by another backend");
    return *p;
  }
  static void validate(const WeightView& w, const char* op) {
    if (w.n <= 0 || w.k <= 0 || !w.data)
      throw Error(std::string("cuda backend: ") + op + " with an empty or null weight [" +
                  std::to_string(w.n) + ", " + std::to_string(w.k) + "]");
    if ((w.format == WeightFormat::fp8_block || w.format == WeightFormat::mxfp8) && !w.scales)
      throw Error(std::string("cuda backend: ") + op + " with an " + weight_format_name(w.format) +
                  " weight but no scales");
    if (w.format == WeightFormat::mxfp8 && w.scale_type != ScaleType::ue8m0)
      throw Error(std::string("cuda backend: ") + op + ": mxfp8 weights need UE8M0 scales (got f32)");
  }

  int device_ = 0;
  BackendInfo info_;
  cudaStream_t stream_ = nullptr;
  uint32_t* err_host_ = nullptr;
  uint32_t* err_dev_ = nullptr;
  uint8_t* staging_ = nullptr;
  size_t staging_pos_ = 0;
  bool use_wgmma_ = false;  // tensor-core GEMMs for m > gemv_max_rows (FP8 wgmma, bf16 through cuBLASLt)
  Bf16Gemm bf16_gemm_;
  bool capturing_ = false;
  bool fused_attention_ = true;
  bool ffn_overlap_ = true;
  uint64_t capture_key_ = 0, capture_epoch_ = 0, use_clock_ = 0;
  std::vector<Recorded> graphs_;
  Scratch scratch_[7];  // 0: the SwiGLU input, 1: a product before its accumulation, 2: split attention,
                        // 3: normalized rows (a fused rmsnorm the GEMV does not take), 4 and 5: the
                        // FP8 GEMM's activation codes and scales, 6: argmax and top_k (select_scratch)
  std::vector<void*> retired_;  // device memory freed at the next synchronize()
};

}  // namespace
}  // namespace cuda_impl

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<cuda_impl::CudaBackend>(device);
}

}  // namespace mx8::backend
