// Hugging Face tokenizer.json (+ tokenizer_config.json) -> BpeTokenizer.
//
// Supported: model "BPE", either byte-level (a ByteLevel pre-tokenizer) or over characters with
// byte fallback (Llama-2 / Mistral: Prepend + Replace normalizers or a Metaspace pre-tokenizer);
// normalizers NFC, Prepend, Replace (string patterns) and Sequence; pre-tokenizers Split (Regex or
// String pattern), ByteLevel, Digits, Metaspace and Sequence; post-processors TemplateProcessing,
// ByteLevel and Sequence. Anything else is refused with an error that names it, rather than
// tokenizing differently.
#include <nlohmann/json.hpp>

#include "mx8/error.h"
#include "mx8/util/json_parse.h"
#include "runtime/tokenizer/bpe.h"

namespace mx8::runtime {
namespace {

using nlohmann::json;

[[noreturn]] void unsupported(const std::string& name, const std::string& what) {
  throw Error(name + ": unsupported tokenizer.json: " + what);
}

std::string escape_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

bool add_normalizer(const json& n, BpeSpec& spec, const std::string& name) {
  if (n.is_null()) return true;
  std::string type = n.value("type", "");
  if (type == "NFC") {
    spec.nfc = true;
  } else if (type == "Prepend") {
    spec.prepend = n.at("prepend").get<std::string>() + spec.prepend;
  } else if (type == "Replace") {
    const json& pat = n.at("pattern");
    if (!pat.contains("String")) unsupported(name, "Replace normalizer with a regex pattern");
    spec.replace.emplace_back(pat["String"].get<std::string>(), n.at("content").get<std::string>());
  } else if (type == "Sequence") {
    for (auto& k : n.at("normalizers")) add_normalizer(k, spec, name);
  } else {
    unsupported(name, "normalizer '" + type + "'");
  }
  return true;
}

// Returns whether a ByteLevel step was seen.
bool add_pre_tokenizer(const json& p, BpeSpec& spec, const std::string& name) {
  if (p.is_null()) return false;
  std::string type = p.value("type", "");
  using S = BpeSpec::PreStep;
  if (type == "Sequence") {
    bool byte_level = false;
    for (auto& k : p.at("pretokenizers")) byte_level |= add_pre_tokenizer(k, spec, name);
    return byte_level;
  }
  S step;
  if (type == "Split") {
    step.kind = S::kSplit;
    const json& pat = p.at("pattern");
    if (pat.contains("Regex"))
      step.pattern = pat["Regex"].get<std::string>();
    else if (pat.contains("String"))
      step.pattern = escape_literal(pat["String"].get<std::string>());
    else
      unsupported(name, "Split pattern without Regex or String");
    std::string behavior = p.value("behavior", "Isolated");
    if (behavior == "Isolated")
      step.behavior = S::kIsolated;
    else if (behavior == "Removed")
      step.behavior = S::kRemoved;
    else if (behavior == "MergedWithPrevious")
      step.behavior = S::kMergedWithPrevious;
    else if (behavior == "MergedWithNext")
      step.behavior = S::kMergedWithNext;
    else
      unsupported(name, "Split behavior '" + behavior + "'");
    step.invert = p.value("invert", false);
  } else if (type == "ByteLevel") {
    step.kind = S::kByteLevel;
    step.add_prefix_space = p.value("add_prefix_space", false);
    step.use_regex = p.value("use_regex", true);
  } else if (type == "Metaspace") {
    step.kind = S::kMetaspace;
    step.replacement = p.value("replacement", "\xE2\x96\x81");
    std::string scheme = p.contains("prepend_scheme")
                             ? p["prepend_scheme"].get<std::string>()
                             : (p.value("add_prefix_space", true) ? "always" : "never");
    step.prepend_always = scheme == "always";
    step.prepend_first = scheme == "first";
    step.split = p.value("split", true);
  } else if (type == "Digits") {
    step.kind = S::kDigits;
    step.individual_digits = p.value("individual_digits", false);
  } else {
    unsupported(name, "pre_tokenizer '" + type + "'");
  }
  spec.pre.push_back(step);
  return type == "ByteLevel";
}

// Whether the decoder drops one leading space of the text (Strip(' ', start >= 1), or Metaspace
// with a prefix).
bool decoder_strips_leading_space(const json& d) {
  if (d.is_null()) return false;
  std::string type = d.value("type", "");
  if (type == "Sequence") {
    bool r = false;
    for (auto& k : d.at("decoders")) r |= decoder_strips_leading_space(k);
    return r;
  }
  if (type == "Strip") {
    const json start = d.value("start", json(0));  // value<int>() of a float would be undefined
    return d.value("content", "") == " " && start.is_number() && start.get<double>() >= 1;
  }
  if (type == "Metaspace") {
    if (d.contains("prepend_scheme")) return d["prepend_scheme"].get<std::string>() != "never";
    return d.value("add_prefix_space", true);
  }
  return false;
}

// A token id as the file writes it. nlohmann's get<int>() of 1e30 is undefined behaviour and of
// 2^40 wraps, so the value must be a JSON integer inside [0, kMaxVocabSize) (no real vocabulary
// comes near; BpeSpec says why there is a bound).
TokenId token_id(const json& v, const std::string& name, const std::string& what) {
  // An unsigned value past int64 reads as negative here, and is refused with the rest.
  const bool fits =
      v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < int64_t(BpeSpec::kMaxVocabSize);
  if (!fits)
    throw Error(name + ": " + what + " has id " + v.dump() + ", not an integer in [0, " +
                std::to_string(BpeSpec::kMaxVocabSize) + ")");
  return static_cast<TokenId>(v.get<int64_t>());
}

TokenId special_id(const json& special_tokens, const std::string& key, const std::string& name) {
  auto it = special_tokens.find(key);
  if (it == special_tokens.end() || it->at("ids").empty())
    unsupported(name, "TemplateProcessing refers to unknown special token '" + key + "'");
  return token_id(it->at("ids")[0], name, "special token '" + key + "'");
}

void add_post_processor(const json& p, BpeSpec& spec, const std::string& name) {
  if (p.is_null()) return;
  std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (auto& k : p.at("processors")) add_post_processor(k, spec, name);
  } else if (type == "TemplateProcessing") {
    // "single": [SpecialToken..., Sequence A, SpecialToken...].
    bool seen_sequence = false;
    for (auto& item : p.at("single")) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        TokenId id = special_id(p.at("special_tokens"), item["SpecialToken"].at("id"), name);
        (seen_sequence ? spec.suffix : spec.prefix).push_back(id);
      }
    }
  } else if (type != "ByteLevel") {
    unsupported(name, "post_processor '" + type + "'");
  }
}

