// The paged KV cache on the GPU: storage, and kv_write (f32 / bf16 / fp8 E4M3 with one UE8M0 `ceil`
// scale per (token, head, 128 values)), alone or after rope on q and k (rope_kv_write).
//
// Page layout is the CPU backend's (backend_cpu_attention.cpp), byte for byte, head-major: elements
// [kv head][slot][head_dim] in the cache's format, then for fp8 the scales [kv head][slot][nb]
// (the CPU backend moved to head-major pages in f296e73; the test compares the bytes).
// kv_write converts with the format layer's codecs (write_head, attention_decode.cuh), so the bytes
// equal the CPU backend's.
#include <cuda_runtime.h>

#include <string>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/attention_decode.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {

CudaKvCache::CudaKvCache(const KvCacheDesc& d, cudaStream_t s) : KvCache(d) {
  page_bytes_ = d.page_bytes();
  const size_t bytes = d.total_bytes();
  cudaError_t e = cudaMalloc(&base_, bytes);
  if (e != cudaSuccess)
    throw Error("cuda backend: cannot allocate " + std::to_string(bytes >> 20) + " MiB for the KV cache (" +
                cudaGetErrorString(e) + ")");
  // Zeroed so that a cache is deterministic even where nothing was written yet.
  check(cudaMemsetAsync(base_, 0, bytes, s), "KV cache memset");
}

CudaKvCache::~CudaKvCache() {
  bump_memory_epoch();  // recorded steps that wrote or read these pages must not be replayed
  if (base_) cudaFree(base_);
}

namespace {

// ---- kv_write: one warp per (token, kv head, K or V) --------------------------------------------

template <KvFormat F>
__global__ void kv_write_kernel(uint8_t* kpool, uint8_t* vpool, KvGeom g, const float* k, const float* v,
                                const int32_t* slots, int64_t n_tokens, uint32_t* err) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (gw >= n_tokens * g.n_kv * 2) return;
  const int which = int(gw & 1);  // 0: K, 1: V
  const int64_t th = gw >> 1;
  const int64_t t = th / g.n_kv;
  write_head<F>(which ? vpool : kpool, g, (which ? v : k) + th * g.hd, slots[t], int(th % g.n_kv), lane, err);
}

// rope on q and k, then kv_write, in one launch: one warp per (token, row), rows = the token's query
// heads, then its kv heads (rotated in place, then stored), then its V heads (stored). The rotation
// is rope_kernel's (rope_pair), so the results are bit-identical to rope + rope + kv_write.
template <KvFormat F>
__global__ void rope_kv_write_kernel(uint8_t* kpool, uint8_t* vpool, KvGeom g, float* q, float* k,
                                     const float* v, const int32_t* positions, const int32_t* slots,
                                     int64_t n_tokens, int n_heads, RopeArgs r, uint32_t* err) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int rows = n_heads + 2 * g.n_kv;
  if (gw >= n_tokens * rows) return;
  const int64_t t = gw / rows;
  const int row = int(gw % rows);
  if (row < n_heads + g.n_kv) {
    float* x =
        row < n_heads ? q + (t * n_heads + row) * r.head_dim : k + (t * g.n_kv + row - n_heads) * r.head_dim;
    const int32_t pos = positions[t];
    for (int j = lane; j < r.rot_dim / 2; j += 32) rope_pair(x, j, pos, r);
    if (row < n_heads) return;
    __syncwarp();  // the warp's rotated k is read back by other lanes below
    write_head<F>(kpool, g, x, slots[t], row - n_heads, lane, err);
    return;
  }
  const int h = row - n_heads - g.n_kv;
  write_head<F>(vpool, g, v + (t * g.n_kv + h) * g.hd, slots[t], h, lane, err);
}

}  // namespace

