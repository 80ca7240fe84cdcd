// What a kernel leaves in L2 for the next kernel: a buffer W is read by one kernel in several ways
// (L2 prefetch instructions, real loads, loads with an evict_last hint, a touch per 64 KB), then read
// again by a second kernel, whose time says how much of W it found in L2. The two reads can be on the
// same SM or on different ones, and other traffic can run in between. Answers docs/CUDA_BACKEND.md's
// "Seventy-fifth session": why warming L2 with `cp.async.bulk.prefetch.L2` never helped the decode step.
//
// Build and run on the GPU machine (no part of mx8 links it):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o l2_residency_probe \
//     scripts/l2_residency_probe.cu && ./l2_residency_probe 24 && ./l2_residency_probe 8
//   ./l2_residency_probe steady    (the decode step's pattern, layer after layer: Probe::steady)
// The argument is W's size in MB. Each line is the median of 7 trials, every trial after an L2 flush.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define CHECK(x)                                                                       \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

namespace {

__device__ __forceinline__ unsigned sm_id() {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
}
__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ uint32_t xor4(uint4 v) {
  return v.x ^ v.y ^ v.z ^ v.w;
}
// How the GEMVs stream their weights (load_stream, src/backend/cuda/gemv_fp8_common.cuh).
__device__ __forceinline__ uint4 load_no_l1(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint4 load_hinted(const uint8_t* p, uint64_t policy) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p), "l"(policy));
  return v;
}
// An L2 policy for every line a load touches: evict_last (keep) or evict_first (drop first).
__device__ __forceinline__ uint64_t l2_policy(bool keep) {
  uint64_t p;
  if (keep)
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
  else
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}

enum class Warm {
  none,
  bulk_prefetch,
  line_prefetch,
  loads,
  loads_evict_last,
  plain_loads,
  touch_64k,
  count
};
const char* const kWarmNames[] = {"nothing",
                                  "cp.async.bulk.prefetch.L2, 4 KB each",
                                  "prefetch.global.L2, one per 128 B line",
                                  "loads (ld.global, 16 B each)",
                                  "loads with an L2 evict_last hint",
                                  "plain ld.global (no .nc, no hint)",
                                  "one 16-byte load per 64 KB"};

// Block b warms chunk b of W and records its SM. `sink` keeps the loads from being optimized away.
__global__ void warm_kernel(const uint8_t* w, size_t chunk, Warm how, int* sm_of_chunk, uint32_t* sink) {
  const uint8_t* base = w + blockIdx.x * chunk;
  if (threadIdx.x == 0) sm_of_chunk[blockIdx.x] = int(sm_id());
  uint32_t acc = 0;
  const uint64_t last = l2_policy(true);
  switch (how) {
    case Warm::bulk_prefetch:
      for (size_t off = threadIdx.x * 4096; off < chunk; off += blockDim.x * 4096) {
        const uint32_t n = uint32_t(chunk - off < 4096 ? chunk - off : 4096);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(base + off), "r"(n) : "memory");
      }
      break;
    case Warm::line_prefetch:
      for (size_t off = threadIdx.x * 128; off < chunk; off += blockDim.x * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(base + off));
      break;
    case Warm::loads:
    case Warm::loads_evict_last:
    case Warm::touch_64k: {
      const size_t stride = how == Warm::touch_64k ? 64 << 10 : 16;
      for (size_t off = threadIdx.x * stride; off < chunk; off += blockDim.x * stride)
        acc ^= xor4(how == Warm::loads_evict_last ? load_hinted(base + off, last) : load_no_l1(base + off));
      break;
    }
    case Warm::plain_loads:
      for (size_t off = threadIdx.x * 16; off < chunk; off += blockDim.x * 16) {
        uint4 v;
        asm volatile("ld.global.v4.u32 {%0,%1,%2,%3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(base + off));
        acc ^= xor4(v);
      }
      break;
    default:
      break;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// Traffic between the warming and the read: `bytes` of another buffer read once, optionally with an
// L2 evict_first hint.
__global__ void stream_kernel(const uint8_t* f, size_t bytes, bool evict_first, uint32_t* sink) {
  const uint64_t first = l2_policy(false);
  uint32_t acc = 0;
  for (size_t off = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) * 16; off < bytes;
       off += size_t(gridDim.x) * blockDim.x * 16)
    acc ^= xor4(evict_first ? load_hinted(f + off, first) : load_no_l1(f + off));
  if (acc == 0x9e3779b9u) sink[1] = acc;
}

// One block per SM (the dynamic shared memory keeps a second one off) reads the chunk that
// chunk_of_sm names for its SM, eight 16-byte loads in flight per thread; each block's start and end
// on the global timer.
__global__ void read_kernel(const uint8_t* w, size_t chunk, const int* chunk_of_sm, uint32_t* sink,
                            unsigned long long* times) {
  extern __shared__ uint8_t occupy[];
  const uint64_t t0 = global_ns();
  const uint8_t* base = w + size_t(chunk_of_sm[sm_id()]) * chunk;
  const size_t step = size_t(blockDim.x) * 16;
  uint32_t acc = 0;
  for (size_t off = threadIdx.x * 16; off < chunk; off += 8 * step) {
    uint4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) v[u] = off + u * step < chunk ? load_no_l1(base + off + u * step) : uint4{};
#pragma unroll
    for (int u = 0; u < 8; ++u) acc ^= xor4(v[u]);
  }
  if (acc == 0x9e3779b9u) sink[2] = acc;
  occupy[threadIdx.x] = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    times[2 * blockIdx.x] = t0;
    times[2 * blockIdx.x + 1] = global_ns();
  }
}

