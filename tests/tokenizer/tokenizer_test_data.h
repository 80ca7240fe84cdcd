// Where the tokenizer tests find their data. The committed copies live in tests/data/tokenizers
// (tokenizer.json files gzip-compressed, unpacked once per run into the temp folder with the
// system's gzip); ../shared/testdata/tokenizers is the fallback. Missing data -> "" (the test skips).
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace mx8::test {

namespace fs = std::filesystem;

inline fs::path tokenizer_data_dir() {
  return fs::path(MX8_SOURCE_DIR) / "tests" / "data" / "tokenizers";
}
inline fs::path shared_tokenizer_dir() {
  return fs::path(MX8_SOURCE_DIR) / ".." / "shared" / "testdata" / "tokenizers";
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A folder holding tokenizer.json and tokenizer_config.json of `name` (llama3, qwen3, deepseek_v3).
// The unpacked copy is cached in the temp folder under a name that changes with the .gz file, and
// written through a rename, so concurrent test processes share it safely.
inline fs::path hf_tokenizer_folder(const std::string& name) {
  fs::path committed = tokenizer_data_dir() / name;
  fs::path gz = committed / "tokenizer.json.gz";
  if (fs::exists(gz)) {
    auto stamp = fs::last_write_time(gz).time_since_epoch().count();
    fs::path out = fs::temp_directory_path() / "mx8_tokenizer_test_data" /
                   (name + "-" + std::to_string(fs::file_size(gz)) + "-" + std::to_string(stamp));
    if (!fs::exists(out / "tokenizer.json")) {
      fs::create_directories(out);
      std::string tmp_name = "tokenizer.json." + std::to_string(::getpid());
      fs::copy_file(committed / "tokenizer_config.json",
                    out / ("tokenizer_config.json." + std::to_string(::getpid())),
                    fs::copy_options::overwrite_existing);
      fs::rename(out / ("tokenizer_config.json." + std::to_string(::getpid())),
                 out / "tokenizer_config.json");
      std::string cmd = "gzip -dc '" + gz.string() + "' > '" + (out / tmp_name).string() + "'";
      if (std::system(cmd.c_str()) != 0) return {};
      fs::rename(out / tmp_name, out / "tokenizer.json");
    }
    return out;
  }
  fs::path shared = shared_tokenizer_dir() / name;
  if (fs::exists(shared / "tokenizer.json")) return shared;
  return {};
}

inline fs::path vocab_case_dir() {
  if (fs::exists(tokenizer_data_dir() / "llama.cpp-vocab")) return tokenizer_data_dir() / "llama.cpp-vocab";
  return shared_tokenizer_dir() / "llama.cpp-vocab";
}

// llama.cpp's test-tokenizer-0 format: each input followed by "\n__ggml_vocab_test__\n"; the .out
// file has one line of space-separated ids per input.
struct VocabCase {
  std::string text;
  std::vector<int> ids;
};
inline std::vector<VocabCase> read_vocab_cases(const std::string& stem) {
  fs::path dir = vocab_case_dir();
  std::string inp = read_text(dir / (stem + ".inp")), out = read_text(dir / (stem + ".out"));
  std::vector<VocabCase> cases;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos < inp.size();) {
    size_t e = inp.find(sep, pos);
    if (e == std::string::npos) break;
    cases.push_back({inp.substr(pos, e - pos), {}});
    pos = e + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  for (auto& c : cases) {
    if (!std::getline(lines, line)) break;
    std::istringstream ids(line);
    for (int id; ids >> id;) c.ids.push_back(id);
  }
  return cases;
}

}  // namespace mx8::test
