// Tokenizers from a GGUF file's tokenizer.ggml.* metadata: "llama" (SentencePiece-style) and
// "gpt2" (byte-level BPE with merges and a named pre-tokenizer).
#include <map>

#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "runtime/tokenizer/bpe.h"

namespace mx8::runtime {
namespace {

using io::GgufFile;
using io::GgufValueType;

// Pre-tokenizer regexes by the names llama.cpp writes to tokenizer.ggml.pre; they are the
// patterns of the corresponding Hugging Face tokenizer.json files.
const char* const kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kDeepseekV3Patterns[] = {
    "\\p{N}{1,3}",
    "[\xE4\xB8\x80-\xE9\xBE\xA5\xE3\x81\x80-\xE3\x82\x9F\xE3\x82\xA0-\xE3\x83\xBF]+",  // 一-龥 ぀-ゟ
                                                                                       // ゠-ヿ
    // One pattern over two lines (the parentheses say the concatenation is meant).
    ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
     "?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
};

std::vector<BpeSpec::PreStep> pre_steps_for(const std::string& pre, const std::string& file) {
  using S = BpeSpec::PreStep;
  auto split = [](const char* p) {
    S s;
    s.kind = S::kSplit;
    s.pattern = p;
    return s;
  };
  S byte_level;
  byte_level.kind = S::kByteLevel;
  if (pre == "gpt-2" || pre == "default" || pre.empty()) {
    byte_level.use_regex = true;
    return {byte_level};
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") return {split(kLlama3Pattern), byte_level};
  if (pre == "qwen2") return {split(kQwen2Pattern), byte_level};
  if (pre == "deepseek-v3") {
    std::vector<S> v;
    for (const char* p : kDeepseekV3Patterns) v.push_back(split(p));
    v.push_back(byte_level);
    return v;
  }
  throw Error(file + ": tokenizer.ggml.pre '" + pre +
              "' is not supported (supported: gpt-2, default, llama-bpe, qwen2, deepseek-v3)");
}

TokenId id_or_none(const GgufFile& f, const std::string& key, size_t n) {
  int64_t v = f.get_int(key, -1);
  return v >= 0 && static_cast<size_t>(v) < n ? static_cast<TokenId>(v) : kNoToken;
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const std::filesystem::path& path) {
  return tokenizer_from_gguf(GgufFile::open(path.string()));
}

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const GgufFile& f) {
  const std::string& name = f.path();
  if (!f.has("tokenizer.ggml.model"))
    throw Error(name + ": GGUF file has no tokenizer (tokenizer.ggml.model)");
  const std::string model = f.require_string("tokenizer.ggml.model");
  const auto& tokens = f.require_array("tokenizer.ggml.tokens", GgufValueType::kString).array_strings;
  const size_t n = tokens.size();
  std::vector<int32_t> types;
  if (const auto* t = f.find("tokenizer.ggml.token_type")) {
    if (t->type != GgufValueType::kArray || t->array_ints.size() != n)
      throw Error(name + ": tokenizer.ggml.token_type is not an integer array of " + std::to_string(n) +
                  " entries");
    types.assign(t->array_ints.begin(), t->array_ints.end());
  }

  if (model == "llama") {
    SpmVocab v;
    v.tokens = tokens;
    if (const auto* s = f.find("tokenizer.ggml.scores")) {
      if (s->type != GgufValueType::kArray || s->array_floats.size() != n)
        throw Error(name + ": tokenizer.ggml.scores is not a float array of " + std::to_string(n) +
                    " entries");
      v.scores.assign(s->array_floats.begin(), s->array_floats.end());
    }
    v.types = types;
    v.bos = id_or_none(f, "tokenizer.ggml.bos_token_id", n);
    v.eos = id_or_none(f, "tokenizer.ggml.eos_token_id", n);
    v.unk = id_or_none(f, "tokenizer.ggml.unknown_token_id", n);
    if (!f.has("tokenizer.ggml.bos_token_id")) v.bos = n > 1 ? 1 : kNoToken;
    if (!f.has("tokenizer.ggml.eos_token_id")) v.eos = n > 2 ? 2 : kNoToken;
    if (!f.has("tokenizer.ggml.unknown_token_id")) v.unk = 0;
    v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", true);
    v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
    v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);
    return make_spm_tokenizer(std::move(v));
  }
  if (model == "gpt2") {
    BpeSpec spec;
    const auto& merges = f.require_array("tokenizer.ggml.merges", GgufValueType::kString).array_strings;
    spec.merges.reserve(merges.size());
    for (const auto& m : merges) {
      size_t sp = m.find(' ');
      if (sp == std::string::npos)
        throw Error(name + ": malformed merge '" + m + "' in tokenizer.ggml.merges");
      spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    spec.vocab.resize(n);
    for (size_t i = 0; i < n; ++i) {
      int32_t type = types.empty() ? SpmVocab::kNormal : types[i];
      // Control and user-defined tokens are matched in the raw text, as added tokens are.
      if (type == SpmVocab::kControl || type == SpmVocab::kUserDefined) {
        spec.added.push_back({static_cast<TokenId>(i), tokens[i], type == SpmVocab::kControl, false, false});
      }
      spec.vocab[i] = tokens[i];
    }
    const std::string pre = f.get_string("tokenizer.ggml.pre", "default");
    spec.pre = pre_steps_for(pre, name);
    // Llama-3's tokenizer.json sets ignore_merges (a piece that is a vocabulary entry is one token
    // even where the merges would not build it: " Việt"), and a GGUF file has no field for it;
    // llama.cpp likewise ties it to these pre-tokenizer names.
    spec.ignore_merges = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
    spec.bos = id_or_none(f, "tokenizer.ggml.bos_token_id", n);
    spec.eos = id_or_none(f, "tokenizer.ggml.eos_token_id", n);
    if (f.get_bool("tokenizer.ggml.add_bos_token", false) && spec.bos != kNoToken)
      spec.prefix.push_back(spec.bos);
    if (f.get_bool("tokenizer.ggml.add_eos_token", false) && spec.eos != kNoToken)
      spec.suffix.push_back(spec.eos);
    return std::make_unique<BpeTokenizer>(std::move(spec));
  }
  throw Error(name + ": tokenizer.ggml.model '" + model + "' is not supported (supported: llama, gpt2)");
}

}  // namespace mx8::runtime
