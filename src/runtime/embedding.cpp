// Text embeddings: see embedding.h.
#include "mx8/runtime/embedding.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "mx8/util/read_file.h"

namespace mx8::runtime {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

json read_json_file(const fs::path& p) {
  try {
    return json::parse(read_file(p.string()));
  } catch (const json::exception& e) {
    throw Error("embedding: " + p.string() + " is not JSON: " + e.what());
  }
}

// The pooling a sentence-transformers Pooling config names: "pooling_mode" (sentence-transformers 5 and
// later) or the older one flag per mode.
std::string pooling_mode(const json& cfg) {
  if (cfg.contains("pooling_mode") && cfg["pooling_mode"].is_string()) return cfg["pooling_mode"];
  static const std::pair<const char*, const char*> flags[] = {
      {"pooling_mode_lasttoken", "lasttoken"},
      {"pooling_mode_mean_tokens", "mean"},
      {"pooling_mode_cls_token", "cls"},
      {"pooling_mode_max_tokens", "max"},
      {"pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"},
      {"pooling_mode_weightedmean_tokens", "weightedmean"}};
  std::string mode;
  for (const auto& [key, name] : flags)
    if (cfg.value(key, false)) mode += (mode.empty() ? "" : "+") + std::string(name);
  return mode.empty() ? "none" : mode;
}

// A GGUF file's pooling, as llama.cpp's converter writes it for embedding models (`<arch>.pooling_type`:
// 0 none, 1 mean, 2 CLS, 3 last, 4 rank); absent in the files of chat models.
EmbeddingRecipe gguf_recipe(const std::string& path) {
  const io::GgufFile f = io::GgufFile::open(path);
  const std::string key = f.get_string("general.architecture", "llama") + ".pooling_type";
  const int64_t type = f.get_int(key, 3);
  if (type != 3 && type != 0) {
    static const char* const names[] = {"none", "mean", "cls", "last", "rank"};
    const std::string name = type > 0 && type < 5 ? names[type] : std::to_string(type);
    throw Error("embedding: " + path + " pools its tokens by '" + name + "' (" + key +
                "); mx8 reads the last token's hidden state only");
  }
  EmbeddingRecipe r;
  r.source = f.has(key) ? path + " (" + key + " last)" : "default: the last token's hidden state, normalized";
  return r;
}

// A sentence-transformers folder's recipe (modules.json in `dir`). nlohmann's type errors (a module
// that is not an object, a flag that is not a boolean) escape to the caller, which names the folder.
EmbeddingRecipe folder_recipe(const fs::path& dir, const std::string& model_path) {
  EmbeddingRecipe r;
  const fs::path modules_path = dir / "modules.json";
  const json modules = read_json_file(modules_path);
  if (!modules.is_array()) throw Error("embedding: " + modules_path.string() + " is not a list of modules");
  bool pooled = false;
  r.normalize = false;
  for (const json& m : modules) {
    const std::string type = m.value("type", ""), path = m.value("path", "");
    auto is = [&](const char* kind) { return type.ends_with(std::string(".") + kind) || type == kind; };
    if (is("Transformer")) continue;
    if (is("Normalize")) {
      r.normalize = true;
      continue;
    }
    if (is("Pooling")) {
      const std::string mode = pooling_mode(read_json_file(dir / path / "config.json"));
      if (mode != "lasttoken")
        throw Error("embedding: " + model_path + " pools its tokens by '" + mode +
                    "'; mx8 reads the last token's hidden state only (pooling_mode lasttoken, as "
                    "Qwen3-Embedding and gte-Qwen2 do)");
      pooled = true;
      continue;
    }
    throw Error("embedding: " + model_path + " has a sentence-transformers module '" + type +
                "' that mx8 does not run (it runs Transformer, Pooling by the last token, Normalize)");
  }
  if (!pooled) throw Error("embedding: " + modules_path.string() + " has no Pooling module");
  r.source = modules_path.string();
  if (const fs::path st = dir / "config_sentence_transformers.json"; fs::exists(st)) {
    const json cfg = read_json_file(st);
    if (cfg.contains("prompts") && cfg["prompts"].is_object())
      for (const auto& [name, text] : cfg["prompts"].items())
        if (text.is_string()) r.prompts[name] = text.get<std::string>();
    if (cfg.contains("default_prompt_name") && cfg["default_prompt_name"].is_string())
      r.default_prompt_name = cfg["default_prompt_name"];
    if (!r.default_prompt_name.empty() && !r.prompts.count(r.default_prompt_name))
      throw Error("embedding: " + st.string() + " names default_prompt_name '" + r.default_prompt_name +
                  "', which is not among its prompts");
  }
  return r;
}

}  // namespace

EmbeddingRecipe read_embedding_recipe(const std::string& model_path) {
  if (fs::is_regular_file(model_path) && model_path.ends_with(".gguf")) return gguf_recipe(model_path);
  const fs::path dir = fs::is_directory(model_path) ? fs::path(model_path) : fs::path();
  if (dir.empty() || !fs::exists(dir / "modules.json")) {
    EmbeddingRecipe r;
    r.source = "default: the last token's hidden state, normalized";
    return r;
  }
  try {
    return folder_recipe(dir, model_path);
  } catch (const nlohmann::json::exception& e) {
    throw Error("embedding: " + model_path +
                ": a sentence-transformers file is not as expected: " + e.what());
  }
}

std::string EmbeddingRecipe::with_prompt(const std::string& text, const std::string& name) const {
  const std::string& n = name.empty() ? default_prompt_name : name;
  if (n.empty()) return text;
  auto it = prompts.find(n);
  if (it == prompts.end()) {
    std::string known;
    for (const auto& [k, v] : prompts) known += (known.empty() ? "'" : ", '") + k + "'";
    throw Error("embedding: no prompt '" + n + "' (" +
                (known.empty() ? "this model has none" : "it has " + known) + ")");
  }
  return it->second + text;
}

std::vector<float> finish_embedding(std::span<const float> hidden, int dimensions, bool normalize) {
  if (dimensions < 0 || size_t(dimensions) > hidden.size())
    throw Error("embedding: dimensions " + std::to_string(dimensions) + " outside 1.." +
                std::to_string(hidden.size()) + " (the model's hidden size)");
  std::vector<float> v(hidden.begin(),
                       hidden.begin() + std::ptrdiff_t(dimensions ? dimensions : hidden.size()));
  if (!normalize) return v;
  double sum = 0;  // in double: the unit vector then rounds once per value, from an exact-enough norm
  for (float x : v) sum += double(x) * double(x);
  if (sum == 0) return v;
  const double inv = 1.0 / std::sqrt(sum);
  for (float& x : v) x = float(double(x) * inv);
  return v;
}

}  // namespace mx8::runtime
