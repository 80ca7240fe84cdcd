// The Anthropic dialect: POST /v1/messages.
//
// max_tokens (required), messages (user and assistant turns; a string or text blocks), system (a
// string or text blocks), temperature (0..1), top_p, top_k, stop_sequences, stream, metadata
// (ignored); mx8 adds min_p, repetition_penalty and seed. A last message from the assistant is a
// prefill: the reply continues it and does not repeat it. tools (client tools: name, description,
// input_schema), tool_choice (auto, any, tool, none; disable_parallel_tool_use), and tool_use and
// tool_result blocks in the conversation; thinking ({"type": "enabled", "budget_tokens"}: the
// template's enable_thinking, and the most tokens the reasoning may take; or "disabled"), thinking
// blocks in the conversation. Images,
// documents and server tools are refused.
// stop_reason: "end_turn", "tool_use", "max_tokens" (the token limit or the context), "stop_sequence"
// (with stop_sequence set). Streams send message_start, content_block_start, ping, content_block_delta
// (text_delta) events, content_block_stop, message_delta (stop reason and output tokens), message_stop;
// a tool call is a tool_use block whose input comes in one input_json_delta.
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

const char* stop_reason(const ApiResult& r) {
  return r.ended_with_calls() ? "tool_use" : stop_reason(r.reason);
}

// tools, tool_choice (with its disable_parallel_tool_use).
ToolRequest read_tools(const json& body) {
  ToolRequest t;
  std::vector<bool> strict;
  t.tools = fields::tool_list(body, true, [&](const json& tool, const std::string& at) {
    if (const json type = tool.value("type", json("custom")); type != "custom")
      throw ApiError(
          400, "'" + at + "' is a server tool (type " + type.dump() + "), which this server does not run",
          at + ".type");
    const std::string name = fields::tool_name(tool, at);
    if (!tool.contains("input_schema") || !tool["input_schema"].is_object())
      throw ApiError(400, "'" + at + ".input_schema' must be a JSON schema object", at + ".input_schema");
    strict.push_back(fields::strict_flag(tool, at));
    return fields::template_tool(name, tool.value("description", json()), tool["input_schema"], at);
  });
  if (body.contains("tool_choice") && !body["tool_choice"].is_null()) {
    const json& c = body["tool_choice"];
    const std::string type = c.is_object() && c.contains("type") && c["type"].is_string() ? c["type"] : "";
    if (type == "none")
      t.choice = ToolRequest::Choice::none;
    else if (type == "any")
      t.choice = ToolRequest::Choice::required;
    else if (type == "tool") {
      t.choice = ToolRequest::Choice::named;
      t.name = fields::tool_name(c, "tool_choice");
    } else if (type != "auto") {
      throw ApiError(400, "'tool_choice.type' must be \"auto\", \"any\", \"tool\" or \"none\"",
                     "tool_choice");
    }
    if (c.is_object()) t.parallel = !fields::boolean(c, "disable_parallel_tool_use").value_or(false);
  }
  fields::check_tools(t, "tool_choice");
  fields::strict_tools(t, strict);
  return t;
}

// A tool_result block's content: a string or text blocks; an error's marked as one.
std::string tool_result_text(const json& block, const std::string& at) {
  std::string text = block.contains("content") && !block["content"].is_null()
                         ? fields::text_content(block["content"], at + ".content")
                         : "";
  if (fields::boolean(block, "is_error").value_or(false)) text = "Error: " + text;
  return text;
}

