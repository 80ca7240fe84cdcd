// Element-wise and row-wise ops of the CUDA backend: embedding, rmsnorm, rope, add, silu_mul, softmax
// and argmax. Each follows the CPU backend's arithmetic (backend_cpu.cpp) except where a parallel
// reduction must reorder a sum (rmsnorm's sum of squares, softmax's sum), which moves results by a
// few ulps; expf/sincosf are CUDA's full-precision functions (never the fast intrinsics).
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

namespace {

// A candidate of argmax_kernel: a value and its index; a NaN value is no candidate.
struct Best {
  float v;
  int32_t i;
};
// Whether a is the better of two candidates: the larger value, the lower index among equal ones.
__device__ __forceinline__ bool better(Best a, Best b) {
  if (isnan(a.v)) return false;
  return isnan(b.v) || a.v > b.v || (a.v == b.v && a.i < b.i);
}
// The best of the warp's 32 candidates, on every lane.
__device__ __forceinline__ Best warp_best(Best b) {
  for (int o = 16; o > 0; o >>= 1) {
    const Best other{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)};
    if (better(other, b)) b = other;
  }
  return b;
}

// One block per row: every thread keeps the best of its strided values, then the warps and the block
// combine theirs. The combination is exact (a maximum, ties to the lower index), so the result is the
// host rule's whatever the order.
__global__ void argmax_kernel(const float* x, int64_t cols, int32_t* out) {
  pdl_trigger();
  pdl_wait();
  const float* row = x + int64_t(blockIdx.x) * cols;
  Best best{NAN, 0};
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const Best c{row[j], int32_t(j)};
    if (better(c, best)) best = c;
  }
  best = warp_best(best);
  __shared__ Best part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = best;
  __syncthreads();
  if (warp == 0) {
    best = warp_best(lane < int(blockDim.x >> 5) ? part[lane] : Best{NAN, 0});
    if (lane == 0) out[blockIdx.x] = isnan(best.v) ? 0 : best.i;
  }
}

// Sortable bits of a candidate's value: a larger value has larger bits; -0 takes +0's (the sampler
// orders them as equal, by index).
__device__ __forceinline__ uint32_t order_bits(float v) {
  const uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The exclusive prefix sum of v over the block (blockDim.x == 1024).
__device__ int block_exclusive_scan(int v) {
  __shared__ int warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += n;
  }
  if (lane == 31) warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    int w = warp_sums[lane], wi = w;
    for (int o = 1; o < 32; o <<= 1) {
      const int n = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += n;
    }
    warp_sums[lane] = wi - w;  // exclusive, per warp
  }
  __syncthreads();
  const int r = warp_sums[warp] + incl - v;
  __syncthreads();  // warp_sums may be reused
  return r;
}

// The float whose order_bits are b.
__device__ __forceinline__ float from_order_bits(uint32_t b) {
  return __uint_as_float((b & 0x80000000u) ? (b & 0x7fffffffu) : ~b);
}

// hist[bin] += 1 for every lane with `on`, one shared atomic per distinct bin of the warp (a row's logits
// share a few exponents, so in the first digit most lanes collide). Every lane of the warp calls it.
__device__ __forceinline__ void warp_hist_add(int* hist, uint32_t bin, bool on) {
  const uint32_t active = __ballot_sync(0xffffffffu, on);
  if (!on) return;
  const uint32_t same = __match_any_sync(active, bin);
  if (int(threadIdx.x & 31) == __ffs(int(same)) - 1) atomicAdd(&hist[bin], __popc(same));
}

