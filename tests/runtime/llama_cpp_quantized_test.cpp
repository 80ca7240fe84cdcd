// A file llama.cpp wrote, decoded as llama.cpp decodes it: stories260K quantized by llama.cpp's own
// quantizer to Q5_0 (its fallbacks included: F16 for ffn_down, whose 172-wide rows are not whole
// 32-value blocks, and Q8_0 for the output head), decoded greedily from BOS by mx8 on the CPU, gives
// the text llama.cpp's own runtime generates from that file, byte for byte, for 200 tokens
// (tests/data/ggml/, made as docs/FIXTURES.md says; llama.cpp's example prints the BOS piece "<s> "
// before the text and a newline after it, which the fixture leaves out). The two runtimes share no code:
// llama.cpp multiplies Q5_0 weights by activations it rounds to Q8_0, mx8 by f32 activations, so the text
// agreeing to the end also says no greedy step of this file is a near tie.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "mx8/backend/backend.h"
#include "mx8/io/gguf.h"
#include "stories_greedy.h"

namespace {

const std::string kData = std::string(MX8_SOURCE_DIR) + "/tests/data/ggml/";

TEST(LlamaCppQuantized, Q5_0Stories260KDecodesToLlamaCppsGreedyText) {
  const std::string model = kData + "stories260K.Q5_0.gguf";
  // The file holds what the test claims to exercise.
  int q5_0 = 0, f16 = 0, q8_0 = 0;
  for (const mx8::io::GgufTensor& t : mx8::io::GgufFile::open(model).tensors()) {
    q5_0 += t.type == mx8::io::GgmlType::kQ5_0;
    f16 += t.type == mx8::io::GgmlType::kF16;
    q8_0 += t.type == mx8::io::GgmlType::kQ8_0;
  }
  EXPECT_EQ(q5_0, 31);  // token_embd, and q, k, v, o, gate and up of each of the 5 layers
  EXPECT_EQ(f16, 5);    // every layer's ffn_down
  EXPECT_EQ(q8_0, 1);   // output.weight
  std::ifstream in(kData + "stories260K.Q5_0.llama_cpp_greedy200.txt", std::ios::binary);
  std::stringstream expected;
  expected << in.rdbuf();
  ASSERT_GT(expected.str().size(), 400u);
  auto be = mx8::backend::make_cpu_backend(2);
  const mx8::testing::GreedyResult r = mx8::testing::generate_greedy(
      model, *be, mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200);
  EXPECT_EQ(r.text, expected.str());
}

}  // namespace
