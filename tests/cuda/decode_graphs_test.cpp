// Step recording on the CUDA backend (CUDA graphs, Backend::begin_recording / replay): a recorded
// step replays the same launches (bit-identical results, PDL edges included), is dropped when memory
// it may refer to is freed, and ops that cannot be recorded throw inside the bracket. The model's
// forward pass gives bit-identical logits with recording on and off. Skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/model/llama.h"

namespace mx8::backend {
namespace {

bool gpu_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Restores the process-wide recording switch when a test ends.
struct GraphsSwitch {
  bool was = cuda_impl::graphs_enabled();
  explicit GraphsSwitch(bool on) { cuda_impl::set_graphs_enabled(on); }
  ~GraphsSwitch() { cuda_impl::set_graphs_enabled(was); }
};

TEST(CudaDecodeGraphs, RecordReplayAndInvalidation) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  auto be = make_cuda_backend(0);
  GraphsSwitch on(true);
  const size_t n = 1000;
  std::vector<float> a(n), b(n), out(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = float(i);
    b[i] = 1.0f;
  }
  float* da = static_cast<float*>(be->alloc(n * 4));
  float* db = static_cast<float*>(be->alloc(n * 4));
  be->upload(da, a.data(), n * 4);
  be->upload(db, b.data(), n * 4);
  EXPECT_FALSE(be->replay(7));
  be->begin_recording(7);
  // Two dependent launches: with PDL on, the second waits on the first through a programmatic edge.
  be->add(da, db, int64_t(n));
  be->add(da, db, int64_t(n));
  be->end_recording();  // runs them once
  be->download(out.data(), da, n * 4);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], float(i) + 2) << i;
  ASSERT_TRUE(be->replay(7));
  ASSERT_TRUE(be->replay(7));
  be->download(out.data(), da, n * 4);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], float(i) + 6) << i;
  EXPECT_FALSE(be->replay(8));

  // Inside a bracket, an upload would record a copy from the staging ring (reused afterwards) and a
  // synchronize would stall the capture: both throw; the bracket is then discarded.
  be->begin_recording(9);
  EXPECT_THROW(be->upload(da, a.data(), n * 4), Error);
  EXPECT_THROW(be->synchronize(), Error);
  be->discard_recording();
  EXPECT_FALSE(be->replay(9));
  be->add(da, db, int64_t(n));  // the stream works as before
  be->download(out.data(), da, n * 4);
  EXPECT_EQ(out[5], 5.0f + 7);

  // Freeing any backend memory drops the recorded steps (they may point at it).
  be->free(be->alloc(64));
  EXPECT_FALSE(be->replay(7));
  be->free(da);
  be->free(db);
}

TEST(CudaDecodeGraphs, MatmulFusedFallbackRecordsWithScratch) {
  // m = 17 is past the grouped GEMV: matmul_fused composes with backend scratch, which must be valid
  // at every replay (it is sized on the first call, inside the recording here).
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  auto be = make_cuda_backend(0);
  GraphsSwitch on(true);
  const int64_t m = 17, n = 24, k = 40;
  std::vector<float> w(size_t(n * k), 0.5f), x(size_t(m * k), 1.0f), up(size_t(m * k), 2.0f),
      y(size_t(m * n), 1.0f);
  void* dw = be->alloc(w.size() * 4);
  float* dx = static_cast<float*>(be->alloc(x.size() * 4));
  float* du = static_cast<float*>(be->alloc(up.size() * 4));
  float* dy = static_cast<float*>(be->alloc(y.size() * 4));
  be->upload(dw, w.data(), w.size() * 4);
  be->upload(dx, x.data(), x.size() * 4);
  be->upload(du, up.data(), up.size() * 4);
  be->upload(dy, y.data(), y.size() * 4);
  MatmulTarget t{WeightView{WeightFormat::f32, n, k, dw, nullptr, ScaleType::ue8m0}, dy, nullptr};
  for (int rep = 0; rep < 3; ++rep) {
    if (!be->replay(11)) {
      be->begin_recording(11);
      be->matmul_fused({dx, du, m, true}, &t, 1);
      be->end_recording();
    }
  }
  std::vector<float> got(y.size());
  be->download(got.data(), dy, got.size() * 4);
  // Each run adds k * 0.5 * silu(1) * 2 = 40 * silu(1) to every output.
  std::vector<float> cpu_y = y;
  auto cpu = make_cpu_backend(1);
  for (int rep = 0; rep < 3; ++rep) {
    MatmulTarget tc{WeightView{WeightFormat::f32, n, k, w.data(), nullptr, ScaleType::ue8m0}, cpu_y.data(),
                    nullptr};
    cpu->matmul_fused({x.data(), up.data(), m, true}, &tc, 1);
  }
  for (size_t i = 0; i < got.size(); ++i)
    // silu through CUDA's expf vs glibc's (<= 2 ulp) summed over k = 40 equal terms and 3 accumulations:
    // 1e-5 relative covers it; a missing replay or scratch content would be off by ~1/3.
    ASSERT_NEAR(got[i], cpu_y[i], 1e-5 * std::fabs(cpu_y[i])) << i;
  be->free(dw);
  be->free(dx);
  be->free(du);
  be->free(dy);
}

