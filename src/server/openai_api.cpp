// The OpenAI dialects: POST /v1/chat/completions and the legacy POST /v1/completions.
//
// Chat: messages (system, developer = system, user, assistant; text content), max_completion_tokens or
// max_tokens, temperature (0..2), top_p, frequency_penalty and presence_penalty (-2..2), seed, stop
// (up to 4 strings), stream and stream_options.include_usage; mx8 adds top_k, min_p and
// repetition_penalty; logprobs and top_logprobs (0..20); n (1..128 choices, each its own sample: the
// request's seed + i for choice i); logit_bias (token id -> -100..100, added to the logits before the
// penalties); tools, tool_choice, parallel_tool_calls, an assistant turn's tool_calls and tool turns
// (the server reads calls out of replies where the chat template allows: http_server.cpp);
// chat_template_kwargs and reasoning_effort (template variables), vLLM's thinking_token_budget (the
// most tokens the reasoning may take), an assistant turn's reasoning_content, and a thinking model's
// reasoning in message.reasoning_content. The legacy
// functions and function_call, non-text modalities, audio and non-text response formats are refused.
// Completions:
// prompt (a string or token ids, or several: n choices each, prompt by prompt), the same sampling
// fields, logprobs (0..5), echo (the reply starts with the prompt, and with logprobs so do its
// log-probabilities, the first token's null; streamed, in the first chunk), best_of only equal to n.
// Log-probabilities are of the model's distribution (before penalties and temperature), one entry per
// generated token but an end-of-turn token; the completions' alternatives always hold the chosen token.
// finish_reason: "stop" (end of turn or a stop string), "tool_calls", "length" (the token limit or the
// context).
// Streams end with "data: [DONE]".
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "mx8/server/api.h"
#include "server/api_fields.h"

namespace mx8::server {

using json = nlohmann::ordered_json;

std::string sse_event(const std::string& name, const json& data) {
  std::string s;
  if (!name.empty()) s += "event: " + name + "\n";
  s += "data: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
  return s;
}

json openai_token_logprobs(const std::vector<TokenLogprob>& lp) {
  auto bytes = [](const std::string& s) {
    return std::vector<int>(reinterpret_cast<const unsigned char*>(s.data()),
                            reinterpret_cast<const unsigned char*>(s.data()) + s.size());
  };
  json out = json::array();
  for (const TokenLogprob& t : lp) {
    json top = json::array();
    for (const auto& [text, v] : t.top)
      top.push_back({{"token", text}, {"logprob", v}, {"bytes", bytes(text)}});
    out.push_back(
        {{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes(t.token)}, {"top_logprobs", top}});
  }
  return out;
}

namespace {

const char* finish_reason(StopReason r) {
  return r == StopReason::max_tokens || r == StopReason::context_full ? "length" : "stop";
}

const char* finish_reason(const ApiResult& r) {
  return r.ended_with_calls() ? "tool_calls" : finish_reason(r.reason);
}

// A call as OpenAI shows it: the arguments as JSON text.
json call_json(const runtime::ToolCall& c) {
  return {{"id", c.id},
          {"type", "function"},
          {"function", {{"name", c.name}, {"arguments", runtime::json_text(c.arguments)}}}};
}

json usage(const ApiResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens}};
}

const char* error_type(int status) {
  switch (status) {
    case 400:
    case 413:
      return "invalid_request_error";
    case 401:
      return "invalid_api_key";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_exceeded";
    default:
      return "server_error";
  }
}

