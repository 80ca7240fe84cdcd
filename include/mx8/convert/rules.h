// Which tensors a conversion quantizes. Only 2-D floating-point "*.weight" matrices are candidates;
// of those, the ones that stay in high precision by default are the ones every FP8 release keeps
// (DeepSeek-V3, the fine-grained FP8 checkpoints): embeddings, the output head, norms (1-D anyway)
// and MoE router gates. --keep and --quantize globs override the defaults: a name matching a
// --keep glob is kept, else a name matching a --quantize glob is quantized (if it is a candidate),
// else the default applies. Globs are shell-style (fnmatch without FNM_PATHNAME: '*' crosses dots).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mx8/io/safetensors.h"

namespace mx8::convert {

bool glob_match(const std::string& pattern, const std::string& name);

// Why a tensor is or is not quantized, for reports.
enum class RuleReason {
  quantize_default,
  quantize_glob,
  keep_glob,
  keep_embedding,
  keep_head,
  keep_norm,
  keep_router,
  keep_not_matrix,
  keep_not_float,
  keep_not_weight
};
const char* rule_reason_text(RuleReason r);

struct QuantizeRules {
  std::vector<std::string> keep;      // --keep globs
  std::vector<std::string> quantize;  // --quantize globs

  // `dtype` is the tensor's dtype as the converter sees it (F8/U8 quantized inputs count as float).
  RuleReason decide(const std::string& name, const std::vector<int64_t>& shape, bool is_float) const;
  static bool quantizes(RuleReason r) {
    return r == RuleReason::quantize_default || r == RuleReason::quantize_glob;
  }
};

}  // namespace mx8::convert
