// FP8 block-scaled GEMM on Hopper (sm_90a): D[M,N] = A[M,K] x B[N,K]^T with E4M3 operands.
//
// Scaling (DeepSeek-V3 recipe): A has one scale per 1x128 tile along K, B one per 128x128 block;
// the tensor cores accumulate 128 of K at a time in FP32, and each partial sum is multiplied by
// scale_a[row] * scale_b[col block] and added to an FP32 accumulator ("promotion" every 128 of K).
//
// Layouts (all row-major, 16-byte aligned device pointers):
//   a        [M][K] E4M3 bytes                      b        [N][K] E4M3 bytes
//   scale_a  [K/128][scale_a_ld], MN-major ("transposed"), float32 or UE8M0 bytes;
//            scale_a_ld >= M and a multiple of 16 (TMA needs 16-byte row strides): see sa_ld().
//   scale_b  [ceil(N/128)][K/128] float32 or UE8M0 bytes (DeepSeek's weight_scale_inv layout)
//   d        [M][N] bf16 or float32
// Limits: M >= 1, N a multiple of 16, K a multiple of 128 (the promotion interval; a ragged last K
// block would need a separate partial tile path, and DeepSeek-V3's K values are all multiples).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace mx8::cuda {

enum class ScaleType : int { kF32 = 0, kUE8M0 = 1 };
enum class OutType : int { kBF16 = 0, kF32 = 1 };

inline int sa_ld(int m) {
  return (m + 15) / 16 * 16;
}

struct GemmFp8Args {
  const uint8_t* a = nullptr;
  const void* scale_a = nullptr;
  int scale_a_ld = 0;
  const uint8_t* b = nullptr;
  const void* scale_b = nullptr;
  ScaleType scale_type = ScaleType::kF32;  // both operands' scales
  void* d = nullptr;
  OutType out_type = OutType::kBF16;
  bool accumulate = false;  // d += A B^T instead of d = A B^T (f32 output only)
  int m = 0, n = 0, k = 0;
  // Launch as a programmatic dependent of the kernel before it on the stream (which should let
  // its dependents launch early): the kernel starts while that one finishes and requests its
  // first B tiles before waiting for it, so B must not be written by it (weights never are); A,
  // the scales and d are touched only after the wait.
  bool pdl = false;
};

// A tile shape and pipeline depth. block_m in {64, 128, 192, 256}; block_n one of the compiled widths.
// math_warpgroups: 64-row tiles take 1, or 2 for split-K; 192 rows take 3; the others 2.
// splits > 1: thread-block clusters of `splits` blocks share each tile, one K range each, and add
// their partial sums through distributed shared memory (compiled for 64x64 with two warpgroups and
// 128x128; splits 2 or 4). grid counts blocks: one cluster per tile.
struct GemmConfig {
  int block_m = 0, block_n = 0, stages = 0, math_warpgroups = 0, grid = 0, splits = 1;
  std::string str() const;
};

// The documented heuristic (docs/CUDA.md): for each compiled tile shape, estimate the time of the
// persistent schedule on `num_sms` SMs from a roofline per tile (bytes through L2 and tensor-core
// work, with an efficiency per tile shape) and the DRAM floor of the whole product; pick the least.
GemmConfig gemm_fp8_pick_config(int m, int n, int k, int num_sms);
// True when (block_m, block_n) is a compiled shape (with the cluster K split, when splits > 1).
bool gemm_fp8_has_config(int block_m, int block_n, int splits = 1);

// Validates arguments (throws mx8::Error naming the problem), then launches on `stream`.
// `forced` (optional) overrides the heuristic's tile shape; its stages/grid are filled in.
void gemm_fp8_1x128(const GemmFp8Args& args, cudaStream_t stream, const GemmConfig* forced = nullptr);

// Up to three products that share A (q/k/v, gate/up) as one launch: the fields of `shared` but b,
// scale_b, d and n (A, its scales, M, K, the scale and output types, accumulate, pdl) with each
// target's B, B scales, d and N. Tiles are numbered target by target and picked for the summed N,
// so the small products fill the SMs together instead of one launch and one drain each. Every
// product equals, bit for bit, the one gemm_fp8_1x128 makes with the same tile.
constexpr int kMaxGemmGroup = 3;
struct GemmFp8Target {
  const uint8_t* b = nullptr;
  const void* scale_b = nullptr;
  void* d = nullptr;
  int n = 0;
};
void gemm_fp8_1x128_group(const GemmFp8Args& shared, const GemmFp8Target* targets, int count,
                          cudaStream_t stream, const GemmConfig* forced = nullptr);
// True when a launch of `count` products (of M rows, the targets' N) with tile `c` runs its tiles in
// pairs on 2-block clusters that share their A tile through TMA multicast: 256x128 tiles, M >= 256,
// an even number of 128-column blocks in every product (MX8_GEMM_NO_PAIR=1 turns it off).
bool gemm_fp8_pairs_share_a(const GemmConfig& c, int m, const GemmFp8Target* targets, int count);

// MXFP8: both operands carry one UE8M0 scale per 1x32 along K (scale_a [K/32][scale_a_ld],
// scale_b [K/32][scale_b_ld], MN-major bytes, ld multiple of 16); promotion every 32 of K.
struct GemmMxfp8Args {
  const uint8_t* a = nullptr;
  const uint8_t* scale_a = nullptr;
  int scale_a_ld = 0;
  const uint8_t* b = nullptr;
  const uint8_t* scale_b = nullptr;
  int scale_b_ld = 0;
  void* d = nullptr;
  OutType out_type = OutType::kBF16;
  bool accumulate = false;  // d += A B^T (f32 output only)
  int m = 0, n = 0, k = 0;
  bool pdl = false;  // as GemmFp8Args::pdl (B's codes are requested before the wait, its scales after)
};
void gemm_mxfp8(const GemmMxfp8Args& args, cudaStream_t stream, const GemmConfig* forced = nullptr);
// The MXFP8 tile height gemm_mxfp8 takes on `num_sms` SMs: 64 (K split over two warpgroups) or 128.
int gemm_mxfp8_pick_block_m(int m, int n, int num_sms);

}  // namespace mx8::cuda