std::string repo_file(const std::string& rel) {
  std::string p = std::string(MX8_SOURCE_DIR) + "/" + rel;
  return std::filesystem::exists(p) ? p : rel;
}

// A 5-token prompt in one step (logits of rows 2 and 4: the gather path), then `steps` decode steps of
// one token, on a fresh KV cache; returns every step's logits.
std::vector<std::vector<float>> decode(model::LlamaModel& m, Backend& be, KvFormat kvf, int steps) {
  const model::LlamaConfig& c = m.config();
  const int page = 16, pages = (5 + steps + page - 1) / page + 1;
  auto kv =
      be.create_kv_cache(KvCacheDesc{kvf, int(c.n_layers), int(c.n_kv_heads), int(c.head_dim), page, pages});
  model::StepBatch b;
  b.max_pages_per_seq = pages;
  for (int i = 0; i < pages; ++i) b.block_tables.push_back(i);
  std::vector<std::vector<float>> out;
  b.tokens = {1, 50, 60, 70, 80};
  b.pos = {0, 1, 2, 3, 4};
  b.seq = std::vector<int32_t>(5, 0);
  b.slot = b.pos;
  b.kv_len = {1, 2, 3, 4, 5};
  b.logit_rows = {2, 4};
  out.emplace_back(size_t(2 * c.vocab));
  m.forward(b, *kv, out.back().data());
  b.seq = {0};
  b.logit_rows = {0};
  for (int s = 0; s < steps; ++s) {
    const int p = 5 + s;
    b.tokens = {int32_t((p * 37 + 3) % c.vocab)};
    b.pos = {p};
    b.slot = {p};
    b.kv_len = {p + 1};
    out.emplace_back(size_t(c.vocab));
    m.forward(b, *kv, out.back().data());
  }
  return out;
}

TEST(CudaDecodeGraphs, ModelLogitsBitIdenticalWithAndWithoutRecording) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  const std::string path = repo_file("models/stories260K.gguf");
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  auto be = make_cuda_backend(0);
  for (model::WeightMode wm : {model::WeightMode::as_given, model::WeightMode::fp8}) {
    SCOPED_TRACE(model::weight_mode_name(wm));
    model::LoadOptions lo;
    lo.weights = wm;
    lo.max_tokens_per_step = 16;
    auto m = model::load_llama(path, *be, lo);
    std::vector<std::vector<float>> off, on;
    {
      GraphsSwitch g(false);
      off = decode(*m, *be, KvFormat::bf16, 10);
    }
    {
      GraphsSwitch g(true);
      on = decode(*m, *be, KvFormat::bf16, 10);  // decode step 1 runs, step 2 records, 3.. replay
      ASSERT_EQ(on.size(), off.size());
      for (size_t s = 0; s < on.size(); ++s)
        EXPECT_EQ(std::memcmp(on[s].data(), off[s].data(), on[s].size() * 4), 0) << "step " << s;
    }
  }
}

// A small random Llama with Llama-3's head shape (128 dims, groups of 4) and dims that the tensor-core
// GEMMs take (multiples of 128).
model::LlamaConfig llama3_heads() {
  model::LlamaConfig c;
  c.arch = "llama";
  c.vocab = 512;
  c.dim = 256;
  c.n_layers = 2;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.head_dim = 128;
  c.ffn = 512;
  c.rope_theta = 500000.0;
  return c;
}

