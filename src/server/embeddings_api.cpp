// OpenAI embeddings: see embeddings_api.h.
#include "mx8/server/embeddings_api.h"

#include <bit>
#include <cstdlib>
#include <cstring>

#include "mx8/util/float_text.h"
#include "server/api_fields.h"

namespace mx8::server {

using json = nlohmann::ordered_json;

EmbeddingsRequest parse_embeddings_request(const json& body) {
  fields::require_object(body);
  EmbeddingsRequest r;
  r.inputs = fields::prompts(body, "input");
  if (r.inputs.size() > kMaxEmbeddingInputs)
    throw ApiError(400, "'input' may hold at most " + std::to_string(kMaxEmbeddingInputs) + " entries",
                   "input");
  for (const PromptInput& in : r.inputs)
    if (in.text && in.text->empty()) throw ApiError(400, "'input' must not hold an empty string", "input");
  if (auto d = fields::integer(body, "dimensions", 1, INT32_MAX)) r.dimensions = int(*d);
  if (body.contains("prompt_name") && !body["prompt_name"].is_null()) {
    if (!body["prompt_name"].is_string())
      throw ApiError(400, "'prompt_name' must be a string", "prompt_name");
    r.prompt_name = body["prompt_name"];
  }
  if (body.contains("encoding_format") && !body["encoding_format"].is_null()) {
    const json& f = body["encoding_format"];
    if (f != "float" && f != "base64")
      throw ApiError(400, "'encoding_format' must be \"float\" or \"base64\", not " + f.dump(),
                     "encoding_format");
    r.base64 = f == "base64";
  }
  return r;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const size_t n = std::min<size_t>(3, bytes.size() - i);
    uint32_t v = 0;
    for (size_t j = 0; j < 3; ++j) v = v << 8 | (j < n ? uint8_t(bytes[i + j]) : 0);
    for (size_t j = 0; j < 4; ++j) out += j <= n ? kDigits[(v >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

json embeddings_response(const std::vector<std::vector<float>>& vectors, bool base64,
                         const std::string& model, int prompt_tokens) {
  static_assert(std::endian::native == std::endian::little, "base64 embeddings are little-endian float32");
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    const std::vector<float>& v = vectors[i];
    json e = json::array();
    if (base64) {
      e = base64_encode({reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)});
    } else {  // each value the double nearest its shortest float text, which JSON then writes as that text
      for (float x : v) e.push_back(std::strtod(shortest_float_text(x).c_str(), nullptr));
    }
    data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", std::move(e)}});
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

}  // namespace mx8::server