void launch_kv_write(CudaKvCache& c, int layer, const float* k, const float* v, const int32_t* slots,
                     int64_t n_tokens, uint32_t* err, cudaStream_t s) {
  const KvCacheDesc& d = c.desc();
  if (layer < 0 || layer >= d.n_layers)
    throw Error("cuda backend: kv_write to layer " + std::to_string(layer) + " of " +
                std::to_string(d.n_layers));
  if (n_tokens <= 0) return;
  const KvGeom g = geom_of(c);
  const int64_t warps = n_tokens * g.n_kv * 2;
  const int threads = 128;
  const unsigned blocks = unsigned((warps * 32 + threads - 1) / threads);
  uint8_t* kp = c.pool(layer, 0);
  uint8_t* vp = c.pool(layer, 1);
  switch (d.format) {
    case KvFormat::f32:
      launch("kv_write_kernel", kv_write_kernel<KvFormat::f32>, dim3(blocks), dim3(threads), s, kp, vp, g, k,
             v, slots, n_tokens, err);
      break;
    case KvFormat::bf16:
      launch("kv_write_kernel", kv_write_kernel<KvFormat::bf16>, dim3(blocks), dim3(threads), s, kp, vp, g, k,
             v, slots, n_tokens, err);
      break;
    case KvFormat::fp8:
      launch("kv_write_kernel", kv_write_kernel<KvFormat::fp8>, dim3(blocks), dim3(threads), s, kp, vp, g, k,
             v, slots, n_tokens, err);
      break;
  }
  check_launch("kv_write");
}

void launch_rope_kv_write(CudaKvCache& c, int layer, float* q, float* k, const float* v,
                          const int32_t* positions, const int32_t* slots, int64_t n_tokens, int64_t n_heads,
                          const RopeArgs& r, uint32_t* err, cudaStream_t s) {
  const KvCacheDesc& d = c.desc();
  if (layer < 0 || layer >= d.n_layers)
    throw Error("cuda backend: rope_kv_write to layer " + std::to_string(layer) + " of " +
                std::to_string(d.n_layers));
  // What rope refuses too (launch_rope), so that the fused op and the composed one (the backend's
  // default) accept the same arguments.
  if (r.head_dim != d.head_dim || r.rot_dim <= 0 || r.rot_dim > r.head_dim || r.rot_dim % 2 != 0 ||
      !r.inv_freq)
    throw Error("cuda backend: rope_kv_write with head_dim " + std::to_string(r.head_dim) + " / rot_dim " +
                std::to_string(r.rot_dim) + (r.inv_freq ? "" : " and no inverse frequencies") +
                " for a cache of head_dim " + std::to_string(d.head_dim));
  if (n_tokens <= 0) return;
  const KvGeom g = geom_of(c);
  const int64_t warps = n_tokens * (n_heads + 2 * g.n_kv);
  const int threads = 128;
  const unsigned blocks = unsigned((warps * 32 + threads - 1) / threads);
  uint8_t* kp = c.pool(layer, 0);
  uint8_t* vp = c.pool(layer, 1);
  const int nh = int(n_heads);
  switch (d.format) {
    case KvFormat::f32:
      launch("rope_kv_write_kernel", rope_kv_write_kernel<KvFormat::f32>, dim3(blocks), dim3(threads), s, kp,
             vp, g, q, k, v, positions, slots, n_tokens, nh, r, err);
      break;
    case KvFormat::bf16:
      launch("rope_kv_write_kernel", rope_kv_write_kernel<KvFormat::bf16>, dim3(blocks), dim3(threads), s, kp,
             vp, g, q, k, v, positions, slots, n_tokens, nh, r, err);
      break;
    case KvFormat::fp8:
      launch("rope_kv_write_kernel", rope_kv_write_kernel<KvFormat::fp8>, dim3(blocks), dim3(threads), s, kp,
             vp, g, q, k, v, positions, slots, n_tokens, nh, r, err);
      break;
  }
  check_launch("rope_kv_write");
}

}  // namespace mx8::backend::cuda_impl
