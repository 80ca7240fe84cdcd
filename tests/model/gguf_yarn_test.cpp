// YaRN from GGUF metadata (llama.cpp's rope.scaling.type = yarn, factor, original_context_length):
// the same configuration as the qwen2_yarn Hugging Face fixture, written as a GGUF file, must give
// the same RoPE frequencies, attention factor and supported context as its config.json (which the
// fixture test checks against transformers). No GGUF with YaRN written by llama.cpp is available
// here, so the file is built field by field (GGUF v3: header, key-values, tensor infos, data).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gguf_bytes.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "mx8/model/llama.h"

namespace {

namespace fs = std::filesystem;

using mx8::test::GgufBytes;

// qwen2_yarn's shape: hidden 64, 2 layers, 2 heads over 1 kv head (head_dim 32), vocab 256,
// theta 10000, YaRN factor 4 over an original window of 32.
// `extra` adds key-value pairs (uint32 values) after the twelve.
std::vector<uint8_t> yarn_gguf(uint32_t original = 32,
                               const std::vector<std::pair<std::string, uint32_t>>& extra = {}) {
  GgufBytes g;
  g.header(1, 12 + extra.size());
  g.text("general.architecture", "qwen2");
  g.u32("general.alignment", 32);
  g.u32("qwen2.embedding_length", 64);
  g.u32("qwen2.block_count", 2);
  g.u32("qwen2.feed_forward_length", 128);
  g.u32("qwen2.attention.head_count", 2);
  g.u32("qwen2.attention.head_count_kv", 1);
  g.f32("qwen2.rope.freq_base", 10000.0f);
  g.u32("qwen2.context_length", 32);
  g.text("qwen2.rope.scaling.type", "yarn");
  g.f32("qwen2.rope.scaling.factor", 4.0f);
  g.u32("qwen2.rope.scaling.original_context_length", original);
  for (const auto& [key, value] : extra) g.u32(key, value);
  g.tensor_info("token_embd.weight", {64, 256}, 0, 0);  // F32
  while (g.b.size() % 32) g.b.push_back(0);
  g.b.resize(g.b.size() + 64 * 256 * 4, 0);
  return g.b;
}

fs::path write_temp(const std::vector<uint8_t>& bytes) {
  const fs::path path = fs::temp_directory_path() / ("mx8_yarn_" + std::to_string(::getpid()) + ".gguf");
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  return path;
}

TEST(GgufYarn, MatchesTheHuggingFaceConfig) {
  const std::string hf = std::string(MX8_SOURCE_DIR) + "/tests/data/hf/qwen2_yarn";
  if (!fs::exists(hf)) GTEST_SKIP() << hf << " absent";
  const fs::path path = write_temp(yarn_gguf());
  const mx8::model::LlamaConfig g = mx8::model::read_llama_config(path.string());
  const mx8::model::LlamaConfig h = mx8::model::read_llama_config(hf);
  fs::remove(path);
  EXPECT_EQ(g.arch, "qwen2");
  EXPECT_EQ(h.arch, "qwen2");
  EXPECT_EQ(g.vocab, 256);  // from token_embd.weight's shape: the file has no vocabulary
  EXPECT_TRUE(g.eos.empty());
  ASSERT_EQ(g.rope_scaling.type, mx8::model::RopeScaling::Type::yarn);
  EXPECT_EQ(g.rope_scaling.attention_factor, h.rope_scaling.attention_factor);
  EXPECT_EQ(mx8::model::supported_context(g), 128);
  EXPECT_EQ(mx8::model::supported_context(h), 128);
  // Same inputs, same f32 arithmetic: the frequencies are equal bit for bit (the fixture test holds
  // the HF side to transformers' own inv_freq).
  EXPECT_EQ(mx8::model::rope_inv_freq(g), mx8::model::rope_inv_freq(h));
}

// An original context of 0 would make the ramp meaningless: an error that names YaRN.
TEST(GgufYarn, ZeroOriginalContextIsAnError) {
  const fs::path path = write_temp(yarn_gguf(0));
  try {
    mx8::model::read_llama_config(path.string());
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("YaRN factor 4.000000 (must be finite, >= 1) or original context 0"),
              std::string::npos)
        << e.what();
  }
  fs::remove(path);
}

// llama.cpp's optional YaRN keys: the band limits are read; the attention-factor keys, which llama.cpp
// and transformers read differently, are refused by name unless they hold the standard value.
TEST(GgufYarn, OptionalKeys) {
  auto config_with = [](const std::vector<std::pair<std::string, uint32_t>>& extra) {
    const fs::path path = write_temp(yarn_gguf(32, extra));
    struct Removed {
      fs::path p;
      ~Removed() { fs::remove(p); }
    } removed{path};
    return mx8::model::read_llama_config(path.string());
  };
  const mx8::model::LlamaConfig plain = config_with({});
  const mx8::model::LlamaConfig betas =
      config_with({{"qwen2.rope.scaling.yarn_beta_fast", 16}, {"qwen2.rope.scaling.yarn_beta_slow", 2}});
  EXPECT_EQ(betas.rope_scaling.beta_fast, 16.0);
  EXPECT_EQ(betas.rope_scaling.beta_slow, 2.0);
  EXPECT_NE(mx8::model::rope_inv_freq(betas), mx8::model::rope_inv_freq(plain));  // the ramp moved
  EXPECT_EQ(
      config_with({{"qwen2.rope.scaling.yarn_ext_factor", 1}, {"qwen2.rope.scaling.yarn_log_multiplier", 0}})
          .rope_scaling.attention_factor,
      plain.rope_scaling.attention_factor);
  for (const char* refused : {"yarn_attn_factor", "yarn_ext_factor", "yarn_log_multiplier"}) {
    try {
      config_with({{std::string("qwen2.rope.scaling.") + refused,
                    std::string(refused) == "yarn_attn_factor" ? 1u : 2u}});
      ADD_FAILURE() << "expected an error for " << refused;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("llama.cpp and transformers read them differently"),
                std::string::npos)
          << e.what();
    }
  }
}

// Token ids 0 are ids like any other: an end-of-sequence id of 0 is kept.
TEST(GgufConfig, EndOfSequenceIdZeroIsKept) {
  const fs::path path =
      write_temp(yarn_gguf(32, {{"tokenizer.ggml.eos_token_id", 0}, {"tokenizer.ggml.eot_token_id", 7}}));
  const mx8::model::LlamaConfig c = mx8::model::read_llama_config(path.string());
  fs::remove(path);
  EXPECT_EQ(c.eos, (std::vector<int32_t>{0, 7}));
}

// Loading names what is wrong: a tensor whose shape disagrees with the config, a tensor the file lacks.
TEST(GgufConfig, LoadErrorsNameTheTensor) {
  auto cpu = mx8::backend::make_cpu_backend(1);
  auto error_of = [&](const std::vector<uint8_t>& bytes) {
    const fs::path path = write_temp(bytes);
    std::string what;
    try {
      mx8::model::load_llama(path.string(), *cpu, {});
    } catch (const mx8::Error& e) {
      what = e.what();
    }
    fs::remove(path);
    return what;
  };
  EXPECT_NE(error_of(yarn_gguf(32, {{"qwen2.vocab_size", 255}})).find("tensor 'token_embd.weight' has shape"),
            std::string::npos);
  EXPECT_NE(error_of(yarn_gguf()).find("missing tensor 'output_norm.weight'"), std::string::npos);
}

}  // namespace
