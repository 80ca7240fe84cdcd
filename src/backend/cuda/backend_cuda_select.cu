// Selection ops of the CUDA backend: argmax (greedy decoding) and top_k (the sampling candidates of
// top-k sampling), the sampling penalties applied before them, and the log sum exp of log-probabilities. A
// decode step asks them of one to a few rows of ~128K logits. One block per row read its row at one SM's rate
// (H200: argmax 54 us, top_k's five passes longer, in a step of ~2.4 ms), so each row is split into parts
// over blocks, and the block that finishes a row's last part combines the parts' results (a counter per row,
// reset by that block, so the scratch stays zero between calls). Both results are decided on exact values and
// indices, so the split does not change them: they equal the CPU backend's bit for bit.
#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "backend/cuda/backend_cuda.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

// A candidate of argmax: a value and its index; a NaN value is no candidate.
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

// Parts per row and values per part: about `per_block` values each, a multiple of 4 (whole float4s),
// at most kMaxParts parts.
constexpr int kMaxParts = 64;
struct Split {
  int parts;
  int64_t chunk;
};
Split split_row(int64_t cols, int64_t per_block) {
  const int parts = int(std::min<int64_t>((cols + per_block - 1) / per_block, kMaxParts));
  const int64_t chunk = ((cols + parts - 1) / parts + 3) / 4 * 4;
  return {int(std::max<int64_t>(1, (cols + chunk - 1) / chunk)), chunk};
}

// Called by thread 0 of every block of row `row` once its part's result is stored: whether this block
// is the row's last (then the others' results are visible to it). The last block resets the counter.
__device__ __forceinline__ bool arrive_last(unsigned* done, int64_t row, int parts) {
  __threadfence();  // this block's result before the count
  const bool last = atomicAdd(&done[row], 1u) == unsigned(parts - 1);
  if (last) {
    done[row] = 0;
    __threadfence();  // the count before the other blocks' results
  }
  return last;
}

constexpr int kArgmaxThreads = 256;
constexpr int64_t kArgmaxPerBlock = 4096;  // 16 values per thread: four float4 loads in flight

// Grid (parts, rows). Each block keeps the best of its part, the row's last block the best of the
// parts. kVec: 16-byte loads (cols and the chunk are multiples of 4, x 16-byte aligned).
template <bool kVec>
__global__ void argmax_kernel(const float* x, int64_t cols, int64_t chunk, Best* partial, unsigned* done,
                              int32_t* out) {
  pdl_trigger();
  pdl_wait();
  const int64_t row = blockIdx.y;
  const int parts = int(gridDim.x);
  const float* r = x + row * cols;
  const int64_t lo = int64_t(blockIdx.x) * chunk, hi = min(cols, lo + chunk);
  Best best{NAN, 0};
  auto take = [&](float v, int64_t j) {
    const Best c{v, int32_t(j)};
    if (better(c, best)) best = c;
  };
  if constexpr (kVec) {
#pragma unroll 4
    for (int64_t j = lo + 4 * int64_t(threadIdx.x); j < hi; j += 4 * kArgmaxThreads) {
      const float4 v = *reinterpret_cast<const float4*>(r + j);
      take(v.x, j);
      take(v.y, j + 1);
      take(v.z, j + 2);
      take(v.w, j + 3);
    }
  } else {
#pragma unroll 4
    for (int64_t j = lo + threadIdx.x; j < hi; j += kArgmaxThreads) take(r[j], j);
  }
  best = warp_best(best);
  __shared__ Best warp_part[kArgmaxThreads / 32];
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_part[warp] = best;
  __syncthreads();
  if (warp != 0) return;
  best = warp_best(lane < kArgmaxThreads / 32 ? warp_part[lane] : Best{NAN, 0});
  if (lane == 0) {
    partial[row * parts + blockIdx.x] = best;
    last = arrive_last(done, row, parts);
  }
  __syncwarp();
  if (!last) return;
  best = Best{NAN, 0};
  for (int p = lane; p < parts; p += 32) {
    const int2 raw =
        __ldcg(reinterpret_cast<const int2*>(partial + row * parts + p));  // not L1: another SM wrote it
    const Best c{__int_as_float(raw.x), raw.y};
    if (better(c, best)) best = c;
  }
  best = warp_best(best);
  if (lane == 0) out[row] = isnan(best.v) ? 0 : best.i;
}

