// cuBLASLt comparators for the benchmarks (not used by the runtime): the vendor's block-scaled FP8
// GEMM (1x128 activation scales x 128x128 weight scales, the DeepSeek recipe, CUDA >= 12.9) and the
// plain BF16 GEMM, both computing D[M,N] = A[M,K] x B[N,K]^T with row-major operands.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace mx8::cuda {

class CublasLtBaseline {
 public:
  explicit CublasLtBaseline(size_t workspace_bytes = 64u << 20);
  ~CublasLtBaseline();
  CublasLtBaseline(const CublasLtBaseline&) = delete;
  CublasLtBaseline& operator=(const CublasLtBaseline&) = delete;

  // scale_a: float [K/128][M] (MN-major, ld = M; cuBLASLt has no ld parameter for it);
  // scale_b: float [ceil(N/128)][K/128]. d: bf16 [M][N]. Same buffers as gemm_fp8_1x128 with
  // float scales when M is a multiple of 16. Throws mx8::Error when cuBLASLt has no algorithm.
  void gemm_fp8_blockscaled(const uint8_t* a, const float* scale_a, const uint8_t* b, const float* scale_b,
                            void* d, int m, int n, int k, cudaStream_t stream);
  // bf16 x bf16 -> bf16, FP32 accumulation.
  void gemm_bf16(const void* a, const void* b, void* d, int m, int n, int k, cudaStream_t stream);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mx8::cuda