// A message's turns for the template. A user message's tool_result blocks are "tool" turns (with
// tool_call_id), its text a user turn; an assistant message's tool_use blocks are its tool_calls.
void add_turns(const json& m, const std::string& role, const std::string& at, json& out) {
  const json& content = m["content"];
  if (!content.is_array()) {
    out.push_back({{"role", role}, {"content", fields::text_content(content, at + ".content")}});
    return;
  }
  json turn = {{"role", role}, {"content", ""}};
  bool results = false;
  for (size_t j = 0; j < content.size(); ++j) {
    const std::string b = at + ".content." + std::to_string(j);
    const json& block = content[j];
    const json type_field = block.is_object() ? block.value("type", json()) : json();
    const std::string type = type_field.is_string() ? type_field.get<std::string>() : "";
    if (type == "tool_result" && role == "user") {
      if (!turn["content"].get<std::string>().empty()) {  // text before the result: a turn of its own
        out.push_back(turn);
        turn["content"] = "";
      }
      out.push_back({{"role", "tool"},
                     {"tool_call_id", fields::string_member(block, "tool_use_id", b)},
                     {"content", tool_result_text(block, b)}});
      results = true;
    } else if ((type == "thinking" || type == "redacted_thinking") && role == "assistant") {
      // Earlier reasoning: the template decides whether to show it (Qwen3 shows only the last turn's).
      if (type == "thinking")
        turn["reasoning_content"] =
            turn.value("reasoning_content", "") + fields::string_member(block, "thinking", b);
    } else if (type == "tool_use" && role == "assistant") {
      if (!block.contains("input") || !block["input"].is_object())
        throw ApiError(400, "'" + b + ".input' must be an object", b + ".input");
      if (!turn.contains("tool_calls")) turn["tool_calls"] = json::array();
      turn["tool_calls"].push_back(
          {{"id", fields::string_member(block, "id", b)},
           {"type", "function"},
           {"function", {{"name", fields::tool_name(block, b)}, {"arguments", block["input"]}}}});
    } else if (type == "tool_use" || type == "tool_result") {
      throw ApiError(400, "'" + b + "' is a " + type + " block in a " + role + " message", b);
    } else if (type == "text") {
      turn["content"] = turn["content"].get<std::string>() + fields::string_member(block, "text", b);
    } else {
      throw ApiError(400,
                     "'" + b + "' is of type " + type_field.dump() +
                         "; this server takes text, tool_use and tool_result blocks",
                     b);
    }
  }
  if (!results || !turn["content"].get<std::string>().empty()) out.push_back(std::move(turn));
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

// Structured outputs: output_config.format (and the beta's output_format), {"type": "json_schema",
// "schema": {...}}: the reply's text is a value of the schema.
std::shared_ptr<const runtime::JsonSchema> output_format(const json& body) {
  const json* format = nullptr;
  std::string param = "output_config.format";
  if (auto c = body.find("output_config"); c != body.end() && !c->is_null()) {
    if (!c->is_object()) throw ApiError(400, "'output_config' must be an object", "output_config");
    if (auto f = c->find("format"); f != c->end() && !f->is_null()) format = &*f;
  }
  if (auto f = body.find("output_format"); !format && f != body.end() && !f->is_null()) {
    format = &*f;
    param = "output_format";
  }
  if (!format) return nullptr;
  if (!format->is_object() || format->value("type", json()) != "json_schema")
    throw ApiError(400, "'" + param + "' must be {\"type\": \"json_schema\", \"schema\": {...}}", param);
  if (!format->contains("schema") || !(*format)["schema"].is_object())
    throw ApiError(400, "'" + param + ".schema' must be an object", param + ".schema");
  return fields::output_schema((*format)["schema"], param + ".schema");
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
    r.tools = read_tools(body);
    // Extended thinking: {"type": "enabled", "budget_tokens": N} asks a model that thinks to (its
    // reasoning comes back as thinking blocks); "disabled", or no field, asks it not to. Either reaches
    // the template as enable_thinking and thinking (Qwen3's and DeepSeek-V3.1's switches). The budget
    // is checked as Anthropic checks it, and reasoning that reaches it is closed for the model.
    bool thinking = false;
    if (auto t = body.find("thinking"); t != body.end() && !t->is_null()) {
      if (!t->is_object() || !t->contains("type") || !(*t)["type"].is_string())
        throw ApiError(400, "'thinking' must be an object with a string 'type'", "thinking");
      thinking = (*t)["type"] == "enabled";
      if (!thinking && (*t)["type"] != "disabled")
        throw ApiError(400, "'thinking.type' must be \"enabled\" or \"disabled\", not " + (*t)["type"].dump(),
                       "thinking");
      if (thinking) {
        const auto budget = fields::integer(*t, "budget_tokens", 1024, 1 << 30);
        if (!budget || *budget >= *max_tokens)
          throw ApiError(400, "'thinking.budget_tokens' must be at least 1024 and less than 'max_tokens'",
                         "thinking.budget_tokens");
        r.thinking_budget = *budget;
      }
    }
    r.template_variables = {{"enable_thinking", thinking}, {"thinking", thinking}};
    r.json_output = output_format(body);
    r.json_output_field = body.contains("output_config") ? "output_config.format" : "output_format";
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
      json turns = json::array();
      add_turns(m, role, at, turns);
      if (role == "assistant" && i + 1 == msgs.size()) {  // a prefill: the reply continues it
        if (turns.size() != 1 || turns[0].contains("tool_calls"))
          throw ApiError(
              400, "'" + at + "' is a prefill (the last message), which cannot hold tool_use blocks", at);
        r.assistant_prefix = turns[0]["content"];
      } else {
        for (json& t : turns) r.messages.push_back(std::move(t));
      }
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
    if (!r.reasoning.empty())
      out["content"].push_back({{"type", "thinking"}, {"thinking", r.reasoning}, {"signature", ""}});
    if (!r.text.empty() || r.tool_calls.empty())
      out["content"].push_back({{"type", "text"}, {"text", r.text}});
    for (const runtime::ToolCall& c : r.tool_calls)
      out["content"].push_back(
          {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", c.arguments}});
    out["stop_reason"] = stop_reason(r);
    out["stop_sequence"] = r.reason == StopReason::stop_sequence ? json(r.stop_sequence) : json(nullptr);
    return out;
  }
  json error_body(int status, const std::string& message, const std::string&) const override {
    return {{"type", "error"}, {"error", {{"type", error_type(status)}, {"message", message}}}};
  }
  std::string tool_call_id_prefix() const override { return "toolu_"; }
  std::string stream_start(const ResponseMeta& m, int prompt_tokens,
                           std::vector<StreamState>& choices) const override {
    std::string s =
        sse_event("message_start", {{"type", "message_start"}, {"message", message(m, prompt_tokens, 0)}});
    if (!choices.at(0).lazy_text) s += open_block(choices[0], StreamState::Block::text);
    return s + sse_event("ping", {{"type", "ping"}});
  }
  std::string stream_text(const ResponseMeta&, int, const std::string& text, const std::vector<TokenLogprob>*,
                          StreamState& st) const override {
    std::string s = open_block(st, StreamState::Block::text);  // first: it numbers the block
    return s + delta(st, {{"type", "text_delta"}, {"text", text}});
  }
  std::string stream_reasoning(const ResponseMeta&, int, const std::string& text,
                               StreamState& st) const override {
    std::string s = open_block(st, StreamState::Block::thinking);
    return s + delta(st, {{"type", "thinking_delta"}, {"thinking", text}});
  }
  std::string stream_tool_call(const ResponseMeta&, int, const runtime::ToolCall& c,
                               StreamState& st) const override {
    std::string s = close_block(st);
    const int index = st.blocks++;
    ++st.calls;
    s += sse_event("content_block_start",
                   {{"type", "content_block_start"},
                    {"index", index},
                    {"content_block",
                     {{"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", json::object()}}}});
    s += sse_event(
        "content_block_delta",
        {{"type", "content_block_delta"},
         {"index", index},
         {"delta", {{"type", "input_json_delta"}, {"partial_json", runtime::json_text(c.arguments)}}}});
    return s + sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", index}});
  }
  // The last block closes; a reply of nothing has one empty text block, as its whole response has.
  std::string stream_choice_end(const ResponseMeta&, int, const ApiResult&, StreamState& st) const override {
    std::string s = st.blocks == 0 ? open_block(st, StreamState::Block::text) : "";
    return s + close_block(st);
  }
  std::string stream_end(const ResponseMeta&, const ApiResult& r, bool) const override {
    json delta = {
        {"stop_reason", stop_reason(r)},
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
  // Opens a block of `type` unless one is open (closing a block of another type first).
  static std::string open_block(StreamState& st, StreamState::Block type) {
    if (st.open == type) return "";
    std::string s = close_block(st);
    st.open = type;
    json block = type == StreamState::Block::text
                     ? json{{"type", "text"}, {"text", ""}}
                     : json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}};
    return s + sse_event("content_block_start",
                         {{"type", "content_block_start"}, {"index", st.blocks++}, {"content_block", block}});
  }
  static std::string close_block(StreamState& st) {
    if (st.open == StreamState::Block::none) return "";
    st.open = StreamState::Block::none;
    return sse_event("content_block_stop", {{"type", "content_block_stop"}, {"index", st.blocks - 1}});
  }
  static std::string delta(const StreamState& st, json d) {
    return sse_event("content_block_delta",
                     {{"type", "content_block_delta"}, {"index", st.blocks - 1}, {"delta", std::move(d)}});
  }
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