// Whether v is a normal float (not zero, subnormal, infinite or NaN). Not isnormal(): nvcc 13.0 folds
// that to false in device code (the PTX of a probe kernel stores a constant 0), which had left
// block_top_k's shortcut below switched off, found when a mutant of it survived (docs/MUTATION.md).
__device__ __forceinline__ bool normal_float(float v) {
  const float a = fabsf(v);
  return a >= FLT_MIN && a <= FLT_MAX;
}

// Sortable bits of a candidate's value: a larger value has larger bits; -0 takes +0's (the sampler
// orders them as equal, by index).
__device__ __forceinline__ uint32_t order_bits(float v) {
  const uint32_t u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The float whose order_bits are b.
__device__ __forceinline__ float from_order_bits(uint32_t b) {
  return __uint_as_float((b & 0x80000000u) ? (b & 0x7fffffffu) : ~b);
}

constexpr int kTopKThreads = 1024;
constexpr int64_t kTopKPerBlock = 8192;  // 8 values per thread and pass

// The exclusive prefix sum of v over the block (blockDim.x == kTopKThreads).
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

// hist[bin] += 1 for every lane with `on`, one shared atomic per distinct bin of the warp (a row's logits
// share a few exponents, so in the first digit most lanes collide). Every lane of the warp calls it.
__device__ __forceinline__ void warp_hist_add(int* hist, uint32_t bin, bool on) {
  const uint32_t active = __ballot_sync(0xffffffffu, on);
  if (!on) return;
  const uint32_t same = __match_any_sync(active, bin);
  if (int(threadIdx.x & 31) == __ffs(int(same)) - 1) atomicAdd(&hist[bin], __popc(same));
}

// The k best of the n values x[0..n) by quotient x / t (larger first, then lower index), as quotients
// and indices first + j, ranked, into out_v / out_i; ranks past the candidates that exist get 0 and -1.
// Called by every thread of a block of kTopKThreads.
// 1. A radix select over the order bits of x (four 8-bit digits, a histogram each; no division) finds
//    x_k, the k-th largest x. The division by t > 0 is monotone, so q_k = x_k / t is the k-th largest
//    quotient: fewer than k quotients are above it, and all of those have x above x_k.
// 2. One pass takes the quotients above q_k (G) and counts those equal to it (E: x_k itself, and x
//    within rounding of it), keeping the first k of E as they come.
// 3. Where E has more members than the k - |G| slots left, a pass over contiguous ranges with a prefix
//    sum takes the members of lowest index instead.
// 4. A rank sort puts the k in the sampler's order (quotient, then index).
// Every decision is on exact values and indices, so the result does not depend on thread timing.
__device__ void block_top_k(const float* x, int64_t n, int64_t first, int k, float t, float* out_v,
                            int32_t* out_i) {
  __shared__ int hist[256];
  __shared__ uint32_t prefix, mask;
  __shared__ int remaining, n_g, n_e, take_all;
  __shared__ float g_v[Backend::kMaxTopK], e_v[Backend::kMaxTopK];
  __shared__ int32_t g_i[Backend::kMaxTopK], e_i[Backend::kMaxTopK];
  if (threadIdx.x == 0) prefix = mask = 0, remaining = k, n_g = n_e = take_all = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
    __syncthreads();
    for (int64_t base = 0; base < n; base += blockDim.x) {  // the same trips for every lane
      const int64_t j = base + threadIdx.x;
      const float v = j < n ? x[j] : NAN;
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
  const bool shortcut = normal_float(xk) && normal_float(qk);
  const float lo = shortcut ? xk - fabsf(xk) * 0x1p-20f : -INFINITY,
              hi = shortcut ? xk + fabsf(xk) * 0x1p-20f : INFINITY;
  auto equal = [&](float v) { return v == xk || (v >= lo && v <= hi && v / t == qk); };
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float v = x[j];
    if (isnan(v) || (!take_all && v < lo)) continue;
    const float q = v / t;
    if (take_all || q > qk) {
      const int at = atomicAdd(&n_g, 1);
      g_v[at] = q, g_i[at] = int32_t(first + j);
    } else if (equal(v)) {
      const int at = atomicAdd(&n_e, 1);
      if (at < k) e_v[at] = q, e_i[at] = int32_t(first + j);
    }
  }
  __syncthreads();
  const int slots = k - n_g;
  if (!take_all && n_e > slots) {  // uniform: shared counts after the barrier
    // The `slots` members of E of lowest index: thread t takes the t-th contiguous range.
    const int64_t per = (n + blockDim.x - 1) / blockDim.x, lo_j = threadIdx.x * per,
                  hi_j = min(n, lo_j + per);
    int mine = 0;
    for (int64_t j = lo_j; j < hi_j; ++j) mine += !isnan(x[j]) && equal(x[j]);
    int rank = block_exclusive_scan(mine);
    for (int64_t j = lo_j; j < hi_j && rank < slots; ++j) {
      const float v = x[j];
      if (isnan(v) || !equal(v)) continue;
      e_v[rank] = v / t, e_i[rank] = int32_t(first + j);
      ++rank;
    }
    __syncthreads();
  }
  // G, then the E members taken: c candidates (k, or fewer with take_all), ranked and stored.
  const int c = take_all ? n_g : k;
  const int i = int(threadIdx.x);
  auto cand_v = [&](int o) { return o < n_g ? g_v[o] : e_v[o - n_g]; };
  auto cand_i = [&](int o) { return o < n_g ? g_i[o] : e_i[o - n_g]; };
  if (i < c) {
    const float v = cand_v(i);
    const int32_t id = cand_i(i);
    int r = 0;
    for (int o = 0; o < c; ++o) r += cand_v(o) > v || (cand_v(o) == v && cand_i(o) < id);
    out_v[r] = v, out_i[r] = id;
  } else if (i < k) {
    out_v[i] = 0.0f, out_i[i] = -1;
  }
}

// Grid (parts, rows): each block ranks the k best of its part into the row's part lists; the row's last
// block merges them. The row's k best are among the parts' k best, so the merge ranks only those: a
// candidate's rank is the number of better ones in every part's list (each list is ranked, its
// candidates first, so those form a prefix found by binary search).
__global__ void top_k_kernel(const float* x, int64_t cols, int64_t chunk, int k, const float* temperature,
                             float* part_v, int32_t* part_i, unsigned* done, float* values, int32_t* ids) {
  pdl_trigger();
  pdl_wait();
  const int64_t row = blockIdx.y;
  const int parts = int(gridDim.x);
  const float t = temperature[row];
  const int64_t lo = int64_t(blockIdx.x) * chunk, n = min(cols, lo + chunk) - lo;
  float* my_v = part_v + (row * parts + blockIdx.x) * k;
  int32_t* my_i = part_i + (row * parts + blockIdx.x) * k;
  block_top_k(x + row * cols + lo, n, lo, k, t, my_v, my_i);
  __shared__ bool last;
  __threadfence();  // this thread's ranks before the count (arrive_last)
  __syncthreads();
  if (threadIdx.x == 0) last = arrive_last(done, row, parts);
  __syncthreads();
  if (!last) return;
  __shared__ float all_v[kMaxParts * Backend::kMaxTopK];
  __shared__ int32_t all_i[kMaxParts * Backend::kMaxTopK];
  __shared__ int count[kMaxParts];
  const float* row_v = part_v + row * parts * k;
  const int32_t* row_i = part_i + row * parts * k;
  for (int j = threadIdx.x; j < parts * k; j += blockDim.x) {
    all_v[j] = __ldcg(row_v + j);  // not L1: other SMs wrote them
    all_i[j] = __ldcg(row_i + j);
  }
  __syncthreads();
  for (int p = threadIdx.x; p < parts; p += blockDim.x) {
    int c = 0;
    while (c < k && all_i[p * k + c] >= 0) ++c;
    count[p] = c;
  }
  __syncthreads();
  float* out_v = values + row * k;
  int32_t* out_i = ids + row * k;
  int found = 0;
  for (int p = 0; p < parts; ++p) found += count[p];
  for (int j = threadIdx.x; j < parts * k; j += blockDim.x) {
    const int own = j / k, at = j % k;
    if (at >= count[own]) continue;
    const float v = all_v[j];
    const int32_t id = all_i[j];
    int r = at;  // the better ones of its own part
    for (int p = 0; p < parts && r < k; ++p) {
      if (p == own) continue;
      int a = 0, b = count[p];  // the first of part p that is not better
      while (a < b) {
        const int m = (a + b) / 2;
        const float mv = all_v[p * k + m];
        if (mv > v || (mv == v && all_i[p * k + m] < id))
          a = m + 1;
        else
          b = m;
      }
      r += a;
    }
    if (r < k) out_v[r] = v, out_i[r] = id;
  }
  for (int r = found + threadIdx.x; r < k; r += blockDim.x) out_v[r] = 0.0f, out_i[r] = -1;
}

// One thread per entry (the entries are distinct (row, token) pairs). n lives in device memory, so the
// grid is fixed and strides over however many there are.
__global__ void penalize_kernel(float* x, int64_t rows, int64_t cols, PenaltyArgs p) {
  pdl_trigger();
  pdl_wait();
  const int32_t n = *p.n;
  for (int32_t i = int32_t(blockIdx.x * blockDim.x + threadIdx.x); i < n;
       i += int32_t(gridDim.x * blockDim.x)) {
    const int32_t row = p.entries[3 * i], token = p.entries[3 * i + 1], count = p.entries[3 * i + 2];
    if (row < 0 || row >= rows || token < 0 || token >= cols || count < 1) continue;  // the caller checks
    const float* q = p.params + 3 * row;
    float& l = x[row * cols + token];
    if (p.saved) p.saved[i] = l;
    l = penalized_logit(l, count, q[0], q[1], q[2]);
  }
}

// One block per row: the maximum (fmaxf skips NaN, as the host's x > max does), then the sum of
// exp(x - max) in double (the device's exp is within 1 ulp, the order a fixed tree), as
// backend::log_sum_exp; and the token's logit.
constexpr int kLseThreads = 256;
__global__ void log_sum_exp_kernel(const float* x, int64_t cols, const int32_t* tokens, double* lse,
                                   float* picked) {
  pdl_trigger();
  pdl_wait();
  __shared__ float max_of[kLseThreads / 32];
  __shared__ double sum_of[kLseThreads / 32];
  const float* v = x + int64_t(blockIdx.x) * cols;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < cols; i += kLseThreads) mx = fmaxf(mx, v[i]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) max_of[warp] = mx;
  __syncthreads();
  for (int w = 0; w < kLseThreads / 32; ++w) mx = fmaxf(mx, max_of[w]);
  double sum = 0;
  for (int64_t i = threadIdx.x; i < cols; i += kLseThreads)
    if (!isnan(v[i])) sum += exp(double(v[i]) - double(mx));
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) sum_of[warp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < kLseThreads / 32; ++w) total += sum_of[w];
    lse[blockIdx.x] = double(mx) + log(total);
    const int32_t t = tokens[blockIdx.x];
    picked[blockIdx.x] = t >= 0 && t < cols ? v[t] : NAN;
  }
}

