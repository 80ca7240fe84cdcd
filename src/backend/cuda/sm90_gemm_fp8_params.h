// Parameters shared by the GEMM kernel (sm90_gemm_fp8.cuh) and its host launcher, and the
// declaration of the per-shape launch functions, which are instantiated in separate translation
// units (sm90_gemm_fp8_inst_*.cu) so that the heavy kernel instantiations compile in parallel.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mx8::cuda::detail {

struct GemmParams {
  const void* scale_b;  // 1x128 path: [ceil(N/128)][K/128]
  void* d;
  int m, n, k;
  int num_m_blocks, num_n_blocks;
  int stages;
  int scale_ue8m0;  // 1x128 path: scales are UE8M0 bytes rather than float32
  int out_f32;
};

constexpr int kBlockK = 128;
constexpr int kSmemLimit = 232448;  // sm_90 opt-in maximum per block

__host__ __device__ constexpr int stage_bytes(int bm, int bn, bool mx) {
  return bm * kBlockK + bn * kBlockK + bm * 4 + (mx ? bn * 4 : 0);
}
// Dynamic shared memory for `stages` slots, the barriers, and 1024 bytes of alignment slack.
__host__ __device__ constexpr int smem_bytes(int bm, int bn, bool mx, int stages) {
  return 1024 + stages * stage_bytes(bm, bn, mx) + stages * 16;
}

template <int BM, int BN, int W, bool kMX>
void launch_gemm(const CUtensorMap& ta, const CUtensorMap& tb, const CUtensorMap& tsa, const CUtensorMap& tsb,
                 const GemmParams& p, int grid, cudaStream_t stream);

}  // namespace mx8::cuda::detail
