// Element-wise and row-wise ops of the CUDA backend: embedding, rmsnorm, rope, add, silu_mul and
// softmax (argmax and top_k: backend_cuda_select.cu). Each follows the CPU backend's arithmetic
// (backend_cpu.cpp) except where a parallel reduction must reorder a sum (rmsnorm's sum of squares, softmax's
// sum), which moves results by a few ulps; expf/sincosf are CUDA's full-precision functions (never the fast
// intrinsics).
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/backend_cuda_weight.cuh"
#include "backend/cuda/block_reduce.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kThreads = 256;

int grid_for(int64_t n, int threads) {
  int64_t g = (n + threads - 1) / threads;
  return int(g < 65535 * 8 ? (g < 1 ? 1 : g) : 65535 * 8);  // grid-stride loops cover the rest
}

__global__ void embedding_kernel(WeightView table, const int32_t* ids, int64_t n, float* out, uint32_t* err) {
  pdl_trigger();
  pdl_wait();
  const int64_t t = blockIdx.x;
  if (t >= n) return;
  const int32_t id = ids[t];
  if (id < 0 || id >= table.n) {
    if (threadIdx.x == 0 && blockIdx.y == 0) atomicOr(err, kErrEmbeddingId);
    return;
  }
  // One value per thread, the row's columns over blockIdx.y: a loop over the row was one dependent
  // load after another (the stores may alias the table as far as the compiler knows): H200, one
  // decode row of 4096 took 9.5 us in one block.
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c < table.k) out[t * table.k + c] = weight_at(table, id, c);
}

__global__ void rmsnorm_kernel(const float* x, const float* w, int64_t dim, float eps, float* y) {
  pdl_trigger();
  pdl_wait();
  const float* xr = x + int64_t(blockIdx.x) * dim;
  float* yr = y + int64_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
  ss = block_reduce<false>(ss);
  // Same operation order as the CPU backend (and llama2.c): mean, + eps, 1/sqrt, w * (s * x).
  ss /= float(dim);
  ss += eps;
  ss = 1.0f / sqrtf(ss);
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) yr[j] = w[j] * (ss * xr[j]);
}

// rmsnorm for dim % 4 == 0 and 16-byte aligned rows: float4 loads, up to 1024 threads per row, so a
// decode row of 4096 is one float4 per thread (the scalar kernel's loop is a chain of load latencies).
__global__ void rmsnorm_vec_kernel(const float* x, const float* w, int64_t dim, float eps, float* y) {
  pdl_trigger();
  pdl_wait();
  const float4* xr = reinterpret_cast<const float4*>(x + int64_t(blockIdx.x) * dim);
  float4* yr = reinterpret_cast<float4*>(y + int64_t(blockIdx.x) * dim);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const int64_t n4 = dim / 4;
  const float ss = rms_scale_vec(xr, dim, eps);
  for (int64_t j = threadIdx.x; j < n4; j += blockDim.x) {
    const float4 v = xr[j], g = w4[j];
    yr[j] = make_float4(g.x * (ss * v.x), g.y * (ss * v.y), g.z * (ss * v.z), g.w * (ss * v.w));
  }
}

__global__ void rope_kernel(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads,
                            RopeArgs r) {
  pdl_trigger();
  pdl_wait();
  const int half = r.rot_dim / 2;
  const int64_t total = n_tokens * n_heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t th = i / half;  // token * n_heads + head
    rope_pair(x + th * r.head_dim, int(i % half), positions[th / n_heads], r);
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += x[i];
}

__global__ void silu_mul_kernel(const float* gate, const float* up, float* out, int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float v = gate[i];
    v *= (1.0f / (1.0f + expf(-v)));
    out[i] = v * up[i];
  }
}

__global__ void softmax_kernel(float* x, int64_t cols) {
  pdl_trigger();
  pdl_wait();
  float* v = x + int64_t(blockIdx.x) * cols;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, v[j]);
  mx = block_reduce<true>(mx);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    float e = expf(v[j] - mx);
    v[j] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) v[j] /= sum;
}

// Threads per row for the row-wise kernels: a warp for short rows, 256 for long ones.
int row_threads(int64_t cols) {
  return cols <= 256 ? 32 : cols <= 1024 ? 128 : 256;
}

void check_rows(int64_t rows, const char* op) {
  if (rows > 0x7fffffff) throw Error(std::string("cuda backend: ") + op + " with too many rows");
}

}  // namespace

void launch_embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out, uint32_t* err,
                      cudaStream_t s) {
  if (n <= 0) return;
  check_rows(n, "embedding");
  const int threads = table.k >= 256 ? 256 : 64;
  const int64_t chunks = (table.k + threads - 1) / threads;
  if (chunks > 65535) throw Error("cuda backend: embedding: rows of " + std::to_string(table.k) + " values");
  launch("embedding_kernel", embedding_kernel, dim3(unsigned(n), unsigned(chunks)), dim3(threads), s, table,
         ids, n, out, err);
  check_launch("embedding");
}

void launch_rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y,
                    cudaStream_t s) {
  if (rows <= 0 || dim <= 0) return;
  check_rows(rows, "rmsnorm");
  const bool vec = dim % 4 == 0 && (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) |
                                    reinterpret_cast<uintptr_t>(y)) %
                                           16 ==
                                       0;
  if (vec) {
    const int64_t n4 = dim / 4;
    const int threads = n4 >= 1024 ? 1024 : int((n4 + 31) / 32 * 32);
    launch("rmsnorm_vec_kernel", rmsnorm_vec_kernel, dim3(unsigned(rows)), dim3(threads), s, x, w, dim, eps,
           y);
  } else {
    launch("rmsnorm_kernel", rmsnorm_kernel, dim3(unsigned(rows)), dim3(row_threads(dim)), s, x, w, dim, eps,
           y);
  }
  check_launch("rmsnorm");
}

void launch_rope(float* x, const int32_t* positions, int64_t n_tokens, int64_t n_heads, const RopeArgs& r,
                 cudaStream_t s) {
  if (r.rot_dim <= 0 || r.rot_dim > r.head_dim || r.rot_dim % 2 || !r.inv_freq)
    throw Error("cuda backend: rope with rot_dim " + std::to_string(r.rot_dim) + " and head_dim " +
                std::to_string(r.head_dim) + " is not supported");
  const int64_t total = n_tokens * n_heads * (r.rot_dim / 2);
  if (total <= 0) return;
  launch("rope_kernel", rope_kernel, dim3(grid_for(total, kThreads)), dim3(kThreads), s, x, positions,
         n_tokens, n_heads, r);
  check_launch("rope");
}

void launch_add(float* y, const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  launch("add_kernel", add_kernel, dim3(grid_for(n, kThreads)), dim3(kThreads), s, y, x, n);
  check_launch("add");
}

void launch_silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  launch("silu_mul_kernel", silu_mul_kernel, dim3(grid_for(n, kThreads)), dim3(kThreads), s, gate, up, out,
         n);
  check_launch("silu_mul");
}

void launch_softmax(float* x, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  check_rows(rows, "softmax");
  launch("softmax_kernel", softmax_kernel, dim3(unsigned(rows)), dim3(row_threads(cols)), s, x, cols);
  check_launch("softmax");
}

}  // namespace mx8::backend::cuda_impl