__global__ void gather_kernel(const float* x, int64_t n, int64_t cols, const int32_t* ids, int k,
                              float* out) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t id = ids[i];
    out[i] = id >= 0 && id < cols ? x[(i / k) * cols + id] : NAN;
  }
}

// The scratch starts with one counter per row for as many rows as a call may have, then the parts'
// results. The counters' place must not depend on the call's rows: a call with fewer rows would put its
// results over the counters of a larger one's later rows, which then find them non-zero (arrive_last).
constexpr int64_t kMaxRows = 65535;
constexpr size_t kCounterBytes = size_t(kMaxRows + 1) * 4;

void check_rows(int64_t rows, const char* op) {
  if (rows > kMaxRows)
    throw Error(std::string("cuda backend: ") + op + " of more than " + std::to_string(kMaxRows) +
                " rows in one call");
}

}  // namespace

size_t select_scratch_bytes(int64_t rows, int64_t cols, int k) {
  const Split a = split_row(cols, kArgmaxPerBlock), t = split_row(cols, kTopKPerBlock);
  const size_t argmax = size_t(rows) * size_t(a.parts) * sizeof(Best);
  const size_t top_k = size_t(rows) * size_t(t.parts) * size_t(k) * 8;
  return kCounterBytes + std::max(argmax, top_k);
}

