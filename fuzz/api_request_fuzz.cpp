// libFuzzer target: a request body, as any client may send it, through the four dialects' parsers
// (OpenAI chat, completions and responses, Anthropic messages) and the embeddings endpoint's: each
// accepts it or throws an ApiError (an mx8::Error) that becomes a 4xx; never a crash or another
// exception, which would be a 500.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>

#include "mx8/error.h"
#include "mx8/server/api.h"
#include "mx8/server/embeddings_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto body = nlohmann::ordered_json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  static const std::unique_ptr<mx8::server::Dialect> dialects[] = {
      mx8::server::openai_chat_dialect(), mx8::server::openai_completion_dialect(),
      mx8::server::anthropic_dialect(), mx8::server::openai_responses_dialect()};
  const mx8::runtime::SamplingParams defaults;
  for (const auto& dialect : dialects) {
    try {
      dialect->parse(body, defaults);
    } catch (const mx8::Error&) {
    }
  }
  try {
    mx8::server::parse_embeddings_request(body);
  } catch (const mx8::Error&) {
  }
  return 0;
}
