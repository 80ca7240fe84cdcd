// load_tokenizer: finds the tokenizer in a model folder, a tokenizer-only folder, a tokenizer.json
// or a GGUF file.
#include <fstream>
#include <sstream>

#include "mx8/error.h"
#include "mx8/runtime/tokenizer.h"
#include "mx8/util/read_file.h"

namespace mx8::runtime {
namespace {

namespace fs = std::filesystem;

bool has_gguf_magic(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

std::unique_ptr<Tokenizer> from_json_file(const fs::path& json_path) {
  fs::path cfg = json_path.parent_path() / "tokenizer_config.json";
  std::string cfg_text = fs::exists(cfg) ? read_file(cfg) : std::string();
  return tokenizer_from_hf_json(read_file(json_path), cfg_text, json_path.string());
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path.string() + ": no such file or folder");
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "tokenizer.json")) return from_json_file(path / "tokenizer.json");
    // A folder holding one GGUF file (and no tokenizer.json) uses that file's vocabulary.
    std::vector<fs::path> ggufs;
    for (auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() == ".gguf") ggufs.push_back(e.path());
    if (ggufs.size() == 1) return tokenizer_from_gguf(ggufs[0]);
    if (fs::exists(path / "tokenizer.json.gz"))
      throw Error(path.string() +
                  ": only tokenizer.json.gz found; decompress it first (gzip -dk tokenizer.json.gz)");
    if (fs::exists(path / "tokenizer.model"))
      throw Error(path.string() +
                  ": only tokenizer.model (SentencePiece protobuf) found; mx8 reads tokenizer.json "
                  "or a GGUF vocabulary");
    throw Error(path.string() + (ggufs.empty()
                                     ? ": no tokenizer.json or .gguf file in this folder"
                                     : ": several .gguf files and no tokenizer.json; name the file"));
  }
  if (has_gguf_magic(path)) return tokenizer_from_gguf(path);
  if (path.extension() == ".gguf") throw Error(path.string() + ": not a GGUF file (bad magic)");
  return from_json_file(path);
}

}  // namespace mx8::runtime