void launch_top_k(const float* x, int64_t rows, int64_t cols, int k, const float* temperature, float* values,
                  int32_t* ids, void* scratch, cudaStream_t s) {
  if (rows <= 0) return;
  if (k < 1 || k > Backend::kMaxTopK)
    throw Error("cuda top_k: k " + std::to_string(k) + " outside 1.." + std::to_string(Backend::kMaxTopK));
  check_rows(rows, "top_k");
  const Split sp = split_row(cols, kTopKPerBlock);
  auto* done = static_cast<unsigned*>(scratch);
  auto* part_v = reinterpret_cast<float*>(static_cast<char*>(scratch) + kCounterBytes);
  auto* part_i = reinterpret_cast<int32_t*>(part_v + size_t(rows) * size_t(sp.parts) * size_t(k));
  launch("top_k_kernel", top_k_kernel, dim3(unsigned(sp.parts), unsigned(rows)), dim3(kTopKThreads), s, x,
         cols, sp.chunk, k, temperature, part_v, part_i, done, values, ids);
  check_launch("top_k");
}

void launch_log_sum_exp(const float* x, int64_t rows, int64_t cols, const int32_t* tokens, double* lse,
                        float* picked, cudaStream_t s) {
  if (rows <= 0) return;
  if (rows > 2147483647) throw Error("cuda log_sum_exp: more than 2^31 - 1 rows in one call");
  launch("log_sum_exp_kernel", log_sum_exp_kernel, dim3(unsigned(rows)), dim3(kLseThreads), s, x, cols,
         tokens, lse, picked);
  check_launch("log_sum_exp");
}

