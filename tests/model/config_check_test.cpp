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
}

}  // namespace