// One block of 1024 threads per row.
// 1. A radix select over the order bits of x (four 8-bit digits, a histogram each; no division) finds
//    x_k, the k-th largest x. The division by t > 0 is monotone, so q_k = x_k / t is the k-th largest
//    quotient: fewer than k quotients are above it, and all of those have x above x_k.
// 2. One pass takes the quotients above q_k (G) and counts those equal to it (E: x_k itself, and x
//    within rounding of it), keeping the first k of E as they come.
// 3. Where E has more members than the k - |G| slots left, a pass over contiguous ranges of the row with
//    a prefix sum takes the members of lowest index instead.
// 4. A rank sort puts the k in the sampler's order (quotient, then index).
// Every decision is on exact values and indices, so the result does not depend on thread timing.
__global__ void top_k_kernel(const float* x, int64_t cols, int k, const float* temperature, float* values,
                             int32_t* ids) {
  pdl_trigger();
  pdl_wait();
  const float* row = x + int64_t(blockIdx.x) * cols;
  const float t = temperature[blockIdx.x];
  __shared__ int hist[256];
  __shared__ uint32_t prefix, mask;
  __shared__ int remaining, n_g, n_e, take_all;
  __shared__ float g_v[Backend::kMaxTopK], e_v[Backend::kMaxTopK];
  __shared__ int32_t g_i[Backend::kMaxTopK], e_i[Backend::kMaxTopK];
  if (threadIdx.x == 0) prefix = mask = 0, remaining = k, n_g = n_e = take_all = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
    __syncthreads();
    for (int64_t base = 0; base < cols; base += blockDim.x) {  // the same trips for every lane
      const int64_t j = base + threadIdx.x;
      const float v = j < cols ? row[j] : NAN;
      const uint32_t b = order_bits(v);
      warp_hist_add(hist, (b >> shift) & 255u, !isnan(v) && (b & mask) == prefix);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int cum = 0, d = 255;
      for (; d >= 0; --d) {
        if (cum + hist[d] >= remaining) break;
        cum += hist[d];
      }
      if (d < 0) {
        take_all = 1;  // fewer candidates than k (only possible in the first pass)
      } else {
        remaining -= cum;
        prefix |= uint32_t(d) << shift;
        mask |= 255u << shift;
      }
    }
    __syncthreads();
    if (take_all) break;
  }
  const float xk = take_all ? -INFINITY : from_order_bits(prefix), qk = xk / t;
  // x whose quotient can round to q_k lie within a relative 2^-23 of x_k when both are normal numbers
  // (8x margin); otherwise every x is checked.
  const bool shortcut = isnormal(xk) && isnormal(qk);
  const float lo = shortcut ? xk - fabsf(xk) * 0x1p-20f : -INFINITY,
              hi = shortcut ? xk + fabsf(xk) * 0x1p-20f : INFINITY;
  auto equal = [&](float v) { return v == xk || (v >= lo && v <= hi && v / t == qk); };
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = row[j];
    if (isnan(v) || (!take_all && v < lo)) continue;
    const float q = v / t;
    if (take_all || q > qk) {
      const int at = atomicAdd(&n_g, 1);
      g_v[at] = q, g_i[at] = int32_t(j);
    } else if (equal(v)) {
      const int at = atomicAdd(&n_e, 1);
      if (at < k) e_v[at] = q, e_i[at] = int32_t(j);
    }
  }
  __syncthreads();
  const int slots = k - n_g;
  if (!take_all && n_e > slots) {  // uniform: shared counts after the barrier
    // The `slots` members of E of lowest index: thread t takes the row's t-th contiguous range.
    const int64_t per = (cols + blockDim.x - 1) / blockDim.x, lo_j = threadIdx.x * per,
                  hi_j = min(cols, lo_j + per);
    int mine = 0;
    for (int64_t j = lo_j; j < hi_j; ++j) mine += !isnan(row[j]) && equal(row[j]);
    int rank = block_exclusive_scan(mine);
    for (int64_t j = lo_j; j < hi_j && rank < slots; ++j) {
      const float v = row[j];
      if (isnan(v) || !equal(v)) continue;
      e_v[rank] = v / t, e_i[rank] = int32_t(j);
      ++rank;
    }
    __syncthreads();
  }
  // G, then the E members taken: n candidates (k, or fewer with take_all), ranked and stored.
  const int n = take_all ? n_g : k;
  const int i = int(threadIdx.x);
  float* out_v = values + int64_t(blockIdx.x) * k;
  int32_t* out_i = ids + int64_t(blockIdx.x) * k;
  auto cand_v = [&](int c) { return c < n_g ? g_v[c] : e_v[c - n_g]; };
  auto cand_i = [&](int c) { return c < n_g ? g_i[c] : e_i[c - n_g]; };
  if (i < n) {
    const float v = cand_v(i);
    const int32_t id = cand_i(i);
    int r = 0;
    for (int o = 0; o < n; ++o) r += cand_v(o) > v || (cand_v(o) == v && cand_i(o) < id);
    out_v[r] = v, out_i[r] = id;
  } else if (i < k) {
    out_v[i] = 0.0f, out_i[i] = -1;
  }
}

}  // namespace

void launch_top_k(const float* x, int64_t rows, int64_t cols, int k, const float* temperature, float* values,
                  int32_t* ids, cudaStream_t s) {
  if (rows <= 0) return;
  if (k < 1 || k > Backend::kMaxTopK)
    throw Error("cuda top_k: k " + std::to_string(k) + " outside 1.." + std::to_string(Backend::kMaxTopK));
  check_rows(rows, "top_k");
  launch("top_k_kernel", top_k_kernel, dim3(unsigned(rows)), dim3(1024), s, x, cols, k, temperature, values,
         ids);
  check_launch("top_k");
}

void launch_argmax(const float* x, int64_t rows, int64_t cols, int32_t* out, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  check_rows(rows, "argmax");
  launch("argmax_kernel", argmax_kernel, dim3(unsigned(rows)), dim3(1024), s, x, cols, out);
  check_launch("argmax");
}

void launch_softmax(float* x, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  check_rows(rows, "softmax");
  launch("softmax_kernel", softmax_kernel, dim3(unsigned(rows)), dim3(row_threads(cols)), s, x, cols);
  check_launch("softmax");
}

}  // namespace mx8::backend::cuda_impl