TEST(CudaDecodeGraphs, FusedAttentionAndGraphsBitIdenticalOnLlama3Heads) {
  // stories260K's heads (8 dims) take no fused attention; a random model with Llama-3's head shape
  // (128 dims, groups of 4) does. Reference: a backend created with MX8_CUDA_FUSED_ATTN=0 and graphs
  // off (rope_kv_write + attention, launched one by one); the same weights (same seed) on a default
  // backend with graphs on must give the same logits bit for bit.
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  const model::LlamaConfig c = llama3_heads();
  setenv("MX8_CUDA_FUSED_ATTN", "0", 1);
  auto plain = make_cuda_backend(0);
  unsetenv("MX8_CUDA_FUSED_ATTN");
  auto fused = make_cuda_backend(0);
  for (KvFormat kvf : {KvFormat::bf16, KvFormat::fp8}) {
    SCOPED_TRACE(kv_format_name(kvf));
    std::vector<std::vector<float>> ref, got;
    {
      GraphsSwitch g(false);
      auto m = model::make_random_llama(c, *plain, model::WeightMode::fp8, 16, 3);
      ref = decode(*m, *plain, kvf, 10);
    }
    {
      GraphsSwitch g(true);
      auto m = model::make_random_llama(c, *fused, model::WeightMode::fp8, 16, 3);
      got = decode(*m, *fused, kvf, 10);
    }
    ASSERT_EQ(got.size(), ref.size());
    for (size_t s = 0; s < got.size(); ++s)
      EXPECT_EQ(std::memcmp(got[s].data(), ref[s].data(), got[s].size() * 4), 0) << "step " << s;
  }
}

TEST(CudaDecodeGraphs, OverlappedFfnBitIdenticalInTheModel) {
  // An FFN width the overlapped swiglu_ffn takes (>= 7168; gemv_fp8_mma.cuh): its down projection polls
  // h instead of waiting for the pair's grid. Reference: a backend created with
  // MX8_CUDA_FFN_OVERLAP=0 and graphs off; the same weights (same seed) on a default backend with graphs
  // on (step 2 records, 3.. replay) must give the same logits bit for bit.
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  model::LlamaConfig c = llama3_heads();
  c.ffn = 7168;
  setenv("MX8_CUDA_FFN_OVERLAP", "0", 1);
  auto plain = make_cuda_backend(0);
  unsetenv("MX8_CUDA_FFN_OVERLAP");
  auto overlapped = make_cuda_backend(0);
  std::vector<std::vector<float>> ref, got;
  {
    GraphsSwitch g(false);
    auto m = model::make_random_llama(c, *plain, model::WeightMode::fp8, 16, 5);
    ref = decode(*m, *plain, KvFormat::bf16, 10);
  }
  {
    GraphsSwitch g(true);
    auto m = model::make_random_llama(c, *overlapped, model::WeightMode::fp8, 16, 5);
    got = decode(*m, *overlapped, KvFormat::bf16, 10);
  }
  ASSERT_EQ(got.size(), ref.size());
  for (size_t s = 0; s < got.size(); ++s)
    EXPECT_EQ(std::memcmp(got[s].data(), ref[s].data(), got[s].size() * 4), 0) << "step " << s;
}

// `seqs` sequences decoded together from position 0, `steps` steps of one token each (every step's
// logits of all rows).
std::vector<std::vector<float>> decode_batch(model::LlamaModel& m, Backend& be, int seqs, int steps) {
  const model::LlamaConfig& c = m.config();
  const int page = 16, pages = (steps + page - 1) / page + 1;
  auto kv = be.create_kv_cache(
      KvCacheDesc{KvFormat::bf16, int(c.n_layers), int(c.n_kv_heads), int(c.head_dim), page, seqs * pages});
  model::StepBatch b;
  b.max_pages_per_seq = pages;
  for (int i = 0; i < seqs * pages; ++i) b.block_tables.push_back(i);
  for (int q = 0; q < seqs; ++q) {
    b.seq.push_back(q);
    b.logit_rows.push_back(q);
  }
  std::vector<std::vector<float>> out;
  for (int p = 0; p < steps; ++p) {
    b.tokens.clear();
    b.slot.clear();
    for (int q = 0; q < seqs; ++q) {
      b.tokens.push_back(int32_t((p * 37 + 11 * q + 3) % c.vocab));
      b.slot.push_back(q * pages * page + p);
    }
    b.pos.assign(size_t(seqs), p);
    b.kv_len.assign(size_t(seqs), p + 1);
    out.emplace_back(size_t(seqs * c.vocab));
    m.forward(b, *kv, out.back().data());
  }
  return out;
}