// The decode step's pattern (`l2_residency_probe steady`): per layer, warm the first `warm` bytes of the
// layer's weights (evict_last loads, plain streaming loads, or nothing), optionally setting the previous
// layer's warmed lines back to evict_normal first; then other traffic (the o-proj); then the timed read
// of the whole layer, grid-strided so that every block reads its share of the warmed bytes first.
__global__ void layer_warm_kernel(const uint8_t* w, size_t warm, const uint8_t* demote, bool keep,
                                  uint32_t* sink) {
  const size_t tid = size_t(blockIdx.x) * blockDim.x + threadIdx.x, threads = size_t(gridDim.x) * blockDim.x;
  if (demote)
    for (size_t off = tid * 128; off < warm; off += threads * 128)
      asm volatile("applypriority.global.L2::evict_normal [%0], 128;" ::"l"(demote + off) : "memory");
  const uint64_t last = l2_policy(true);
  uint32_t acc = 0;
  for (size_t off = tid * 16; off < warm; off += threads * 16)
    acc ^= xor4(keep ? load_hinted(w + off, last) : load_no_l1(w + off));
  if (acc == 0x9e3779b9u) sink[3] = acc;
}

struct Probe {
  int sms = 0;
  size_t chunk = 0;
  uint8_t* w = nullptr;
  uint8_t* flush = nullptr;
  uint8_t* other = nullptr;
  int* sm_of_chunk = nullptr;
  int* chunk_of_sm = nullptr;
  uint32_t* sink = nullptr;
  unsigned long long* times = nullptr;
  static constexpr size_t kFlushBytes = size_t(512) << 20, kOtherBytes = size_t(256) << 20;
  static constexpr int kReadSmem = 160 << 10;