// What both OpenAI endpoints read besides their prompt.
ApiRequest read_common(const json& body, const runtime::SamplingParams& defaults) {
  fields::require_object(body);
  ApiRequest r;
  r.sampling = defaults;
  fields::read_sampling(body, 2, r);
  if (auto f = fields::number(body, "frequency_penalty", -2, 2)) r.sampling.frequency_penalty = float(*f);
  if (auto p = fields::number(body, "presence_penalty", -2, 2)) r.sampling.presence_penalty = float(*p);
  if (auto n = fields::integer(body, "max_completion_tokens", 1, 1 << 30))
    r.max_tokens = int(*n);
  else if (auto m = fields::integer(body, "max_tokens", 1, 1 << 30))
    r.max_tokens = int(*m);
  r.stop = fields::strings(body, "stop", 4);
  r.stream = fields::boolean(body, "stream").value_or(false);
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) throw ApiError(400, "'stream_options' must be an object", "stream_options");
    r.include_usage = fields::boolean(so, "include_usage").value_or(false);
  }
  if (auto n = fields::integer(body, "n", 1, 128)) r.n = int(*n);
  if (auto lb = fields::logit_bias(body)) r.sampling.logit_bias = std::move(*lb);
  return r;
}

// Chat's shape: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
json chat_logprobs(const std::vector<TokenLogprob>* lp) {
  if (!lp) return nullptr;
  return {{"content", openai_token_logprobs(*lp)}, {"refusal", nullptr}};
}

// The legacy completions' shape: parallel lists, the alternatives as {token: logprob}, the offsets
// in characters of the text.
json completion_logprobs(const std::vector<TokenLogprob>* lp) {
  if (!lp) return nullptr;
  json tokens = json::array(), values = json::array(), top = json::array(), offsets = json::array();
  for (const TokenLogprob& t : *lp) {
    tokens.push_back(t.token);
    const bool none = std::isnan(t.logprob);  // an echoed prompt's first token
    values.push_back(none ? json(nullptr) : json(t.logprob));
    json alt = json::object();
    for (const auto& [text, v] : t.top) alt[text] = v;
    // OpenAI always lists the chosen (sampled or echoed) token too, so a position has up to
    // logprobs + 1 alternatives: a harness reads the token's own entry from here.
    if (!alt.contains(t.token)) alt[t.token] = t.logprob;
    top.push_back(none ? json(nullptr) : alt);
    offsets.push_back(t.offset);
  }
  return {{"tokens", tokens}, {"token_logprobs", values}, {"top_logprobs", top}, {"text_offset", offsets}};
}

// Variables for the chat template: chat_template_kwargs (vLLM's and SGLang's field, e.g.
// {"enable_thinking": false} for Qwen3) and reasoning_effort ("none" and "minimal" switch a thinking
// model's reasoning off, "low" to "high" on: enable_thinking and thinking, which Qwen3's and
// DeepSeek-V3.1's templates read); chat_template_kwargs wins where both set one.
json template_variables(const json& body) {
  const auto e = body.find("reasoning_effort");
  json vars = fields::reasoning_effort(e == body.end() ? nullptr : &*e, "reasoning_effort");
  if (body.contains("chat_template_kwargs") && !body["chat_template_kwargs"].is_null()) {
    const json& k = body["chat_template_kwargs"];
    if (!k.is_object())
      throw ApiError(400, "'chat_template_kwargs' must be an object", "chat_template_kwargs");
    for (const auto& [name, value] : k.items()) {
      if (name == "messages" || name == "tools" || name == "add_generation_prompt" || name == "bos_token" ||
          name == "eos_token")
        throw ApiError(400, "'chat_template_kwargs' may not set '" + name + "' (the request sets it)",
                       "chat_template_kwargs");
      vars[name] = value;
    }
  }
  return vars;
}

// An assistant turn's tool_calls in the history: [{"id", "type": "function", "function": {"name",
// "arguments": JSON text}}], the arguments read into objects for the template.
json history_calls(const json& calls, const std::string& where) {
  if (!calls.is_array()) throw ApiError(400, "'" + where + "' must be an array", where);
  json out = json::array();
  for (size_t j = 0; j < calls.size(); ++j) {
    const std::string at = where + "[" + std::to_string(j) + "]";
    const json& c = calls[j];
    if (!c.is_object() || c.value("type", json("function")) != "function" || !c.contains("function"))
      throw ApiError(
          400, "'" + at + "' must be a function call: {\"type\": \"function\", \"function\": {...}}", at);
    const std::string id = fields::string_member(c, "id", at);
    const std::string name = fields::tool_name(c["function"], at + ".function");
    const json& args = c["function"].contains("arguments") ? c["function"]["arguments"] : json();
    out.push_back({{"id", id},
                   {"type", "function"},
                   {"function",
                    {{"name", name}, {"arguments", fields::object_text(args, at + ".function.arguments")}}}});
  }
  return out;
}

