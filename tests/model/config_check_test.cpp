// A config.json whose numbers would not fail but make every output NaN (a RoPE base <= 0, a negative
// rmsnorm epsilon, RoPE scaling factors that divide by zero) is refused when the config is read, with
// the setting named; the valid neighbours of each bad value load.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "mx8/error.h"
#include "mx8/model/llama.h"

namespace {

namespace fs = std::filesystem;

// A folder with a small Llama config.json, `extra` spliced in as its last members.
std::string folder_with(const std::string& extra) {
  const fs::path dir = fs::temp_directory_path() / ("mx8_config_check_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json")
      << R"({"model_type":"llama","vocab_size":32,"hidden_size":16,"num_hidden_layers":1,)"
      << R"("num_attention_heads":2,"num_key_value_heads":1,"intermediate_size":32,)"
      << R"("max_position_embeddings":64)" << extra << "}";
  return dir.string();
}

std::string error_of(const std::string& extra) {
  const std::string dir = folder_with(extra);
  std::string what;
  try {
    mx8::model::read_llama_config(dir);
  } catch (const mx8::Error& e) {
    what = e.what();
  }
  fs::remove_all(dir);
  return what;
}

TEST(ConfigCheck, NumbersThatWouldMakeOutputsNaNAreErrors) {
  EXPECT_NE(error_of(R"(,"rope_theta":-1)").find("rope_theta"), std::string::npos);
  EXPECT_NE(error_of(R"(,"rope_theta":0)").find("rope_theta"), std::string::npos);
  EXPECT_NE(error_of(R"(,"rms_norm_eps":-1e-5)").find("rms_norm_eps"), std::string::npos);
  EXPECT_NE(error_of(R"(,"rope_scaling":{"type":"linear","factor":0})").find("linear RoPE"),
            std::string::npos);
  EXPECT_NE(error_of(R"(,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":4,)"
                     R"("high_freq_factor":4,"original_max_position_embeddings":32})")
                .find("llama3 RoPE"),
            std::string::npos);
  // The valid neighbours load.
  EXPECT_EQ(error_of(R"(,"rope_theta":500000,"rms_norm_eps":0)"), "");
  EXPECT_EQ(error_of(R"(,"rope_scaling":{"type":"linear","factor":2})"), "");
  EXPECT_EQ(error_of(R"(,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,)"
                     R"("high_freq_factor":4,"original_max_position_embeddings":32})"),
            "");
}

// Found by fuzz/model_config_fuzz.cpp: sizes whose products overflow 64 bits loaded, and rope_scaling
// fields were read with nlohmann's value<T>(), whose float-to-integer conversion of 1e30 is undefined
// behaviour and whose type errors were not mx8 errors.
TEST(ConfigCheck, SizesPastTheBoundsAndMistypedScalingFieldsAreErrors) {
  EXPECT_NE(error_of(R"(,"hidden_size":1099511627776)").find("past mx8's bounds"), std::string::npos);
  EXPECT_NE(error_of(R"(,"vocab_size":16777217)").find("past mx8's bounds"), std::string::npos);
  EXPECT_EQ(error_of(R"(,"vocab_size":16777216)"), "");  // the bound itself loads
  EXPECT_NE(error_of(R"(,"rope_scaling":{"rope_type":"llama3","original_max_position_embeddings":1e30})")
                .find("rope_scaling.original_max_position_embeddings 1e+30 is not an integer"),
            std::string::npos);
  EXPECT_NE(error_of(R"(,"rope_scaling":{"type":"linear","factor":"8"})")
                .find(R"(rope_scaling.factor "8" is not a number)"),
            std::string::npos);
  EXPECT_NE(error_of(R"(,"rope_scaling":{"rope_type":7})").find("rope_scaling.rope_type 7 is not a string"),
            std::string::npos);
  EXPECT_NE(
      error_of(
          R"(,"rope_scaling":{"rope_type":"yarn","factor":4,"original_max_position_embeddings":9000000000000000000})")
          .find("YaRN factor"),
      std::string::npos);
  EXPECT_NE(
      error_of(R"(,"rope_scaling":{"rope_type":"yarn","factor":4,"beta_fast":-1})").find("YaRN beta_fast"),
      std::string::npos);
  EXPECT_EQ(
      error_of(R"(,"rope_scaling":{"rope_type":"yarn","factor":4,"original_max_position_embeddings":16})"),
      "");
  // Dynamic NTK needs a factor >= 1 and a window to run up to (max_position_embeddings, 64 here).
  EXPECT_NE(error_of(R"(,"rope_scaling":{"rope_type":"dynamic","factor":0.5})").find("dynamic RoPE"),
            std::string::npos);
  EXPECT_NE(error_of(R"(,"max_position_embeddings":0,"rope_scaling":{"rope_type":"dynamic","factor":2})")
                .find("dynamic RoPE"),
            std::string::npos);
  EXPECT_EQ(error_of(R"(,"rope_scaling":{"rope_type":"dynamic","factor":2})"), "");
}

// Every size bound is inclusive: the bound loads, one past it is refused; a zero size is refused.
TEST(ConfigCheck, EachSizeBoundIsInclusive) {
  const std::string past = "past mx8's bounds";
  struct Bound {
    std::string field, value, beyond, others;
  };
  for (const Bound& b :
       {Bound{"hidden_size", "262144", "262145", R"(,"head_dim":8)"},
        Bound{"intermediate_size", "1048576", "1048577", ""}, Bound{"num_hidden_layers", "4096", "4097", ""},
        Bound{"num_attention_heads", "4096", "4097", R"(,"head_dim":8)"},
        Bound{"head_dim", "4096", "4097", ""}}) {
    EXPECT_EQ(error_of(",\"" + b.field + "\":" + b.value + b.others), "") << b.field;
    EXPECT_NE(error_of(",\"" + b.field + "\":" + b.beyond + b.others).find(past), std::string::npos)
        << b.field;
  }
  EXPECT_NE(error_of(R"(,"head_dim":0)").find("non-positive size"), std::string::npos);
  EXPECT_NE(error_of(R"(,"intermediate_size":0)").find("non-positive size"), std::string::npos);
  const std::string yarn =
      R"(,"rope_scaling":{"rope_type":"yarn","factor":4,"original_max_position_embeddings":)";
  EXPECT_EQ(error_of(yarn + "1099511627776}"), "");  // 2^40 positions
  EXPECT_NE(error_of(yarn + "1099511627777}").find("YaRN factor"), std::string::npos);
}

// A window the config asks for reaches the model's config (a Llama or Mistral config.json applies it
// to every layer; Qwen's need use_sliding_window, tested with the Qwen fixtures).
TEST(ConfigCheck, SlidingWindowReachesTheModelConfig) {
  for (int window : {0, 16}) {
    const std::string dir = folder_with(R"(,"sliding_window":)" + std::to_string(window));
    const mx8::model::LlamaConfig c = mx8::model::read_llama_config(dir);
    fs::remove_all(dir);
    EXPECT_EQ(c.sliding_window, window);
  }
}

}  // namespace
