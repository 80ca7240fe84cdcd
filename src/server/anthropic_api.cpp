// The Anthropic dialect: POST /v1/messages.
//
// max_tokens (required), messages (user and assistant turns; a string or text blocks), system (a
// string or text blocks), temperature (0..1), top_p, top_k, stop_sequences, stream, metadata
// (ignored); mx8 adds min_p, repetition_penalty and seed. A last message from the assistant is a
// prefill: the reply continues it and does not repeat it. Images, documents, tools and thinking
// (other than {"type": "disabled"}) are refused.
// stop_reason: "end_turn", "max_tokens" (the token limit or the context), "stop_sequence" (with
// stop_sequence set). Streams send message_start, content_block_start, ping, content_block_delta
// (text_delta) events, content_block_stop, message_delta (stop reason and output tokens), message_stop.
#include <nlohmann/json.hpp>

#include "mx8/server/api.h"
#include "server/api_fields.h"

namespace mx8::server {
namespace {

using json = nlohmann::ordered_json;

const char* stop_reason(StopReason r) {
  switch (r) {
    case StopReason::stop_sequence:
      return "stop_sequence";
    case StopReason::max_tokens:
    case StopReason::context_full:
      return "max_tokens";
    default:
      return "end_turn";
  }
}

const char* error_type(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 529:
      return "overloaded_error";
    default:
      return "api_error";
  }
}

class Anthropic : public Dialect {
 public:
  ApiRequest parse(const json& body, const runtime::SamplingParams& defaults) const override {
    fields::require_object(body);
    ApiRequest r;
    r.sampling = defaults;
    fields::read_sampling(body, 1, r);
    auto max_tokens = fields::integer(body, "max_tokens", 1, 1 << 30);
    if (!max_tokens) throw ApiError(400, "'max_tokens' is required", "max_tokens");
    r.max_tokens = int(*max_tokens);
    r.stop = fields::strings(body, "stop_sequences", 64);
    r.stream = fields::boolean(body, "stream").value_or(false);
    fields::refuse_nonempty(body, "tools");
    // Extended thinking: {"type": "disabled"} asks for what this server does; any other type asks
    // for thinking blocks, which it cannot produce.
    if (auto t = body.find("thinking"); t != body.end() && !t->is_null()) {
      if (!t->is_object() || !t->contains("type") || !(*t)["type"].is_string())
        throw ApiError(400, "'thinking' must be an object with a string 'type'", "thinking");
      if ((*t)["type"] != "disabled")
        throw ApiError(400, "'thinking' of type " + (*t)["type"].dump() + " is not supported by this server",
                       "thinking");
    }
    if (body.contains("system") && !body["system"].is_null()) {
      const std::string system = fields::text_content(body["system"], "system");
      if (!system.empty()) r.messages.push_back({{"role", "system"}, {"content", system}});
    }
    if (!body.contains("messages")) throw ApiError(400, "'messages' is required", "messages");
    const json& msgs = body["messages"];
    if (!msgs.is_array() || msgs.empty())
      throw ApiError(400, "'messages' must be a non-empty array", "messages");
    for (size_t i = 0; i < msgs.size(); ++i) {
      const std::string at = "messages." + std::to_string(i);
      const json& m = msgs[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        throw ApiError(400, "'" + at + "' must be an object with a string 'role'", at);
      const std::string role = m["role"];
      if (role != "user" && role != "assistant")
        throw ApiError(400, "'" + at + ".role' must be \"user\" or \"assistant\", not \"" + role + "\"",
                       at + ".role");
      if (!m.contains("content")) throw ApiError(400, "'" + at + ".content' is required", at + ".content");
      const std::string text = fields::text_content(m["content"], at + ".content");
      if (role == "assistant" && i + 1 == msgs.size())
        r.assistant_prefix = text;  // a prefill: the reply continues it
      else
        r.messages.push_back({{"role", role}, {"content", text}});
    }
    if (r.messages.empty() || r.messages.back()["role"] == "system")
      throw ApiError(400, "'messages' must hold a user turn", "messages");
    return r;
  }
  std::string id_prefix() const override { return "msg_"; }
  json response(const ResponseMeta& m, const std::vector<ApiResult>& choices,
                const ApiResult& total) const override {
    const ApiResult& r = choices.at(0);  // one: the request has no `n`
    json out = message(m, total.prompt_tokens, total.completion_tokens);
    out["content"] = json::array({{{"type", "text"}, {"text", r.text}}});
    out["stop_reason"] = stop_reason(r.reason);
    out["stop_sequence"] = r.reason == StopReason::stop_sequence ? json(r.stop_sequence) : json(nullptr);
    return out;
  }
  json error_body(int status, const std::string& message, const std::string&) const override {
    return {{"type", "error"}, {"error", {{"type", error_type(status)}, {"message", message}}}};
  }
  std::string stream_start(const ResponseMeta& m, int prompt_tokens, int) const override {
    return sse_event("message_start",
                     {{"type", "message_start"}, {"message", message(m, prompt_tokens, 0)}}) +
           sse_event("content_block_start", {{"type", "content_block_start"},
                                             {"index", 0},
                                             {"content_block", {{"type", "text"}, {"text", ""}}}}) +
           sse_event("ping", {{"type", "ping"}});
  }
  std::string stream_text(const ResponseMeta&, int, const std::string& text,
                          const std::vector<TokenLogprob>*) const override {
    return sse_event(
        "content_block_delta",
        {{"type", "content_block_delta"}, {"index", 0}, {"delta", {{"type", "text_delta"}, {"text", text}}}});
  }
  std::string stream_choice_end(const ResponseMeta&, int, const ApiResult&) const override {
    return sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}});
  }
  std::string stream_end(const ResponseMeta&, const ApiResult& r, bool) const override {
    json delta = {
        {"stop_reason", stop_reason(r.reason)},
        {"stop_sequence", r.reason == StopReason::stop_sequence ? json(r.stop_sequence) : json(nullptr)}};
    return sse_event("message_delta", {{"type", "message_delta"},
                                       {"delta", std::move(delta)},
                                       {"usage", {{"output_tokens", r.completion_tokens}}}}) +
           sse_event("message_stop", {{"type", "message_stop"}});
  }
  std::string stream_error(int status, const std::string& message) const override {
    return sse_event("error", error_body(status, message, ""));
  }

 private:
  static json message(const ResponseMeta& m, int input_tokens, int output_tokens) {
    return {{"id", m.id},
            {"type", "message"},
            {"role", "assistant"},
            {"model", m.model},
            {"content", json::array()},
            {"stop_reason", nullptr},
            {"stop_sequence", nullptr},
            {"usage", {{"input_tokens", input_tokens}, {"output_tokens", output_tokens}}}};
  }
};

}  // namespace

std::unique_ptr<Dialect> anthropic_dialect() {
  return std::make_unique<Anthropic>();
}

}  // namespace mx8::server