class OpenAiBase : public Dialect {
 public:
  json error_body(int status, const std::string& message, const std::string& param) const override {
    return {{"error",
             {{"message", message},
              {"type", error_type(status)},
              {"param", param.empty() ? json(nullptr) : json(param)},
              {"code", nullptr}}}};
  }
  std::string stream_error(int status, const std::string& message) const override {
    return sse_event("", error_body(status, message, ""));
  }
};

// response_format: text (or none), json_object (any JSON object), or json_schema ({"name", "schema",
// "strict"}: a value of the schema; without one, any JSON object).
std::shared_ptr<const runtime::JsonSchema> response_format(const json& body) {
  const auto f = body.find("response_format");
  if (f == body.end() || f->is_null()) return nullptr;
  if (!f->is_object() || !f->contains("type") || !(*f)["type"].is_string())
    throw ApiError(400, "'response_format' must be an object with a string 'type'", "response_format");
  const std::string type = (*f)["type"];
  if (type == "text") return nullptr;
  if (type == "json_object")
    return std::make_shared<const runtime::JsonSchema>(runtime::JsonSchema::any_object());
  if (type != "json_schema")
    throw ApiError(
        400,
        "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", not \"" + type + "\"",
        "response_format.type");
  const auto js = f->find("json_schema");
  if (js == f->end() || !js->is_object())
    throw ApiError(400, "'response_format.json_schema' must be an object", "response_format.json_schema");
  const auto schema = js->find("schema");
  if (schema == js->end() || schema->is_null())
    return std::make_shared<const runtime::JsonSchema>(runtime::JsonSchema::any_object());
  return fields::output_schema(*schema, "response_format.json_schema.schema");
}

