// GGUF SentencePiece-style vocabulary -> Hugging Face tokenizer.json / tokenizer_config.json.
#include <algorithm>
#include <unordered_map>

#include "mx8/convert/gguf_to_hf.h"
#include "mx8/error.h"

namespace mx8::convert {

namespace {

// GGUF token types.
enum : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Byte offsets of the UTF-8 character boundaries inside s (excluding 0 and s.size()).
std::vector<size_t> char_boundaries(const std::string& s) {
  std::vector<size_t> b;
  for (size_t i = 1; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) b.push_back(i);
  return b;
}

}  // namespace

std::optional<HfTokenizerFiles> gguf_llama_tokenizer(const io::GgufFile& f) {
  if (f.get_string("tokenizer.ggml.model", "") != "llama") return std::nullopt;
  const auto& tokens = f.require_array("tokenizer.ggml.tokens", io::GgufValueType::kString).array_strings;
  const size_t n = tokens.size();
  std::vector<double> scores(n, 0.0);
  if (const auto* s = f.find("tokenizer.ggml.scores"); s && s->type == io::GgufValueType::kArray) {
    if (s->array_floats.size() != n)
      throw Error(f.path() + ": tokenizer.ggml.scores does not match the tokens");
    scores.assign(s->array_floats.begin(), s->array_floats.end());
  }
  std::vector<int64_t> types(n, kNormal);
  if (const auto* t = f.find("tokenizer.ggml.token_type"); t && t->type == io::GgufValueType::kArray) {
    if (t->array_ints.size() != n)
      throw Error(f.path() + ": tokenizer.ggml.token_type does not match the tokens");
    types.assign(t->array_ints.begin(), t->array_ints.end());
  }
  const int64_t bos = f.get_int("tokenizer.ggml.bos_token_id", 1),
                eos = f.get_int("tokenizer.ggml.eos_token_id", 2),
                unk = f.get_int("tokenizer.ggml.unknown_token_id", 0);
  auto name_of = [&](int64_t id) -> std::string {
    if (id < 0 || static_cast<size_t>(id) >= n)
      throw Error(f.path() + ": special token id " + std::to_string(id) + " out of range");
    return tokens[static_cast<size_t>(id)];
  };

  std::unordered_map<std::string, size_t> id_of;
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (size_t i = 0; i < n; ++i) {
    id_of.emplace(tokens[i], i);
    vocab[tokens[i]] = i;
  }

  // Merges as transformers' SentencePiece extractor derives them: every split of a piece into two
  // pieces of the vocabulary, ordered by the merged piece's score (best first; ties keep vocabulary
  // order), and within one piece by the ids of the parts.
  struct Merge {
    double score;
    size_t piece, left, right;
  };
  std::vector<Merge> merges;
  for (size_t i = 0; i < n; ++i) {
    if (types[i] != kNormal && types[i] != kUserDefined) continue;
    const std::string& p = tokens[i];
    std::vector<Merge> local;
    for (size_t cut : char_boundaries(p)) {
      auto l = id_of.find(p.substr(0, cut)), r = id_of.find(p.substr(cut));
      if (l != id_of.end() && r != id_of.end()) local.push_back({scores[i], i, l->second, r->second});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });

  nlohmann::ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < n; ++i)
    if (types[i] == kControl || types[i] == kUnknown)
      j["added_tokens"].push_back({{"id", i},
                                   {"content", tokens[i]},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", false},
                                   {"special", true}});
  const std::string space = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", space}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}};
  j["pre_tokenizer"] = nullptr;
  const std::string bos_s = name_of(bos);
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", bos_s}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {{{"SpecialToken", {{"id", bos_s}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", bos_s}, {"type_id", 1}}}},
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{bos_s, {{"id", bos_s}, {"ids", {bos}}, {"tokens", {bos_s}}}}}}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  nlohmann::ordered_json m;
  m["type"] = "BPE";
  m["dropout"] = nullptr;
  m["unk_token"] = name_of(unk);
  m["continuing_subword_prefix"] = nullptr;
  m["end_of_word_suffix"] = nullptr;
  m["fuse_unk"] = true;
  m["byte_fallback"] = true;
  m["ignore_merges"] = false;
  m["vocab"] = std::move(vocab);
  m["merges"] = nlohmann::ordered_json::array();
  for (const auto& mg : merges) m["merges"].push_back({tokens[mg.left], tokens[mg.right]});
  j["model"] = std::move(m);

  nlohmann::ordered_json c;
  c["add_bos_token"] = f.get_bool("tokenizer.ggml.add_bos_token", true);
  c["add_eos_token"] = f.get_bool("tokenizer.ggml.add_eos_token", false);
  c["bos_token"] = bos_s;
  c["eos_token"] = name_of(eos);
  c["unk_token"] = name_of(unk);
  c["clean_up_tokenization_spaces"] = false;
  c["legacy"] = true;
  c["model_max_length"] = f.get_int("llama.context_length", 2048);
  c["tokenizer_class"] = "LlamaTokenizer";
  return HfTokenizerFiles{j.dump(2) + "\n", c.dump(2) + "\n"};
}

}  // namespace mx8::convert
