// Backend::swiglu_ffn on CUDA for one row (gemv_fp8_mma.cuh, launch_gemv_fp8_mma_ffn): the down
// projection does not wait for the gate/up pair's grid but polls h, which the pair's blocks first set
// to a NaN that arithmetic never makes. Its products are the plain launches', the same partial sums
// added in the same order, so every comparison here is bit for bit: any difference is a defect (a
// round staged before its rows were stored, a row left marked, a residual read early). Skips without
// a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cuda/gemv_fp8_mma.cuh"
#include "cuda/cuda_test_util.h"
#include "cuda/gemv_test_util.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"

namespace mx8::backend {
namespace {

using cuda::test::DeviceBuffer;
using gemv_test::dev;
using gemv_test::HostW;
using gemv_test::make_weight;
using gemv_test::normal;

constexpr int64_t kHidden = 14336;  // Llama-3-8B's FFN width: the overlapped down kernel takes k >= 7168

std::unique_ptr<Backend> cuda_backend(bool overlap) {
  if (!overlap) setenv("MX8_CUDA_FFN_OVERLAP", "0", 1);
  auto b = make_cuda_backend(0);
  unsetenv("MX8_CUDA_FFN_OVERLAP");
  return b;
}

void expect_bits_equal(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    ASSERT_EQ(a, b) << what << " [" << i << "]: " << got[i] << " vs " << want[i];
  }
}

struct Weights {
  std::unique_ptr<DeviceBuffer<uint8_t>> data, scales;
  WeightView view;
};
Weights device_weight(int64_t n, int64_t k, std::mt19937& rng) {
  const HostW h = make_weight(WeightFormat::fp8_block, ScaleType::ue8m0, n, k, rng);
  Weights w{dev(h.data), dev(h.scales), {}};
  w.view = WeightView{WeightFormat::fp8_block, n, k, w.data->get(), w.scales->get(), ScaleType::ue8m0};
  return w;
}

struct Ffn {
  Weights gate, up, down;
};
// Gate and up of kHidden x dim, down of rows x kHidden.
Ffn random_ffn(int64_t dim, int64_t rows, std::mt19937& rng) {
  return {device_weight(kHidden, dim, rng), device_weight(kHidden, dim, rng),
          device_weight(rows, kHidden, rng)};
}

using FfnOverlap = gemv_test::GemvTest<true>;

// The two kernels alone. First the down kernel started on its own stream while a host callback holds
// the pair's stream for 50 ms and h is all marked (0xff bytes are the NaN the pair writes), so that
// its rounds really poll; then both on one stream as swiglu_ffn launches them, on the h the first
// pair left (which the new pair must mark before the down kernel starts). Against the plain one-row
// launch of the same product.
TEST_F(FfnOverlap, DownKernelWaitsForThePairAndEqualsThePlainLaunch) {
  using namespace cuda_impl;
  SCOPED_TRACE("seed " + std::to_string(seed));
  // The model's gate/up shape; down with 1000 rows (63 tiles, the last one ragged): its grid leaves SMs
  // for the pair.
  const int64_t dim = 4096, rows = 1000;
  const Ffn f = random_ffn(dim, rows, rng);
  auto x = dev(normal(size_t(dim), rng));
  const std::vector<float> y0 = normal(size_t(rows), rng);
  auto h = dev(std::vector<float>(size_t(kHidden))), u = dev(std::vector<float>(size_t(kHidden)));
  auto y = dev(y0), y_plain = dev(y0);
  cudaStream_t pair_stream, down_stream;
  MX8_CUDA_CHECK(cudaStreamCreateWithFlags(&pair_stream, cudaStreamNonBlocking));
  MX8_CUDA_CHECK(cudaStreamCreateWithFlags(&down_stream, cudaStreamNonBlocking));
  const MatmulInput in{x->get(), nullptr, 1};
  const MatmulTarget gate{f.gate.view, h->get(), nullptr}, up{f.up.view, u->get(), nullptr};
  const MatmulTarget down{f.down.view, y->get(), nullptr}, down_plain{f.down.view, y_plain->get(), nullptr};
  ASSERT_TRUE(gemv_fp8_mma_ffn_applies(in, gate, up, down));
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    if (round == 0) {
      MX8_CUDA_CHECK(cudaMemset(h->get(), 0xff, size_t(kHidden) * 4));
      MX8_CUDA_CHECK(cudaDeviceSynchronize());
      MX8_CUDA_CHECK(cudaLaunchHostFunc(
          pair_stream, [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(50)); }, nullptr));
      launch_gemv_fp8_mma_ffn_pair(in, gate, up, pair_stream);
      launch_gemv_fp8_mma_ffn_down(h->get(), down, true, down_stream);
    } else {
      x->upload(normal(size_t(dim), rng));  // a new h: the old one's rows must not be taken for it
      launch_gemv_fp8_mma_ffn(in, gate, up, down, true, down_stream);
    }
    MX8_CUDA_CHECK(cudaDeviceSynchronize());
    launch_gemv_fp8_mma(MatmulInput{h->get(), nullptr, 1, true}, &down_plain, 1, 0, 1, down_stream);
    MX8_CUDA_CHECK(cudaDeviceSynchronize());
    expect_bits_equal(y->download(), y_plain->download(), "y");
  }
  cudaStreamDestroy(pair_stream);
  cudaStreamDestroy(down_stream);
}