  void flush_l2() {  // dirty lines first, then clean ones, so that no write-back lands in the timed read
    CHECK(cudaMemset(flush, 1, kFlushBytes));
    stream_kernel<<<sms * 4, 512>>>(flush, kFlushBytes / 2, false, sink);
  }
  // chunk_of_sm for the reads: the chunk that the SM `shift` places further (in smid order) warmed.
  void map_reads(int shift) {
    std::vector<int> owner(sms);
    CHECK(cudaMemcpy(owner.data(), sm_of_chunk, sms * sizeof(int), cudaMemcpyDeviceToHost));
    std::vector<std::pair<int, int>> by_sm;
    for (int b = 0; b < sms; ++b) by_sm.push_back({owner[b], b});
    std::sort(by_sm.begin(), by_sm.end());
    std::vector<int> table(1024, 0);
    for (int i = 0; i < sms; ++i) table[by_sm[i].first] = by_sm[(i + shift) % sms].second;
    CHECK(cudaMemcpy(chunk_of_sm, table.data(), table.size() * sizeof(int), cudaMemcpyHostToDevice));
  }
  // The read's span: the first block's start to the last block's end, us.
  double read_span() {
    read_kernel<<<sms, 512, kReadSmem>>>(w, chunk, chunk_of_sm, sink, times);
    CHECK(cudaGetLastError());
    std::vector<unsigned long long> t(2 * sms);
    CHECK(cudaMemcpy(t.data(), times, t.size() * 8, cudaMemcpyDeviceToHost));
    unsigned long long lo = ~0ull, hi = 0;
    for (int b = 0; b < sms; ++b) lo = std::min(lo, t[2 * b]), hi = std::max(hi, t[2 * b + 1]);
    return (hi - lo) / 1e3;
  }
  // Whether a bulk prefetch costs bus time: a 64 MB read alone, and launched right behind a bulk
  // prefetch of 256 MB (the flush buffer's second half), by events, medians of 7.
  void prefetch_cost() {
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    const size_t pchunk = (size_t(256) << 20) / sms / 4096 * 4096;
    for (bool behind : {false, true}) {
      std::vector<float> us;
      for (int r = 0; r < 7; ++r) {
        flush_l2();
        CHECK(cudaEventRecord(a));
        if (behind)
          warm_kernel<<<sms, 512>>>(flush + (size_t(256) << 20), pchunk, Warm::bulk_prefetch, sm_of_chunk,
                                    sink);
        stream_kernel<<<sms * 4, 512>>>(other, size_t(64) << 20, false, sink);
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        float ms = 0;
        CHECK(cudaEventElapsedTime(&ms, a, b));
        us.push_back(ms * 1e3f);
      }
      std::sort(us.begin(), us.end());
      std::printf("\n64 MB read %s: %.1f us", behind ? "behind a 256 MB bulk prefetch" : "alone", us[3]);
    }
    std::printf("\n");
    CHECK(cudaEventDestroy(a));
    CHECK(cudaEventDestroy(b));
  }
  // The steady decode pattern over 8 layers of `layer_mb` each, 4 passes; the median read time of the
  // last 3 passes' layers, us. mode 0: no warming; 1: streaming loads; 2: evict_last; 3: evict_last and
  // the previous layer's lines demoted.
  void steady(uint8_t* layers, size_t layer_mb, size_t warm_mb, int mode) {
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    const size_t lb = layer_mb << 20, wb = warm_mb << 20;
    flush_l2();
    std::vector<float> us;
    const uint8_t* prev = nullptr;
    for (int pass = 0; pass < 4; ++pass)
      for (int l = 0; l < 8; ++l) {
        uint8_t* w = layers + size_t(l) * lb;
        if (mode > 0) layer_warm_kernel<<<sms * 4, 512>>>(w, wb, mode == 3 ? prev : nullptr, mode >= 2, sink);
        prev = w;
        stream_kernel<<<sms * 4, 512>>>(other + size_t(l % 8) * (size_t(16) << 20), size_t(16) << 20, false,
                                        sink);
        CHECK(cudaEventRecord(a));
        stream_kernel<<<sms * 4, 512>>>(w, lb, false, sink);
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        float ms = 0;
        CHECK(cudaEventElapsedTime(&ms, a, b));
        if (pass > 0) us.push_back(ms * 1e3f);
      }
    CHECK(cudaGetLastError());
    std::sort(us.begin(), us.end());
    const char* const names[] = {"nothing", "streaming loads", "evict_last loads",
                                 "evict_last, previous demoted"};
    std::printf("%-30s | %3zu MB of %3zu | %7.2f | %6.0f\n", names[mode], mode ? warm_mb : size_t(0),
                layer_mb, us[us.size() / 2], double(lb) / us[us.size() / 2] / 1e3);
    CHECK(cudaEventDestroy(a));
    CHECK(cudaEventDestroy(b));
  }
  // Median over 7 trials of: flush, warm W, traffic, read W.
  void trial(Warm how, int shift, size_t other_mb, bool evict_first, bool read_twice = false) {
    std::vector<double> spans;
    for (int r = 0; r < 7; ++r) {
      flush_l2();
      warm_kernel<<<sms, 512>>>(w, chunk, how, sm_of_chunk, sink);
      CHECK(cudaGetLastError());
      CHECK(cudaDeviceSynchronize());
      if (other_mb) stream_kernel<<<sms * 4, 512>>>(other, other_mb << 20, evict_first, sink);
      map_reads(shift);
      if (read_twice) read_span();
      spans.push_back(read_span());
    }
    std::sort(spans.begin(), spans.end());
    const double us = spans[spans.size() / 2];
    std::printf("%-40s | %5d | %5zu MB%s | %7.2f | %6.0f\n",
                read_twice ? "W read by the read kernel itself" : kWarmNames[int(how)], shift, other_mb,
                evict_first ? ", evict_first" : "              ", us, double(chunk) * sms / us / 1e3);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const bool steady = argc > 1 && std::string(argv[1]) == "steady";
  const int mb = steady ? 24 : argc > 1 ? std::atoi(argv[1]) : 24;
  if (mb < 1 || mb > 4096) {
    std::fprintf(stderr, "usage: l2_residency_probe [MB of W, 1..4096 | steady]\n");
    return 2;
  }
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  Probe p;
  p.sms = prop.multiProcessorCount;
  p.chunk = (size_t(mb) << 20) / p.sms / 4096 * 4096;
  CHECK(cudaMalloc(&p.w, p.chunk * p.sms));
  CHECK(cudaMalloc(&p.flush, Probe::kFlushBytes));
  CHECK(cudaMalloc(&p.other, Probe::kOtherBytes));
  CHECK(cudaMemset(p.w, 3, p.chunk * p.sms));
  CHECK(cudaMemset(p.other, 5, Probe::kOtherBytes));
  CHECK(cudaMalloc(&p.sm_of_chunk, p.sms * sizeof(int)));
  CHECK(cudaMalloc(&p.chunk_of_sm, 1024 * sizeof(int)));
  CHECK(cudaMalloc(&p.sink, 64));
  CHECK(cudaMalloc(&p.times, 2 * p.sms * sizeof(unsigned long long)));
  CHECK(cudaFuncSetAttribute(read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Probe::kReadSmem));
  std::printf("%s, %d SMs, %d MB of L2; W = %.1f MB in chunks of %zu KB\n\n", prop.name, p.sms,
              prop.l2CacheSize >> 20, p.chunk * p.sms / 1e6, p.chunk >> 10);
  if (steady) {  // 8 layers of 56 MB (the FFN pair's 117 MB per layer, halved to fit 512 MB)
    uint8_t* layers = nullptr;
    CHECK(cudaMalloc(&layers, size_t(8) * (size_t(56) << 20)));
    CHECK(cudaMemset(layers, 7, size_t(8) * (size_t(56) << 20)));
    std::printf("%-30s | %-16s | %7s | %6s\n", "each layer's first MB warmed by", "warmed", "read us",
                "GB/s");
    std::printf("---|---|---:|---:\n");
    p.steady(layers, 56, 0, 0);
    for (size_t warm : {8, 16, 24})
      for (int mode = 1; mode <= 3; ++mode) p.steady(layers, 56, warm, mode);
    return 0;
  }
  std::printf("%-40s | %5s | %-22s | %7s | %6s\n", "W warmed by", "shift", "traffic between", "read us",
              "GB/s");
  std::printf("---|---:|---|---:|---:\n");
  p.trial(Warm::none, 0, 0, false);
  p.trial(Warm::none, 0, 0, false, true);
  for (int h = 1; h < int(Warm::count); ++h) p.trial(Warm(h), 0, 0, false);
  for (Warm h : {Warm::bulk_prefetch, Warm::loads})
    for (int shift : {1, 7, 66}) p.trial(h, shift, 0, false);
  for (Warm h : {Warm::bulk_prefetch, Warm::loads, Warm::loads_evict_last, Warm::plain_loads})
    for (size_t other : {16, 64})
      for (bool ef : {false, true}) p.trial(h, 0, other, ef);
  p.prefetch_cost();
  return 0;
}
