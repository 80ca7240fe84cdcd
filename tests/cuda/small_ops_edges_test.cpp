// Edges of the CUDA backend's small ops that the op-by-op comparisons of backend_cuda_test.cpp did not
// reach; mutation testing of the kernels found each (docs/MUTATION.md, "The CUDA backend"): calls of no
// rows, calls of one element, softmax rows far apart in magnitude, every rmsnorm width class, what
// rope_kv_write refuses, the KV cache's memory given back, and inputs read only after
// griddepcontrol.wait. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "cuda/backend_pair_test.h"
#include "cuda/late_copy.h"
#include "mx8/error.h"

namespace mx8::backend {
namespace {

using CudaVsCpu = test::BackendPair;
using cuda::test::DeviceBuffer;

TEST_F(CudaVsCpu, CallsOfNoRowsChangeNothing) {
  // A step can have no rows of some kind (no sampled rows, no prompt tokens): each op returns without
  // touching its output and without a launch error (a grid of zero blocks is one).
  SCOPED_TRACE(trace());
  const std::vector<float> canary(256, 3.5f);
  Pair px = put(canary), py = put(canary), pt = put(std::vector<float>(4, 1.0f));
  Pair pids = put(std::vector<int32_t>(4, 0));
  float* x = (float*)px.g;
  float* y = (float*)py.g;
  const int32_t* ids = (const int32_t*)pids.g;
  const std::vector<float> inv{1.0f, 0.5f};
  Pair pinv = put(inv);
  const RopeArgs r{RopeStyle::half, 4, 4, (const float*)pinv.g};
  const WeightView table{WeightFormat::f32, 16, 16, x};
  auto cache = gpu->create_kv_cache(KvCacheDesc{KvFormat::fp8, 1, 1, 4, 16, 1});
  std::vector<uint8_t> cache_before(cache->desc().total_bytes()), cache_after(cache_before.size());
  gpu->download(cache_before.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*cache).base(),
                cache_before.size());

  gpu->embedding(table, ids, 0, y);
  gpu->rmsnorm(x, x, 0, 8, 1e-5f, y);
  gpu->rope(y, ids, 0, 2, r);
  gpu->add(y, x, 0);
  gpu->silu_mul(x, x, y, 0);
  gpu->softmax(y, 0, 8);
  gpu->softmax(y, 4, 0);
  gpu->argmax(x, 0, 64, (int32_t*)y);
  gpu->top_k(x, 0, 64, 4, (const float*)pt.g, y, (int32_t*)y);
  gpu->log_sum_exp(x, 0, 64, ids, (double*)y, y);
  gpu->gather(x, 0, 64, ids, 4, y);
  gpu->kv_write(*cache, 0, x, x, ids, 0);
  gpu->rope_kv_write(*cache, 0, y, y, x, ids, ids, 0, 1, r);
  gpu->synchronize();

  EXPECT_EQ(get_gpu<float>(py, canary.size()), canary);
  gpu->download(cache_after.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*cache).base(), cache_after.size());
  EXPECT_EQ(cache_after, cache_before);
}

TEST_F(CudaVsCpu, CallsOfOneElementMatchCpu) {
  // The smallest call of each elementwise op: one value, one row, one rotated pair. Same tolerances
  // as backend_cuda_test.cpp (silu: expf within 2 ulp of glibc's, 1e-6 relative; rope: sincosf
  // likewise; softmax of one row: 2e-5 relative, the sums reordered). rope's tensor is followed by
  // guard values, and its positions by a nonzero one, so a thread past the last pair would show.
  SCOPED_TRACE(trace());
  const std::vector<float> g{1.7f}, u{-0.6f};
  Pair pg = put(g), pu = put(u), po = zeros<float>(1);
  cpu->silu_mul((const float*)pg.c, (const float*)pu.c, (float*)po.c, 1);
  gpu->silu_mul((const float*)pg.g, (const float*)pu.g, (float*)po.g, 1);
  const float silu = get_cpu<float>(po, 1)[0];
  EXPECT_NEAR(get_gpu<float>(po, 1)[0], silu, 1e-6 * std::fabs(silu));
  EXPECT_NE(silu, 0.0f);

  for (int64_t cols : {1, 5}) {
    auto s = normal(size_t(cols), 3.0f);
    Pair ps = put(s);
    cpu->softmax((float*)ps.c, 1, cols);
    gpu->softmax((float*)ps.g, 1, cols);
    const auto a = get_cpu<float>(ps, s.size()), b = get_gpu<float>(ps, s.size());
    for (size_t j = 0; j < s.size(); ++j) EXPECT_NEAR(b[j], a[j], 2e-5 * a[j]) << "softmax of " << cols;
    EXPECT_NE(a, s);  // the row changed: 1 for a single value
  }

  const std::vector<float> inv{0.3f};
  Pair pinv = put(inv);
  // Each backend reads the frequencies from its own memory.
  const RopeArgs rc{RopeStyle::half, 2, 2, (const float*)pinv.c},
      rg{RopeStyle::half, 2, 2, (const float*)pinv.g};
  std::vector<float> xr{0.8f, -1.3f};
  xr.resize(18, 2.5f);  // guards
  Pair px = put(xr), ppos = put(std::vector<int32_t>{5, 9});
  cpu->rope((float*)px.c, (const int32_t*)ppos.c, 1, 1, rc);
  gpu->rope((float*)px.g, (const int32_t*)ppos.g, 1, 1, rg);
  const auto a = get_cpu<float>(px, xr.size()), b = get_gpu<float>(px, xr.size());
  for (size_t j = 0; j < 2; ++j) EXPECT_NEAR(b[j], a[j], 1e-6 * (std::fabs(xr[0]) + std::fabs(xr[1])));
  EXPECT_NE(a[0], xr[0]);
  for (size_t j = 2; j < xr.size(); ++j) EXPECT_EQ(b[j], 2.5f) << "rope wrote past its tensor at " << j;
}