void launch_gather(const float* x, int64_t rows, int64_t cols, const int32_t* ids, int k, float* out,
                   cudaStream_t s) {
  const int64_t n = rows * int64_t(k);
  if (n <= 0) return;
  launch("gather_kernel", gather_kernel, dim3(unsigned(std::min<int64_t>((n + 255) / 256, 1024))), dim3(256),
         s, x, n, cols, ids, k, out);
  check_launch("gather");
}

void launch_penalize(float* x, int64_t rows, int64_t cols, const PenaltyArgs& p, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  // 4 x 256 threads: a step's entries are its drawn rows' distinct recent tokens (64 each by default).
  launch("penalize_kernel", penalize_kernel, dim3(4), dim3(256), s, x, rows, cols, p);
  check_launch("penalize");
}

void launch_argmax(const float* x, int64_t rows, int64_t cols, int32_t* out, void* scratch, cudaStream_t s) {
  if (rows <= 0 || cols <= 0) return;
  check_rows(rows, "argmax");
  const Split sp = split_row(cols, kArgmaxPerBlock);
  auto* done = static_cast<unsigned*>(scratch);
  auto* partial = reinterpret_cast<Best*>(static_cast<char*>(scratch) + kCounterBytes);
  const dim3 grid(unsigned(sp.parts), unsigned(rows));
  if (cols % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0)
    launch("argmax_kernel", argmax_kernel<true>, grid, dim3(kArgmaxThreads), s, x, cols, sp.chunk, partial,
           done, out);
  else
    launch("argmax_kernel", argmax_kernel<false>, grid, dim3(kArgmaxThreads), s, x, cols, sp.chunk, partial,
           done, out);
  check_launch("argmax");
}

}  // namespace mx8::backend::cuda_impl