class OpenAiChat : public OpenAiBase {
 public:
  ApiRequest parse(const json& body, const runtime::SamplingParams& defaults) const override {
    ApiRequest r = read_common(body, defaults);
    const auto top = fields::integer(body, "top_logprobs", 0, 20);
    if (fields::boolean(body, "logprobs").value_or(false))
      r.logprobs = int(top.value_or(0));
    else if (top)
      throw ApiError(400, "'top_logprobs' needs 'logprobs' to be true", "top_logprobs");
    r.tools = fields::openai_tools(body, /*nested=*/true);
    r.template_variables = template_variables(body);
    // vLLM's field: reasoning past this many tokens is closed for the model, and it answers.
    r.thinking_budget = fields::integer(body, "thinking_token_budget", 0, 1 << 30);
    // The legacy form of tools (deprecated for `tools`); "none" asks for no call.
    if (body.contains("functions") && !body["functions"].is_null() && !body["functions"].empty())
      throw ApiError(400, "'functions' is not supported by this server; offer them as 'tools'", "functions");
    fields::unsupported_unless(body, "function_call", "none");
    // Output modalities: text only (an empty list asks for nothing else).
    if (const auto m = fields::strings(body, "modalities", SIZE_MAX);
        std::any_of(m.begin(), m.end(), [](const std::string& x) { return x != "text"; }))
      throw ApiError(400, "'modalities' other than \"text\" are not supported by this server", "modalities");
    fields::refuse_nonempty(body, "audio");
    r.json_output = response_format(body);
    r.json_output_field = "response_format";
    if (!body.contains("messages")) throw ApiError(400, "'messages' is required", "messages");
    const json& msgs = body["messages"];
    if (!msgs.is_array() || msgs.empty())
      throw ApiError(400, "'messages' must be a non-empty array", "messages");
    for (size_t i = 0; i < msgs.size(); ++i) {
      const std::string at = "messages[" + std::to_string(i) + "]";
      const json& m = msgs[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
        throw ApiError(400, "'" + at + "' must be an object with a string 'role'", at);
      std::string role = m["role"];
      if (role == "developer") role = "system";
      if (role != "system" && role != "user" && role != "assistant" && role != "tool")
        throw ApiError(
            400,
            "'" + at + ".role' '" + role + "' is not supported (system, developer, user, assistant, tool)",
            at + ".role");
      if (auto c = m.find("function_call"); c != m.end() && !c->is_null())
        throw ApiError(400, "'" + at + ".function_call' is not supported by this server; use 'tool_calls'",
                       at + ".function_call");
      json out = {{"role", role}};
      // An assistant turn may carry no content (it made tool calls).
      const bool empty_ok = role == "assistant" && (!m.contains("content") || m["content"].is_null());
      if (!empty_ok && !m.contains("content"))
        throw ApiError(400, "'" + at + ".content' is required", at + ".content");
      out["content"] = empty_ok ? "" : fields::text_content(m["content"], at + ".content");
      if (role == "assistant" && m.contains("reasoning_content") && !m["reasoning_content"].is_null())
        out["reasoning_content"] = fields::string_member(m, "reasoning_content", at);
      if (role == "assistant" && m.contains("tool_calls") && !m["tool_calls"].is_null() &&
          !m["tool_calls"].empty())
        out["tool_calls"] = history_calls(m["tool_calls"], at + ".tool_calls");
      if (role == "tool") out["tool_call_id"] = fields::string_member(m, "tool_call_id", at);
      r.messages.push_back(std::move(out));
    }
    return r;
  }
  std::string id_prefix() const override { return "chatcmpl-"; }
  json response(const ResponseMeta& m, const std::vector<ApiResult>& choices,
                const ApiResult& total) const override {
    json out = {{"id", m.id},
                {"object", "chat.completion"},
                {"created", m.created},
                {"model", m.model},
                {"choices", json::array()}};
    for (size_t i = 0; i < choices.size(); ++i) {
      const ApiResult& r = choices[i];
      json message = {{"role", "assistant"}, {"content", r.text}};
      if (!r.reasoning.empty()) message["reasoning_content"] = r.reasoning;
      if (!r.tool_calls.empty()) {
        if (r.text.empty()) message["content"] = nullptr;  // calls alone, as OpenAI sends them
        message["tool_calls"] = json::array();
        for (const runtime::ToolCall& c : r.tool_calls) message["tool_calls"].push_back(call_json(c));
      }
      out["choices"].push_back({{"index", i},
                                {"message", std::move(message)},
                                {"logprobs", chat_logprobs(r.logprobs ? &*r.logprobs : nullptr)},
                                {"finish_reason", finish_reason(r)}});
    }
    out["usage"] = usage(total);
    return out;
  }
  std::string stream_start(const ResponseMeta& m, int, std::vector<StreamState>& choices) const override {
    std::string s;
    for (size_t i = 0; i < choices.size(); ++i)
      s += sse_event("", chunk(m, int(i), {{"role", "assistant"}, {"content", ""}}, nullptr));
    return s;
  }
  std::string stream_text(const ResponseMeta& m, int index, const std::string& text,
                          const std::vector<TokenLogprob>* logprobs, StreamState&) const override {
    return sse_event("", chunk(m, index, {{"content", text}}, nullptr, chat_logprobs(logprobs)));
  }
  std::string stream_reasoning(const ResponseMeta& m, int index, const std::string& text,
                               StreamState&) const override {
    return sse_event("", chunk(m, index, {{"reasoning_content", text}}, nullptr));
  }
  // A whole call in one chunk (clients join a call's pieces by its index; this server has each call
  // only once it is complete).
  std::string stream_tool_call(const ResponseMeta& m, int index, const runtime::ToolCall& call,
                               StreamState& s) const override {
    json c = {{"index", s.calls++}};
    c.update(call_json(call));
    return sse_event("", chunk(m, index, {{"tool_calls", json::array({std::move(c)})}}, nullptr));
  }
  std::string stream_choice_end(const ResponseMeta& m, int index, const ApiResult& r,
                                StreamState&) const override {
    return sse_event("", chunk(m, index, json::object(), finish_reason(r)));
  }
  std::string stream_end(const ResponseMeta& m, const ApiResult& total, bool include_usage) const override {
    std::string s;
    if (include_usage) {
      json u = chunk(m, 0, json::object(), nullptr);
      u["choices"] = json::array();
      u["usage"] = usage(total);
      s += sse_event("", u);
    }
    return s + "data: [DONE]\n\n";
  }

 private:
  static json chunk(const ResponseMeta& m, int index, json delta, json finish, json logprobs = nullptr) {
    return {{"id", m.id},
            {"object", "chat.completion.chunk"},
            {"created", m.created},
            {"model", m.model},
            {"choices", json::array({{{"index", index},
                                      {"delta", std::move(delta)},
                                      {"logprobs", std::move(logprobs)},
                                      {"finish_reason", finish}}})}};
  }
};

class OpenAiCompletion : public OpenAiBase {
 public:
  ApiRequest parse(const json& body, const runtime::SamplingParams& defaults) const override {
    ApiRequest r = read_common(body, defaults);
    if (auto n = fields::integer(body, "logprobs", 0, 5)) r.logprobs = int(*n);
    r.echo = fields::boolean(body, "echo").value_or(false);
    if (auto b = fields::integer(body, "best_of", 1, 128); b && *b != r.n)
      throw ApiError(400, "'best_of' other than 'n' is not supported by this server", "best_of");
    fields::unsupported_unless(body, "suffix", "");
    r.prompts = fields::prompts(body, "prompt");
    return r;
  }
  std::string id_prefix() const override { return "cmpl-"; }
  bool lists_end_of_turn() const override { return true; }
  json response(const ResponseMeta& m, const std::vector<ApiResult>& choices,
                const ApiResult& total) const override {
    json out = base(m, json());
    for (size_t i = 0; i < choices.size(); ++i) {
      const ApiResult& r = choices[i];
      out["choices"].push_back(choice(int(i), r.text, finish_reason(r.reason),
                                      completion_logprobs(r.logprobs ? &*r.logprobs : nullptr)));
    }
    out["usage"] = usage(total);
    return out;
  }
  std::string stream_start(const ResponseMeta&, int, std::vector<StreamState>&) const override { return ""; }
  std::string stream_text(const ResponseMeta& m, int index, const std::string& text,
                          const std::vector<TokenLogprob>* logprobs, StreamState&) const override {
    return sse_event("", base(m, choice(index, text, nullptr, completion_logprobs(logprobs))));
  }
  std::string stream_choice_end(const ResponseMeta& m, int index, const ApiResult& r,
                                StreamState&) const override {
    return sse_event("", base(m, choice(index, "", finish_reason(r.reason))));
  }
  std::string stream_end(const ResponseMeta& m, const ApiResult& total, bool include_usage) const override {
    std::string s;
    if (include_usage) {
      json u = base(m, json());
      u["choices"] = json::array();
      u["usage"] = usage(total);
      s += sse_event("", u);
    }
    return s + "data: [DONE]\n\n";
  }

 private:
  static json choice(int index, const std::string& text, json finish, json logprobs = nullptr) {
    return {{"text", text},
            {"index", index},
            {"logprobs", std::move(logprobs)},
            {"finish_reason", std::move(finish)}};
  }
  static json base(const ResponseMeta& m, json choice) {
    return {{"id", m.id},
            {"object", "text_completion"},
            {"created", m.created},
            {"model", m.model},
            {"choices", choice.is_null() ? json::array() : json::array({std::move(choice)})}};
  }
};

}  // namespace

std::unique_ptr<Dialect> openai_chat_dialect() {
  return std::make_unique<OpenAiChat>();
}
std::unique_ptr<Dialect> openai_completion_dialect() {
  return std::make_unique<OpenAiCompletion>();
}

}  // namespace mx8::server