// tokenizer_config.json writes tokens as a string or as {"content": ...}.
std::string token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v["content"].get<std::string>();
  return {};
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_hf_json(std::string_view tokenizer_json,
                                                  std::string_view config_json, const std::string& name) {
  json j, cfg;
  try {
    j = parse_json_bounded(tokenizer_json, name);
    if (!config_json.empty()) cfg = parse_json_bounded(config_json, name + " (tokenizer_config.json)");
  } catch (const json::exception& e) {
    throw Error(name + ": not valid JSON: " + e.what());
  }
  try {
    BpeSpec spec;
    const json& model = j.at("model");
    std::string type = model.value("type", "BPE");
    if (type != "BPE")
      unsupported(name, "model type '" + type + "' (only byte-level BPE is read from tokenizer.json)");
    if (!model.value("continuing_subword_prefix", json()).is_null() &&
        !model["continuing_subword_prefix"].get<std::string>().empty())
      unsupported(name, "continuing_subword_prefix");
    for (auto& [tok, id] : model.at("vocab").items()) {
      TokenId i = token_id(id, name, "vocab entry '" + tok + "'");
      if (static_cast<size_t>(i) >= spec.vocab.size()) spec.vocab.resize(i + 1);
      spec.vocab[i] = tok;
    }
    for (auto& m : model.at("merges")) {
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw Error(name + ": malformed merge '" + s + "'");
        spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (m.is_array() && m.size() == 2) {
        spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        throw Error(name + ": malformed merge " + m.dump());
      }
    }
    spec.ignore_merges = model.value("ignore_merges", false);
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      auto it = model["vocab"].find(model["unk_token"].get<std::string>());
      if (it != model["vocab"].end()) spec.unk = token_id(*it, name, "unk_token");
    }
    for (auto& a : j.value("added_tokens", json::array())) {
      BpeSpec::AddedToken t;
      t.content = a.at("content").get<std::string>();
      t.id = token_id(a.at("id"), name, "added token '" + t.content + "'");
      t.special = a.value("special", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      spec.added.push_back(std::move(t));
    }
    add_normalizer(j.value("normalizer", json()), spec, name);
    bool byte_level = add_pre_tokenizer(j.value("pre_tokenizer", json()), spec, name);
    spec.byte_fallback = model.value("byte_fallback", false);
    if (!byte_level) {
      bool metaspace = false;
      for (auto& st : spec.pre) metaspace |= st.kind == BpeSpec::PreStep::kMetaspace;
      if (!spec.byte_fallback && !metaspace && spec.prepend.empty())
        unsupported(name,
                    "BPE that is neither byte-level nor SentencePiece-style (no ByteLevel, Metaspace or "
                    "byte_fallback)");
      spec.byte_level = false;
      spec.strip_leading_space = decoder_strips_leading_space(j.value("decoder", json()));
    }
    add_post_processor(j.value("post_processor", json()), spec, name);

    // BOS/EOS: tokenizer_config.json names them; its add_bos_token/add_eos_token, where given,
    // decide the framing (as transformers' Llama tokenizers rebuild their post-processor).
    auto lookup = [&](const std::string& content) -> TokenId {
      for (auto& a : spec.added)
        if (a.content == content) return a.id;
      for (size_t i = 0; i < spec.vocab.size(); ++i)
        if (spec.vocab[i] == content) return static_cast<TokenId>(i);
      return kNoToken;
    };
    if (cfg.is_object()) {
      if (cfg.contains("bos_token")) spec.bos = lookup(token_content(cfg["bos_token"]));
      if (cfg.contains("eos_token")) spec.eos = lookup(token_content(cfg["eos_token"]));
      if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) {
        std::erase(spec.prefix, spec.bos);
        if (cfg["add_bos_token"].get<bool>() && spec.bos != kNoToken)
          spec.prefix.insert(spec.prefix.begin(), spec.bos);
      }
      if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) {
        std::erase(spec.suffix, spec.eos);
        if (cfg["add_eos_token"].get<bool>() && spec.eos != kNoToken) spec.suffix.push_back(spec.eos);
      }
    }
    if (spec.bos == kNoToken && !spec.prefix.empty()) spec.bos = spec.prefix.front();
    return std::make_unique<BpeTokenizer>(std::move(spec));
  } catch (const json::exception& e) {
    throw Error(name + ": malformed tokenizer.json: " + e.what());
  }
}

}  // namespace mx8::runtime
