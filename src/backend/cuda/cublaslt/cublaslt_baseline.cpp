#include "backend/cuda/cublaslt/cublaslt_baseline.h"

#include <cublasLt.h>

#include <map>
#include <string>
#include <tuple>

#include "backend/cuda/cuda_check.h"

namespace mx8::cuda {
namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw mx8::Error(std::string("cuBLASLt: ") + what + " failed with status " +
                     std::to_string(static_cast<int>(s)));
}

}  // namespace

// One plan per (kind, m, n, k): descriptors and the heuristic's first algorithm, built once so
// that timed runs measure only cublasLtMatmul.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

struct CublasLtBaseline::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::map<std::tuple<int, int, int, int>, Plan> plans;

  ~Impl() {
    for (auto& [key, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.la);
      cublasLtMatrixLayoutDestroy(p.lb);
      cublasLtMatrixLayoutDestroy(p.lc);
      cublasLtMatmulDescDestroy(p.desc);
    }
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  // Row-major D[M,N] = A[M,K] B[N,K]^T is column-major D^T[N,M] = B^T... i.e. cuBLASLt's
  // "TN" product with its A = our B (K x N column-major, transposed) and its B = our A.
  Plan& plan(bool fp8, int m, int n, int k, const void* scale_w = nullptr, const void* scale_act = nullptr) {
    auto key = std::make_tuple(fp8 ? 1 : 0, m, n, k);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan p;
    check_lt(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "TRANSB");
    if (fp8) {
      const int32_t mode_a = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;  // our B (weights)
      const int32_t mode_b = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;      // our A (activations)
      check_lt(
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode_a, sizeof mode_a),
          "A_SCALE_MODE");
      check_lt(
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode_b, sizeof mode_b),
          "B_SCALE_MODE");
    }
    const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    check_lt(cublasLtMatrixLayoutCreate(&p.la, in, k, n, k), "layout A");
    check_lt(cublasLtMatrixLayoutCreate(&p.lb, in, k, m, k), "layout B");
    check_lt(cublasLtMatrixLayoutCreate(&p.lc, CUDA_R_16BF, n, m, n), "layout C");
    if (fp8) {
      // The heuristic rejects block-scaled FP8 (status 7) unless the scale pointers are set.
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_w,
                                              sizeof scale_w),
               "A_SCALE_POINTER");
      check_lt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_act,
                                              sizeof scale_act),
               "B_SCALE_POINTER");
    }
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &workspace_bytes, sizeof workspace_bytes),
             "workspace pref");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t hs =
        cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.la, p.lb, p.lc, p.lc, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (hs != CUBLAS_STATUS_SUCCESS || found == 0)
      throw mx8::Error(std::string("cuBLASLt has no ") + (fp8 ? "block-scaled FP8" : "BF16") +
                       " algorithm for " + std::to_string(m) + "x" + std::to_string(n) + "x" +
                       std::to_string(k) + " (status " + std::to_string(static_cast<int>(hs)) + ")");
    p.algo = result.algo;
    return plans.emplace(key, p).first->second;
  }
};

CublasLtBaseline::CublasLtBaseline(size_t workspace_bytes) : impl_(std::make_unique<Impl>()) {
  check_lt(cublasLtCreate(&impl_->handle), "Create");
  impl_->workspace_bytes = workspace_bytes;
  MX8_CUDA_CHECK(cudaMalloc(&impl_->workspace, workspace_bytes));
}

CublasLtBaseline::~CublasLtBaseline() = default;

void CublasLtBaseline::gemm_fp8_blockscaled(const uint8_t* a, const float* scale_a, const uint8_t* b,
                                            const float* scale_b, void* d, int m, int n, int k,
                                            cudaStream_t stream) {
  Plan& p = impl_->plan(true, m, n, k, scale_b, scale_a);
  check_lt(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_b, sizeof scale_b),
      "A_SCALE_POINTER");
  check_lt(
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_a, sizeof scale_a),
      "B_SCALE_POINTER");
  const float alpha = 1.f, beta = 0.f;
  check_lt(cublasLtMatmul(impl_->handle, p.desc, &alpha, b, p.la, a, p.lb, &beta, d, p.lc, d, p.lc, &p.algo,
                          impl_->workspace, impl_->workspace_bytes, stream),
           "Matmul (block-scaled FP8)");
}

void CublasLtBaseline::gemm_bf16(const void* a, const void* b, void* d, int m, int n, int k,
                                 cudaStream_t stream) {
  Plan& p = impl_->plan(false, m, n, k);
  const float alpha = 1.f, beta = 0.f;
  check_lt(cublasLtMatmul(impl_->handle, p.desc, &alpha, b, p.la, a, p.lb, &beta, d, p.lc, d, p.lc, &p.algo,
                          impl_->workspace, impl_->workspace_bytes, stream),
           "Matmul (BF16)");
}

}  // namespace mx8::cuda