// Decode steps of more rows than the GEMV takes (gemv_max_rows: 4 for FP8 weights, 1 for BF16) run the
// tensor-core GEMMs (FP8: activations quantized on the way; BF16: cuBLASLt on x's stacked planes);
// recorded and replayed, they give the same logits bit for bit. 6 sequences of Llama-3's head shape
// (dims that the GEMMs take: multiples of 128).
TEST(CudaDecodeGraphs, BatchedStepsOnTheFp8GemmsRecordBitIdentical) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  const model::LlamaConfig c = llama3_heads();
  auto be = make_cuda_backend(0);
  for (model::WeightMode wm : {model::WeightMode::fp8, model::WeightMode::mxfp8, model::WeightMode::bf16}) {
    SCOPED_TRACE(model::weight_mode_name(wm));
    auto m = model::make_random_llama(c, *be, wm, 16, 3);
    std::vector<std::vector<float>> off, on;
    {
      GraphsSwitch g(false);
      off = decode_batch(*m, *be, 6, 8);
    }
    {
      GraphsSwitch g(true);
      on = decode_batch(*m, *be, 6, 8);  // step 1 runs, step 2 records, 3.. replay
    }
    ASSERT_EQ(on.size(), off.size());
    for (size_t s = 0; s < on.size(); ++s) {
      EXPECT_EQ(std::memcmp(on[s].data(), off[s].data(), on[s].size() * 4), 0) << "step " << s;
      for (float v : on[s]) ASSERT_TRUE(std::isfinite(v)) << "step " << s;
    }
  }
}

// Four steps of one token of each of sequences 0..3, then a 4-token prompt chunk (all rows' logits)
// of each of sequences 4, 5 and 6: steps with the same token and logit-row counts on one KV cache.
std::vector<std::vector<float>> singles_then_chunks(model::LlamaModel& m, Backend& be) {
  const model::LlamaConfig& c = m.config();
  const int page = 16, pages = 1, seqs = 7;
  auto kv = be.create_kv_cache(
      KvCacheDesc{KvFormat::bf16, int(c.n_layers), int(c.n_kv_heads), int(c.head_dim), page, seqs * pages});
  model::StepBatch b;
  b.max_pages_per_seq = pages;
  for (int i = 0; i < seqs * pages; ++i) b.block_tables.push_back(i);
  b.logit_rows = {0, 1, 2, 3};
  std::vector<std::vector<float>> out;
  auto add = [&](int q, int p) {  // token at position p of sequence q
    b.tokens.push_back(int32_t((p * 37 + 11 * q + 3) % c.vocab));
    b.seq.push_back(q);
    b.pos.push_back(p);
    b.slot.push_back(q * pages * page + p);
    b.kv_len.push_back(p + 1);
  };
  auto step = [&](auto fill) {
    b.tokens.clear(), b.seq.clear(), b.pos.clear(), b.slot.clear(), b.kv_len.clear();
    fill();
    out.emplace_back(size_t(4 * c.vocab));
    m.forward(b, *kv, out.back().data());
  };
  for (int p = 0; p < 4; ++p)
    step([&] {
      for (int q = 0; q < 4; ++q) add(q, p);
    });
  for (int q = 4; q < 7; ++q)
    step([&] {
      for (int p = 0; p < 4; ++p) add(q, p);
    });
  return out;
}

// A step of one token per sequence takes the fused rope + K/V write + attention launch (each token is
// alone in its sequence), which a prompt chunk of one sequence must not (its tokens read rows that
// other clusters write), so the model keys its recordings on it: the singles are recorded at their
// second step and replayed after; a chunk with the same token and logit-row counts on the same cache
// must not replay them (the third chunk would replay its own recording). Graphs on must give the
// logits of graphs off, bit for bit, and finite.
TEST(CudaDecodeGraphs, ChunksDoNotReplayTheRecordingOfSingleTokens) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  const model::LlamaConfig c = llama3_heads();
  auto be = make_cuda_backend(0);
  auto m = model::make_random_llama(c, *be, model::WeightMode::fp8, 16, 7);
  std::vector<std::vector<float>> off, on;
  {
    GraphsSwitch g(false);
    off = singles_then_chunks(*m, *be);
  }
  {
    GraphsSwitch g(true);
    on = singles_then_chunks(*m, *be);
  }
  ASSERT_EQ(on.size(), off.size());
  for (size_t s = 0; s < on.size(); ++s) {
    EXPECT_EQ(std::memcmp(on[s].data(), off[s].data(), on[s].size() * 4), 0) << "step " << s;
    for (float v : on[s]) ASSERT_TRUE(std::isfinite(v)) << "step " << s;
  }
}

}  // namespace
}  // namespace mx8::backend
