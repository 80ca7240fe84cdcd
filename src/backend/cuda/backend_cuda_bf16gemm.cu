// matmul for m > 16 rows with bf16 weights on the tensor cores, through cuBLASLt, without rounding
// the activations: x (f32) is split into three bf16 planes, x = hi + mid + lo to ~2^-24 relative
// (hi and mid are x and its remainder truncated to bf16's 8 significant bits, lo the last remainder
// rounded), and y = hi W^T + mid W^T + lo W^T by three bf16 GEMMs with f32 output and f32
// accumulation (beta = 1 for the second and third). bf16 x bf16 products are exact in f32, so the
// result is the f32 product up to summation order, like the SIMT GEMM it replaces at ~10x its speed
// (docs/CUDA_BACKEND.md). A non-finite x keeps its hi part and zero remainders, so Inf and NaN reach
// y as in the f32 product. Up to kStackedRows rows (batched decode steps) the three planes are one
// GEMM of 3m rows, so W is read once instead of three times, and a small kernel adds the three
// products in the same order (hi + mid, then + lo): weight streaming is what such a step costs.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "backend/cuda/backend_cuda.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

__device__ __forceinline__ uint32_t truncate_bf16(uint32_t bits) {
  return bits & 0xffff0000u;
}

// planes [3][n] bf16 from x[n] (n = m k): hi, mid, lo.
__global__ void split3_bf16_kernel(const float* x, int64_t n, uint16_t* planes) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    uint16_t h, md = 0, lo = 0;
    if (!isfinite(v)) {
      h = uint16_t(__float_as_uint(v) >> 16);  // Inf keeps its bits; NaN stays NaN (quiet bit is high)
    } else {
      const uint32_t hb = truncate_bf16(__float_as_uint(v));
      const float r1 = v - __uint_as_float(hb);  // exact: the bits truncated away
      const uint32_t mb = truncate_bf16(__float_as_uint(r1));
      const float r2 = r1 - __uint_as_float(mb);  // exact
      h = uint16_t(hb >> 16);
      md = uint16_t(mb >> 16);
      // Round to nearest even: r2 carries at most 16 bits, so this leaves ~2^-24 of x.
      const uint32_t b = __float_as_uint(r2);
      lo = uint16_t((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    }
    planes[i] = h;
    planes[n + i] = md;
    planes[2 * n + i] = lo;
  }
}

// y[i] = (p[i] + p[n + i]) + p[2n + i] (+ bias), n = m * cols: the three planes' products summed as
// the three-GEMM sequence sums them (beta = 1 adds the previous y).
__global__ void sum3_kernel(const float* p, int64_t n, int64_t cols, const float* bias, float* y) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v = (p[i] + p[n + i]) + p[2 * n + i];
    if (bias) v += bias[i % cols];
    y[i] = v;
  }
}

constexpr int64_t kStackedRows = 16;

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuda backend: cuBLASLt ") + what + " failed with status " +
                std::to_string(static_cast<int>(s)));
}

}  // namespace

// One plan per shape: descriptors and the heuristic's algorithm (or none), built on first use.
struct Bf16Gemm::Impl {
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t lw = nullptr, lx = nullptr, ly = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
  };
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Plan> plans;

  ~Impl() {
    for (auto& [key, p] : plans) {
      if (p.lw) cublasLtMatrixLayoutDestroy(p.lw);
      if (p.lx) cublasLtMatrixLayoutDestroy(p.lx);
      if (p.ly) cublasLtMatrixLayoutDestroy(p.ly);
      if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    }
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  // Row-major y[m][n] = x[m][k] W[n][k]^T is column-major y^T[n][m] = W^T... : cuBLASLt's "TN" product
  // with its A = W (k x n column-major, transposed) and its B = x (k x m column-major).
  Plan& plan(int64_t m, int64_t n, int64_t k) {
    const auto key = std::make_tuple(m, n, k);
    if (auto it = plans.find(key); it != plans.end()) return it->second;
    if (!handle) {
      check_lt(cublasLtCreate(&handle), "create");
      check(cudaMalloc(&workspace, workspace_bytes), "cuBLASLt workspace");
    }
    Plan& p = plans[key];
    check_lt(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "TRANSB");
    check_lt(cublasLtMatrixLayoutCreate(&p.lw, CUDA_R_16BF, uint64_t(k), uint64_t(n), k), "layout W");
    check_lt(cublasLtMatrixLayoutCreate(&p.lx, CUDA_R_16BF, uint64_t(k), uint64_t(m), k), "layout x");
    check_lt(cublasLtMatrixLayoutCreate(&p.ly, CUDA_R_32F, uint64_t(n), uint64_t(m), n), "layout y");
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &workspace_bytes, sizeof workspace_bytes),
             "workspace preference");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.lw, p.lx, p.ly, p.ly, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    p.ok = hs == CUBLAS_STATUS_SUCCESS && found > 0;  // else the SIMT GEMM takes this shape
    if (p.ok) p.algo = result.algo;
    return p;
  }
};

bool bf16_gemm_applies(const WeightView& w, const float* x, const float* y) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // 16-byte rows for cuBLASLt's vectorized algorithms: k bf16 values, n f32 values.
  return w.format == WeightFormat::bf16 && w.k % 8 == 0 && w.n % 4 == 0 && aligned(w.data) && aligned(x) &&
         aligned(y);
}

Bf16Gemm::Bf16Gemm() : impl_(std::make_unique<Impl>()) {}
Bf16Gemm::~Bf16Gemm() = default;

size_t Bf16Gemm::scratch_bytes(int64_t m, const WeightView& w) {
  const size_t planes = (3 * size_t(m) * size_t(w.k) * 2 + 15) / 16 * 16;
  return planes + (m <= kStackedRows ? 3 * size_t(m) * size_t(w.n) * 4 : 0);
}

bool Bf16Gemm::run(const WeightView& w, const float* x, int64_t m, float* y, const float* bias,
                   uint16_t* planes, cudaStream_t s) {
  const bool stacked = m <= kStackedRows;
  Impl::Plan& p = impl_->plan(stacked ? 3 * m : m, w.n, w.k);
  if (!p.ok) return false;
  const int64_t n = m * w.k;
  const unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 4096));
  launch("split3_bf16_kernel", split3_bf16_kernel, dim3(blocks), dim3(256), s, x, n, planes);
  const float one = 1.0f, zero = 0.0f;
  if (stacked) {
    float* products =
        reinterpret_cast<float*>(reinterpret_cast<uint8_t*>(planes) + (3 * n * 2 + 15) / 16 * 16);
    check_lt(cublasLtMatmul(impl_->handle, p.desc, &one, w.data, p.lw, planes, p.lx, &zero, products, p.ly,
                            products, p.ly, &p.algo, impl_->workspace, impl_->workspace_bytes, s),
             "Matmul (stacked bf16 planes)");
    const int64_t outs = m * w.n;
    launch("sum3_kernel", sum3_kernel, dim3(unsigned(std::min<int64_t>((outs + 255) / 256, 4096))), dim3(256),
           s, products, outs, w.n, bias, y);
    return true;
  }
  for (int i = 0; i < 3; ++i)
    check_lt(cublasLtMatmul(impl_->handle, p.desc, &one, w.data, p.lw, planes + i * n, p.lx, i ? &one : &zero,
                            y, p.ly, y, p.ly, &p.algo, impl_->workspace, impl_->workspace_bytes, s),
             "Matmul (bf16 planes)");
  if (bias) launch_add_bias(y, bias, m, w.n, s);
  return true;
}

}  // namespace mx8::backend::cuda_impl
