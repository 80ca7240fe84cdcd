// Teacher-forced scoring (`mx8 eval`'s forward passes): every token scored once, in order, by the
// logits of the window row before it; windows of long documents; against Hugging Face transformers.
#include "mx8/eval/teacher_forcing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "model/hf_fixture_util.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/eval/comparison.h"
#include "mx8/model/llama.h"

namespace {

using namespace mx8;

const std::string kStories = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

std::unique_ptr<model::LlamaModel> load(backend::Backend& be, const std::string& path, int max_tokens) {
  model::LoadOptions lo;
  lo.max_tokens_per_step = max_tokens;
  return model::load_llama(path, be, lo);
}

std::vector<int32_t> document(size_t n, uint32_t seed) {
  std::vector<int32_t> d{1};  // BOS
  for (size_t i = 1; i < n; ++i) d.push_back(int32_t(3 + (seed * 2654435761u + i * 40503u) % 500));
  return d;
}

TEST(TeacherForcing, EveryTokenScoredOnceInOrder) {
  auto be = backend::make_cpu_backend(2);
  auto m = load(*be, kStories, 48);
  const std::vector<std::vector<int32_t>> docs{document(1, 1), document(5, 2), document(300, 3),
                                               document(2, 4), document(1000, 5)};
  eval::Windowing w{128, 64, 48, 1};  // chunks of 48 do not divide the windows: ragged last chunks
  std::vector<int32_t> seen;
  const int64_t n = eval::score_documents(*m, *be, backend::KvFormat::f32, docs, w, 0,
                                          [&](const float*, int32_t t) { seen.push_back(t); });
  std::vector<int32_t> want;
  for (const auto& d : docs) want.insert(want.end(), d.begin() + 1, d.end());
  EXPECT_EQ(seen, want);
  EXPECT_EQ(n, int64_t(want.size()));
  EXPECT_EQ(eval::scored_positions(docs, 0), n);
  EXPECT_EQ(eval::scored_positions(docs, 100), 100);
  seen.clear();
  EXPECT_EQ(eval::score_documents(*m, *be, backend::KvFormat::f32, docs, w, 100,
                                  [&](const float*, int32_t t) { seen.push_back(t); }),
            100);
  EXPECT_EQ(seen, std::vector<int32_t>(want.begin(), want.begin() + 100));
}

TEST(TeacherForcing, EachPositionHasItsWindowsContext) {
  // A document of 40 tokens in windows of 16 (stride 8): token j is scored by the window that starts
  // at the last multiple of 8 from which j - 1 still fits, read as BOS + the document from there. Each
  // scored row must be that forward pass's last row, computed here on its own.
  auto be = backend::make_cpu_backend(2);
  auto m = load(*be, kStories, 64);
  const std::vector<int32_t> d = document(40, 9);
  eval::Windowing w{16, 8, 5, 1};
  std::vector<std::vector<float>> rows;
  eval::score_documents(*m, *be, backend::KvFormat::f32, {d}, w, 0,
                        [&](const float* l, int32_t) { rows.emplace_back(l, l + m->config().vocab); });
  ASSERT_EQ(rows.size(), d.size() - 1);
  // Window 0 = d[0, 16) scores 1..15 (it starts with the document's own BOS); window 1 = BOS + d[8, 23)
  // scores 16..22; window 2 = BOS + d[16, 31) scores 23..30; window 3 = BOS + d[24, 39) scores 31..38;
  // window 4 = BOS + d[32, 40) scores 39.
  auto begin_of = [](size_t j) -> size_t { return j < 16 ? 0 : j < 23 ? 8 : j < 31 ? 16 : j < 39 ? 24 : 32; };
  float worst = 0;
  for (size_t j = 1; j < d.size(); ++j) {
    const size_t b = begin_of(j);
    std::vector<int32_t> ctx;
    if (b > 0) ctx.push_back(1);
    ctx.insert(ctx.end(), d.begin() + long(b), d.begin() + long(j));
    const std::vector<float> want =
        hf_test::prompt_logits(*m, *be, ctx, {int32_t(ctx.size()) - 1}, backend::KvFormat::f32)[0];
    float diff = 0;
    for (size_t v = 0; v < want.size(); ++v) diff = std::max(diff, std::abs(rows[j - 1][v] - want[v]));
    worst = std::max(worst, diff);
    // The same tokens at the same positions, in other chunks: a chunk of one row takes the GEMV kernels
    // and a longer one the GEMM kernels, whose f32 sums differ in order (~1e-6 of logits up to ~10).
    // A wrong window (other context, a missing BOS) moves the logits by 1e-2 or more.
    EXPECT_LE(diff, 1e-4f) << "token " << j << " (window from " << b << ")";
  }
  std::printf("[ windows ] largest logit difference to the separate forward passes: %g\n", worst);
}

TEST(TeacherForcing, NllMatchesTransformers) {
  // llama31_gqa's 33-token prompt with transformers' logits at positions 29..32 (docs/FIXTURES.md):
  // the negative log-likelihood of prompt tokens 30..32 from transformers' logits and from mx8's.
  const std::string dir = hf_test::kDir + "/llama31_gqa";
  const auto ref = hf_test::read_json(dir + "/reference.json");
  const std::vector<int32_t> prompt = ref["prompts"][2].get<std::vector<int32_t>>();
  const std::vector<int32_t> pos = ref["logits_positions"][2].get<std::vector<int32_t>>();
  ASSERT_EQ(prompt.size(), 33u);
  auto be = backend::make_cpu_backend(2);
  auto m = load(*be, dir, 64);
  std::vector<double> ours;
  eval::score_documents(*m, *be, backend::KvFormat::f32, {prompt}, eval::Windowing{64, 32, 64, 1}, 0,
                        [&](const float* l, int32_t t) {
                          eval::Reference r(m->config().vocab);
                          r.add(l, t);
                          ours.push_back(r.summary().nll);
                        });
  ASSERT_EQ(ours.size(), 32u);
  for (size_t i = 0; i + 1 < pos.size(); ++i) {
    const std::vector<float> hf = ref["logits"][2][i].get<std::vector<float>>();
    eval::Reference r(int64_t(hf.size()));
    r.add(hf.data(), prompt[size_t(pos[i]) + 1]);
    // The fixture test holds mx8's logits to transformers' within 1e-4 each; an NLL is one logit minus
    // the log-sum-exp of all of them, so it moves by at most twice that.
    EXPECT_NEAR(ours[size_t(pos[i])], r.summary().nll, 2e-4) << "position " << pos[i];
  }
}

TEST(TeacherForcing, BadWindowsAndTokensAreRefused) {
  auto be = backend::make_cpu_backend(1);
  auto m = load(*be, kStories, 32);
  const std::vector<std::vector<int32_t>> docs{document(10, 1)};
  auto run = [&](eval::Windowing w, std::vector<std::vector<int32_t>> d) {
    eval::score_documents(*m, *be, backend::KvFormat::f32, d, w, 0, [](const float*, int32_t) {});
  };
  auto message = [&](eval::Windowing w, std::vector<std::vector<int32_t>> d) -> std::string {
    try {
      run(w, d);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message({3, 1, 16, 1}, docs).find("at least 4"), std::string::npos);
  EXPECT_NE(message({16, 0, 16, 1}, docs).find("--stride 0"), std::string::npos);
  EXPECT_NE(message({16, 15, 16, 1}, docs).find("--stride 15"), std::string::npos);
  EXPECT_NE(message({16, 8, 64, 1}, docs).find("--chunk 64"), std::string::npos);
  EXPECT_NE(message({16, 8, 16, 1}, {{1, 2, 512}}).find("token id 512"), std::string::npos);
  EXPECT_NE(message({16, 8, 16, 1}, {{1, -1}}).find("token id -1"), std::string::npos);
  EXPECT_NO_THROW(run({16, 14, 16, 1}, docs));
  EXPECT_NO_THROW(run({4, 2, 4, 1}, docs));  // the smallest window
  // A bad token anywhere is refused before any document is scored (the model would refuse it too,
  // but only when its window came, after the earlier documents' work).
  int scored = 0;
  try {
    eval::score_documents(*m, *be, backend::KvFormat::f32, {document(10, 1), {1, 512}}, {16, 8, 16, 1}, 0,
                          [&](const float*, int32_t) { ++scored; });
    ADD_FAILURE() << "token 512 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the model's vocabulary of 512"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(scored, 0);
}

TEST(TeacherForcing, EmptyAndOneTokenDocumentsScoreNothing) {
  EXPECT_EQ(eval::scored_positions({{}, {1}, {1, 2, 3}, {}}, 0), 2);
  EXPECT_EQ(eval::scored_positions({{}, {}}, 0), 0);
  EXPECT_EQ(eval::scored_positions({{1, 2, 3}}, 1), 1);  // a limit of one position is a limit
}

}  // namespace