TEST_F(CudaVsCpu, SoftmaxOfRowsFarApartInMagnitude) {
  // Rows around 0, 1e4, -1e4 and 90: exp of the values unshifted, or shifted by a maximum that
  // includes a value of the next row, overflows or underflows to a NaN or zero row. Against float64
  // with backend_cuda_test.cpp's bound (1e-5 relative: expf's 2 ulp and the reordered sum).
  SCOPED_TRACE(trace());
  for (int64_t cols : {7, 300, 1000}) {
    const std::vector<float> base{0.0f, 1e4f, -1e4f, 90.0f};
    const int64_t rows = int64_t(base.size());
    auto s = normal(size_t(rows * cols), 2.0f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) s[size_t(r * cols + j)] += base[size_t(r)];
    Pair ps = put(s);
    gpu->softmax((float*)ps.g, rows, cols);
    const auto b = get_gpu<float>(ps, s.size());
    for (int64_t r = 0; r < rows; ++r) {
      const float* v = s.data() + r * cols;
      const double mx = *std::max_element(v, v + cols);
      double sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += std::exp(double(v[j]) - mx);
      for (int64_t j = 0; j < cols; ++j) {
        const double ref = std::exp(double(v[j]) - mx) / sum;
        ASSERT_NEAR(b[size_t(r * cols + j)], ref, 1e-5 * ref + 1e-37) << "cols " << cols << " row " << r;
      }
    }
  }
}

TEST_F(CudaVsCpu, RmsnormOfEveryWidthClass) {
  // The vector kernel takes widths that are multiples of 4 with 16-byte aligned rows; the scalar one
  // the rest: widths 1, 3, 10 and 250 (multiples of 5 or 2, not of 4), 1000 and 4100 both ways (the
  // misaligned copy starts one float in). 2e-5 relative, as backend_cuda_test.cpp says why.
  SCOPED_TRACE(trace());
  for (int64_t dim : {1, 3, 10, 250, 1000, 4100}) {
    for (int64_t offset : {0, 1}) {
      const int64_t rows = 3;
      auto x = normal(size_t(rows * dim + offset)), w = normal(size_t(dim + offset));
      Pair px = put(x), pw = put(w), py = zeros<float>(size_t(rows * dim + offset));
      auto at = [&](const Pair& p, bool on_gpu) { return (float*)(on_gpu ? p.g : p.c) + offset; };
      cpu->rmsnorm(at(px, false), at(pw, false), rows, dim, 1e-5f, at(py, false));
      gpu->rmsnorm(at(px, true), at(pw, true), rows, dim, 1e-5f, at(py, true));
      const auto a = get_cpu<float>(py, x.size()), b = get_gpu<float>(py, x.size());
      for (size_t i = size_t(offset); i < a.size(); ++i)
        ASSERT_NEAR(b[i], a[i], 2e-5 * std::fabs(a[i]) + 1e-30)
            << "dim " << dim << " offset " << offset << " i " << i;
    }
  }
}

TEST_F(CudaVsCpu, RopeKvWriteRefusesWhatRopeRefuses) {
  // The fused op (one launch) and the composed one (the backend's default: rope, rope, kv_write) must
  // accept the same rotary arguments: no rotated dimensions, an odd count, more than a head, no
  // inverse frequencies. The fused op also checks the head size against the cache's.
  SCOPED_TRACE(trace());
  auto cache = gpu->create_kv_cache(KvCacheDesc{KvFormat::bf16, 1, 1, 8, 16, 1});
  const std::vector<float> inv(8, 0.5f);
  Pair pinv = put(inv), pq = zeros<float>(8), pk = zeros<float>(8), pv = zeros<float>(8),
       ppos = put(std::vector<int32_t>{3});
  const float* f = (const float*)pinv.g;
  auto fused = [&](const RopeArgs& r) {
    gpu->rope_kv_write(*cache, 0, (float*)pq.g, (float*)pk.g, (const float*)pv.g, (const int32_t*)ppos.g,
                       (const int32_t*)ppos.g, 1, 1, r);
  };
  auto composed = [&](const RopeArgs& r) {
    gpu->Backend::rope_kv_write(*cache, 0, (float*)pq.g, (float*)pk.g, (const float*)pv.g,
                                (const int32_t*)ppos.g, (const int32_t*)ppos.g, 1, 1, r);
  };
  for (const RopeArgs& r : {RopeArgs{RopeStyle::half, 8, 0, f}, RopeArgs{RopeStyle::half, 8, 3, f},
                            RopeArgs{RopeStyle::half, 8, 10, f}, RopeArgs{RopeStyle::half, 8, 8, nullptr}}) {
    EXPECT_THROW(fused(r), Error) << "rot_dim " << r.rot_dim;
    EXPECT_THROW(composed(r), Error) << "rot_dim " << r.rot_dim;
  }
  EXPECT_THROW(fused(RopeArgs{RopeStyle::half, 4, 4, f}), Error);  // a head of 4 for a cache of 8
  fused(RopeArgs{RopeStyle::half, 8, 8, f});
  fused(RopeArgs{RopeStyle::half, 8, 2, f});  // a part of the head rotated
  gpu->synchronize();
}

