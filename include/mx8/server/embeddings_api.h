// OpenAI's embeddings endpoint (POST /v1/embeddings) in the server's terms: the request's inputs and
// options, and the response. No I/O here (http_server.cpp runs the inputs through the engine).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mx8/server/api.h"

namespace mx8::server {

// The most inputs one request may hold (OpenAI's limit).
inline constexpr size_t kMaxEmbeddingInputs = 2048;

struct EmbeddingsRequest {
  std::vector<PromptInput> inputs;  // texts (tokenized as the model's tokenizer frames them) or token ids
  int dimensions = 0;               // the first this-many values, renormalized; 0: all of them
  bool base64 = false;  // encoding_format "base64": each vector's float32 values, little-endian, in base64
  // The model's prompt to put before each text input (runtime::EmbeddingRecipe::prompts; the field of
  // text-embeddings-inference and sentence-transformers): "" the model's default, if any.
  std::string prompt_name;
};

// Throws ApiError naming the field: `input` absent, empty, an empty string, more than
// kMaxEmbeddingInputs entries; `dimensions` below 1; an `encoding_format` other than float or base64.
// `dimensions` past the model's hidden size is the caller's to refuse (it knows the model).
EmbeddingsRequest parse_embeddings_request(const nlohmann::ordered_json& body);

// {"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage":
// {"prompt_tokens", "total_tokens"}}, vectors in input order.
nlohmann::ordered_json embeddings_response(const std::vector<std::vector<float>>& vectors, bool base64,
                                           const std::string& model, int prompt_tokens);

// `bytes` in base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);

}  // namespace mx8::server
