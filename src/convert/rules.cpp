// Default keep/quantize rules and glob matching.
#include "mx8/convert/rules.h"

#include <fnmatch.h>

namespace mx8::convert {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

bool glob_match(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

const char* rule_reason_text(RuleReason r) {
  switch (r) {
    case RuleReason::quantize_default:
      return "quantized (linear weight)";
    case RuleReason::quantize_glob:
      return "quantized (--quantize)";
    case RuleReason::keep_glob:
      return "kept (--keep)";
    case RuleReason::keep_embedding:
      return "kept (embedding)";
    case RuleReason::keep_head:
      return "kept (output head)";
    case RuleReason::keep_norm:
      return "kept (norm)";
    case RuleReason::keep_router:
      return "kept (MoE router gate)";
    case RuleReason::keep_not_matrix:
      return "kept (not a matrix)";
    case RuleReason::keep_not_float:
      return "kept (not floating point)";
    case RuleReason::keep_not_weight:
      return "kept (not a weight)";
  }
  return "?";
}

RuleReason QuantizeRules::decide(const std::string& name, const std::vector<int64_t>& shape,
                                 bool is_float) const {
  if (!ends_with(name, ".weight")) return RuleReason::keep_not_weight;
  if (!is_float) return RuleReason::keep_not_float;
  if (shape.size() != 2) return RuleReason::keep_not_matrix;
  for (const auto& g : keep)
    if (glob_match(g, name)) return RuleReason::keep_glob;
  for (const auto& g : quantize)
    if (glob_match(g, name)) return RuleReason::quantize_glob;
  // "embeddings" also covers Meta's tok_embeddings and BERT's and NeoX's word_embeddings.
  if (contains(name, "embed_tokens") || contains(name, "embeddings") || contains(name, "wte."))
    return RuleReason::keep_embedding;
  if (name == "lm_head.weight" || name == "output.weight" || ends_with(name, ".lm_head.weight"))
    return RuleReason::keep_head;
  if (contains(name, "norm")) return RuleReason::keep_norm;
  // MoE routers: DeepSeek/Qwen-MoE "mlp.gate.weight", Mixtral "block_sparse_moe.gate.weight",
  // and "router" in other families. Not "gate_proj" (the dense/expert FFN gate), which is quantized.
  if (ends_with(name, ".gate.weight") || contains(name, "router")) return RuleReason::keep_router;
  return RuleReason::quantize_default;
}

}  // namespace mx8::convert