TEST(CudaKvCache, GivesItsMemoryBack) {
  // Caches of an eighth of the free memory made and dropped twelve times: one that kept its memory
  // would run out by the ninth. (An eighth leaves room for whatever else shares the GPU, such as
  // scripts/mutate_cuda.py's other test processes.)
  MX8_REQUIRE_GPU();
  auto gpu = make_cuda_backend(0);
  size_t free_bytes = 0, total = 0;
  MX8_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  KvCacheDesc d{KvFormat::bf16, 1, 8, 128, 16, 0};
  d.n_pages = int(std::min<size_t>(free_bytes / 8 / (2 * d.page_bytes()), 1 << 30));
  ASSERT_GT(d.n_pages, 0);
  for (int i = 0; i < 12; ++i) {
    auto cache = gpu->create_kv_cache(d);
    gpu->synchronize();
  }
}

TEST_F(CudaVsCpu, SmallOpsReadTheirInputsAfterTheWait) {
  // Every launch may start while the kernel before it drains (programmatic dependent launch), so each
  // op must read its inputs only after griddepcontrol.wait. Before each op stands a writer that lets its
  // dependents start at once and stores the op's inputs (x, w, and the in-place buffer y) 2 ms later;
  // the op's output must equal that of the same launch on inputs already stored. The inputs start as
  // NaN, which would show in every op's output.
  SCOPED_TRACE(trace());
  cudaStream_t s;
  MX8_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int64_t n = 1024;  // 4 rows of 256 (the vector rmsnorm) or of 250 (the scalar one), 4 x 32 x 8 (rope)
  DeviceBuffer<float> x_final(n), w_final(n), x(n), w(n), y(n);
  x_final.upload(normal(size_t(n)));
  w_final.upload(normal(size_t(n)));
  DeviceBuffer<float> inv(4);
  inv.upload({0.7f, 0.2f, 0.05f, 0.01f});
  DeviceBuffer<int32_t> positions(4);
  positions.upload({3, 17, 400, 5});
  const RopeArgs r{RopeStyle::half, 8, 8, inv.get()};
  struct Op {
    const char* name;
    std::function<void()> launch;  // on x, w, y, stream s
  };
  const std::vector<Op> ops{
      {"rmsnorm, vector", [&] { cuda_impl::launch_rmsnorm(x.get(), w.get(), 4, 256, 1e-5f, y.get(), s); }},
      {"rmsnorm, scalar", [&] { cuda_impl::launch_rmsnorm(x.get(), w.get(), 4, 250, 1e-5f, y.get(), s); }},
      {"add", [&] { cuda_impl::launch_add(y.get(), x.get(), n, s); }},
      {"silu_mul", [&] { cuda_impl::launch_silu_mul(x.get(), w.get(), y.get(), n, s); }},
      {"softmax", [&] { cuda_impl::launch_softmax(y.get(), 4, 256, s); }},
      {"rope", [&] { cuda_impl::launch_rope(y.get(), positions.get(), 4, 32, r, s); }},
  };
  const size_t bytes = size_t(n) * sizeof(float);
  for (const Op& op : ops) {
    for (float* p : {x.get(), w.get(), y.get()}) MX8_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, bytes, s));  // NaN
    MX8_CUDA_CHECK(cudaStreamSynchronize(s));
    cuda::test::launch_late_copies(
        {{x.get(), x_final.get(), bytes}, {w.get(), w_final.get(), bytes}, {y.get(), w_final.get(), bytes}},
        2000, s);
    op.launch();
    const auto late = y.download();
    // The same launch on inputs stored first (copies ordered before it on s).
    for (auto [dst, src] :
         {std::pair{x.get(), x_final.get()}, {w.get(), w_final.get()}, {y.get(), w_final.get()}})
      MX8_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    op.launch();
    const auto plain = y.download();
    EXPECT_EQ(late, plain) << op.name;
    EXPECT_FALSE(std::isnan(plain[0])) << op.name;
  }
  MX8_CUDA_CHECK(cudaStreamDestroy(s));
}

}  // namespace
}  // namespace mx8::backend