// Three FFN layers through the backend, as the model calls them (the fused rmsnorm in, the residual
// accumulated), with the overlap and without (MX8_CUDA_FFN_OVERLAP=0): the same x bit for bit. Then
// as a recorded step, replayed with new inputs.
TEST_F(FfnOverlap, BackendLayersEqualThePlainPathRecordedAndNot) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t dim = 256;  // a narrow model: the pair takes its grouped kernel
  std::vector<Ffn> layers;
  for (int l = 0; l < 3; ++l) layers.push_back(random_ffn(dim, dim, rng));
  std::vector<float> norm_w = normal(size_t(dim), rng);
  for (float& v : norm_w) v = 1.0f + 0.25f * v;
  auto norm = dev(norm_w);
  auto overlap = cuda_backend(true), plain = cuda_backend(false);
  struct Buffers {
    std::unique_ptr<DeviceBuffer<float>> x, gate, up;
  };
  auto buffers = [&] {
    return Buffers{dev(std::vector<float>(size_t(dim))), dev(std::vector<float>(size_t(kHidden))),
                   dev(std::vector<float>(size_t(kHidden)))};
  };
  Buffers bo = buffers(), bp = buffers();
  auto run = [&](Backend& b, Buffers& m) {
    for (const Ffn& f : layers) {
      const MatmulInput in{m.x->get(), nullptr, 1, false, norm->get(), 1e-5f};
      const MatmulTarget gate{f.gate.view, m.gate->get(), nullptr}, up{f.up.view, m.up->get(), nullptr},
          down{f.down.view, m.x->get(), nullptr};
      ASSERT_TRUE(cuda_impl::gemv_fp8_mma_ffn_applies(in, gate, up, down));
      b.swiglu_ffn(in, gate, up, down, true);
    }
  };
  for (int pass = 0; pass < 3; ++pass) {
    SCOPED_TRACE("pass " + std::to_string(pass));
    const std::vector<float> x0 = normal(size_t(dim), rng);
    bo.x->upload(x0);
    bp.x->upload(x0);
    if (pass == 0) {
      run(*overlap, bo);
    } else if (!overlap->replay(7)) {  // pass 1 records, pass 2 replays
      overlap->begin_recording(7);
      run(*overlap, bo);
      overlap->end_recording();
    }
    run(*plain, bp);
    overlap->synchronize();
    plain->synchronize();
    expect_bits_equal(bo.x->download(), bp.x->download(), "x");
  }
}

// Non-finite activations: NaN and Inf in x make NaN rows of h, which must not be taken for rows not yet
// made (arithmetic makes only the canonical NaN, never the mark), so the down kernel ends, with the
// plain launches' bits.
TEST_F(FfnOverlap, NonFiniteActivationsEndAndEqualThePlainLaunches) {
  using namespace cuda_impl;
  SCOPED_TRACE("seed " + std::to_string(seed));
  const int64_t dim = 4096, rows = 1000;
  const Ffn f = random_ffn(dim, rows, rng);
  std::vector<float> xv = normal(size_t(dim), rng);
  xv[7] = std::numeric_limits<float>::quiet_NaN();
  xv[1000] = std::numeric_limits<float>::infinity();
  xv[3000] = -std::numeric_limits<float>::infinity();
  auto x = dev(xv);
  const std::vector<float> y0 = normal(size_t(rows), rng);
  auto y = dev(y0), y_plain = dev(y0);
  auto h = dev(std::vector<float>(size_t(kHidden))), hp = dev(std::vector<float>(size_t(kHidden))),
       u = dev(std::vector<float>(size_t(kHidden)));
  const MatmulInput in{x->get(), nullptr, 1};
  const MatmulTarget up{f.up.view, u->get(), nullptr};
  const MatmulTarget down{f.down.view, y->get(), nullptr}, down_plain{f.down.view, y_plain->get(), nullptr};
  launch_gemv_fp8_mma_swiglu(in, {f.gate.view, hp->get(), nullptr}, up, nullptr);
  launch_gemv_fp8_mma(MatmulInput{hp->get(), nullptr, 1, true}, &down_plain, 1, 0, 1, nullptr);
  launch_gemv_fp8_mma_ffn(in, {f.gate.view, h->get(), nullptr}, up, down, true, nullptr);
  MX8_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> hv = h->download();
  size_t nans = 0;
  for (float v : hv) nans += std::isnan(v) ? 1 : 0;
  EXPECT_GT(nans, 0u) << "expected NaN rows of h from the non-finite x";
  expect_bits_equal(hv, hp->download(), "h");
  expect_bits_equal(y->download(), y_plain->download(), "y");
}

TEST_F(FfnOverlap, RejectsADownProjectionOfAnotherWidth) {
  std::vector<uint8_t> zeros(256 * 256, 0);
  auto w = dev(zeros), s = dev(std::vector<uint8_t>(16, 127));
  auto y = dev(std::vector<float>(256, 0.0f)), x = dev(std::vector<float>(256, 0.0f));
  const WeightView a{WeightFormat::fp8_block, 128, 256, w->get(), s->get(), ScaleType::ue8m0};
  EXPECT_THROW(backend->swiglu_ffn({x->get(), nullptr, 1}, {a, y->get()}, {a, y->get()}, {a, y->get()}, true),
               Error);
}

}  // namespace
}  // namespace mx8::backend
