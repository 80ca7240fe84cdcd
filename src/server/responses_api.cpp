// The OpenAI Responses dialect: POST /v1/responses, stateless.
//
// input (a string, or items: messages with a role and text content, function_call and
// function_call_output items, reasoning items), instructions (the system turn), max_output_tokens,
// temperature (0..2), top_p; mx8 adds top_k, min_p, repetition_penalty and seed; tools (function tools:
// name, description, parameters, strict), tool_choice ("auto", "none", "required", {"type":
// "function", "name"}), parallel_tool_calls, text.format (text, json_object, json_schema with name and
// schema), reasoning.effort (as chat's reasoning_effort), top_logprobs (0..20) and include
// ["message.output_text.logprobs"] (either asks for log-probabilities; other include values name
// outputs this server does not make and are read past), stream. Nothing is stored: store is read and
// answered false, and previous_response_id (a conversation the server would have kept) is refused, as
// are hosted tools (web search, files, code) and non-text input.
// The response's output is a reasoning item (where the model thinks), a message with one output_text
// part (where there is text, or nothing else), then one function_call item per call; status
// "completed", or "incomplete" with incomplete_details.reason "max_output_tokens". Streams send
// response.created and response.in_progress, then per item output_item.added, its deltas
// (output_text, reasoning_text, function_call_arguments) and their .done events, output_item.done, and
// last response.completed (or response.incomplete) with the whole response; every event carries its
// type and a sequence_number.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "mx8/server/api.h"
#include "server/api_fields.h"

namespace mx8::server {
namespace {

using json = nlohmann::ordered_json;

// A message item's content: a string, or parts of type input_text or output_text (the text of an
// earlier reply sent back); `where` names it in errors.
std::string item_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError(400, "'" + where + "' must be a string or an array of text parts", where);
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    const json& part = content[i];
    const json type = part.is_object() ? part.value("type", json()) : json();
    if (type != "input_text" && type != "output_text")
      throw ApiError(400,
                     "'" + at + "' is of type " + type.dump() +
                         "; this server takes input_text and output_text parts only",
                     at);
    text += fields::string_member(part, "text", at);
  }
  return text;
}

// The conversation for the template, from instructions and input.
json read_input(const json& body) {
  json turns = json::array();
  if (auto i = body.find("instructions"); i != body.end() && !i->is_null()) {
    if (!i->is_string()) throw ApiError(400, "'instructions' must be a string", "instructions");
    turns.push_back({{"role", "system"}, {"content", *i}});
  }
  const auto input = body.find("input");
  if (input == body.end() || input->is_null()) throw ApiError(400, "'input' is required", "input");
  if (input->is_string()) {
    turns.push_back({{"role", "user"}, {"content", *input}});
    return turns;
  }
  if (!input->is_array() || input->empty())
    throw ApiError(400, "'input' must be a string or a non-empty array of items", "input");
  std::string reasoning;  // a reasoning item's text, for the assistant turn that follows it
  // The assistant turn that calls go on: the last turn where it is the assistant's.
  auto assistant = [&]() -> json& {
    if (turns.empty() || turns.back()["role"] != "assistant")
      turns.push_back({{"role", "assistant"}, {"content", ""}});
    json& t = turns.back();
    if (!reasoning.empty()) t["reasoning_content"] = std::exchange(reasoning, "");
    return t;
  };
  for (size_t k = 0; k < input->size(); ++k) {
    const std::string at = "input[" + std::to_string(k) + "]";
    const json& item = (*input)[k];
    if (!item.is_object()) throw ApiError(400, "'" + at + "' must be an object", at);
    const json type = item.value("type", json(item.contains("role") ? "message" : ""));
    if (type == "message") {
      const std::string role = fields::string_member(item, "role", at);
      if (role != "user" && role != "system" && role != "developer" && role != "assistant")
        throw ApiError(400, "'" + at + ".role' must be \"user\", \"system\", \"developer\" or \"assistant\"",
                       at + ".role");
      if (!item.contains("content")) throw ApiError(400, "'" + at + ".content' is required", at + ".content");
      const std::string text = item_text(item["content"], at + ".content");
      if (role == "assistant") {
        json& t = assistant();
        if (t.contains("tool_calls"))  // text after calls: a turn of its own
          turns.push_back({{"role", "assistant"}, {"content", text}});
        else
          t["content"] = t["content"].get<std::string>() + text;
      } else {
        turns.push_back({{"role", role == "developer" ? "system" : role}, {"content", text}});
      }
    } else if (type == "function_call") {
      json& t = assistant();
      if (!t.contains("tool_calls")) t["tool_calls"] = json::array();
      t["tool_calls"].push_back(
          {{"id", fields::string_member(item, "call_id", at)},
           {"type", "function"},
           {"function",
            {{"name", fields::tool_name(item, at)},
             {"arguments", fields::object_text(item.value("arguments", json()), at + ".arguments")}}}});
    } else if (type == "function_call_output") {
      const json output = item.value("output", json());
      turns.push_back({{"role", "tool"},
                       {"tool_call_id", fields::string_member(item, "call_id", at)},
                       {"content", item_text(output, at + ".output")}});
    } else if (type == "reasoning") {
      // Earlier reasoning (its text, where it was sent back): the template decides whether to show it.
      for (const json& part : item.value("content", json::array()))
        if (part.is_object() && part.value("type", json()) == "reasoning_text")
          reasoning += fields::string_member(part, "text", at + ".content");
    } else {
      throw ApiError(400,
                     "'" + at + "' is of type " + type.dump() +
                         "; this server takes message, function_call, function_call_output and reasoning "
                         "items (it keeps nothing to refer to)",
                     at + ".type");
    }
  }
  return turns;
}

// text.format: text (or none), json_object, or json_schema ({"name", "schema", "strict"}, flat).
std::shared_ptr<const runtime::JsonSchema> text_format(const json& body) {
  const auto text = body.find("text");
  if (text == body.end() || text->is_null()) return nullptr;
  if (!text->is_object()) throw ApiError(400, "'text' must be an object", "text");
  const auto f = text->find("format");
  if (f == text->end() || f->is_null()) return nullptr;
  const json type = f->is_object() ? f->value("type", json()) : json();
  if (type == "text") return nullptr;
  if (type == "json_object")
    return std::make_shared<const runtime::JsonSchema>(runtime::JsonSchema::any_object());
  if (type != "json_schema")
    throw ApiError(400, "'text.format.type' must be \"text\", \"json_object\" or \"json_schema\"",
                   "text.format.type");
  if (!f->contains("schema") || !(*f)["schema"].is_object())
    throw ApiError(400, "'text.format.schema' must be an object", "text.format.schema");
  return fields::output_schema((*f)["schema"], "text.format.schema");
}

const char* error_type(int status) {
  return status == 401   ? "authentication_error"
         : status == 404 ? "not_found_error"
         : status == 429 ? "rate_limit_error"
         : status >= 500 ? "server_error"
                         : "invalid_request_error";
}

bool incomplete(StopReason r) {
  return r == StopReason::max_tokens || r == StopReason::context_full;
}

class Responses : public Dialect {
 public:
  ApiRequest parse(const json& body, const runtime::SamplingParams& defaults) const override {
    fields::require_object(body);
    ApiRequest r;
    r.sampling = defaults;
    fields::read_sampling(body, 2, r);
    if (auto m = fields::integer(body, "max_output_tokens", 1, 1 << 30)) r.max_tokens = int(*m);
    r.stream = fields::boolean(body, "stream").value_or(false);
    if (auto p = body.find("previous_response_id"); p != body.end() && !p->is_null())
      throw ApiError(400,
                     "'previous_response_id' is not supported: this server keeps no responses; send the "
                     "whole conversation in 'input'",
                     "previous_response_id");
    fields::unsupported_unless(body, "background", false);
    fields::unsupported_unless(body, "conversation", nullptr);
    r.tools = fields::openai_tools(body, /*nested=*/false);
    if (auto e = body.find("reasoning"); e != body.end() && !e->is_null()) {
      if (!e->is_object()) throw ApiError(400, "'reasoning' must be an object", "reasoning");
      const auto effort = e->find("effort");
      r.template_variables =
          fields::reasoning_effort(effort == e->end() ? nullptr : &*effort, "reasoning.effort");
    }
    const auto top = fields::integer(body, "top_logprobs", 0, 20);
    const std::vector<std::string> include = fields::strings(body, "include", 64);
    if (top || std::find(include.begin(), include.end(), "message.output_text.logprobs") != include.end())
      r.logprobs = int(top.value_or(0));
    r.json_output = text_format(body);
    r.json_output_field = "text.format";
    r.messages = read_input(body);
    if (std::none_of(r.messages.begin(), r.messages.end(),
                     [](const json& t) { return t["role"] != "system"; }))
      throw ApiError(400, "'input' must hold more than instructions", "input");
    return r;
  }
  std::string id_prefix() const override { return "resp_"; }

  json response(const ResponseMeta& m, const std::vector<ApiResult>& choices,
                const ApiResult& total) const override {
    const ApiResult& r = choices.at(0);  // one: the request has no `n`
    json items = json::array();
    if (!r.reasoning.empty()) items.push_back(reasoning_item(m, 0, r.reasoning));
    if (!r.text.empty() || r.tool_calls.empty())  // cut off by the limit where it is the last item
      items.push_back(message_item(m, int(items.size()), r.text, incomplete(r.reason) && r.tool_calls.empty(),
                                   r.logprobs ? openai_token_logprobs(*r.logprobs) : json::array()));
    for (const runtime::ToolCall& c : r.tool_calls) items.push_back(call_item(m, int(items.size()), c));
    return whole(m, r.reason, std::move(items), total.prompt_tokens, total.completion_tokens);
  }
  json error_body(int status, const std::string& message, const std::string& param) const override {
    return {{"error",
             {{"message", message},
              {"type", error_type(status)},
              {"param", param.empty() ? json(nullptr) : json(param)},
              {"code", nullptr}}}};
  }

  std::string stream_start(const ResponseMeta& m, int prompt_tokens,
                           std::vector<StreamState>& st) const override {
    StreamState& s = st.at(0);
    s.prompt_tokens = prompt_tokens;
    json r = base(m);
    r["status"] = "in_progress";
    std::string out = event(s, "response.created", {{"response", r}});  // numbered in this order
    return out + event(s, "response.in_progress", {{"response", r}});
  }
  // Tokens that wrote no text (reasoning, or text held back) have their log-probabilities sent with
  // the next text, so a message lists every token before it, as the whole response does.
  std::string stream_text(const ResponseMeta& m, int, const std::string& text,
                          const std::vector<TokenLogprob>* logprobs, StreamState& s) const override {
    if (logprobs)
      for (json& e : openai_token_logprobs(*logprobs)) s.held_logprobs.push_back(std::move(e));
    if (text.empty()) return "";
    std::string out = open_item(m, s, StreamState::Block::text);
    s.item_text += text;
    json sent = json::array();
    sent.swap(s.held_logprobs);
    for (const json& e : sent) s.item_logprobs.push_back(e);
    return out + event(s, "response.output_text.delta",
                       {{"item_id", item_id(m, s)},
                        {"output_index", s.blocks - 1},
                        {"content_index", 0},
                        {"delta", text},
                        {"logprobs", std::move(sent)}});
  }
  std::string stream_reasoning(const ResponseMeta& m, int, const std::string& text,
                               StreamState& s) const override {
    std::string out = open_item(m, s, StreamState::Block::thinking);
    s.item_text += text;
    return out + event(s, "response.reasoning_text.delta",
                       {{"item_id", item_id(m, s)},
                        {"output_index", s.blocks - 1},
                        {"content_index", 0},
                        {"delta", text}});
  }
  std::string stream_tool_call(const ResponseMeta& m, int, const runtime::ToolCall& c,
                               StreamState& s) const override {
    std::string out = close_item(m, s);
    const int index = s.blocks++;
    ++s.calls;
    json item = call_item(m, index, c);
    json added = item;
    added["arguments"] = "";
    added["status"] = "in_progress";
    const json where = {{"item_id", item["id"]}, {"output_index", index}};
    out += event(s, "response.output_item.added", {{"output_index", index}, {"item", added}});
    json delta = where, done = where;
    delta["delta"] = item["arguments"];
    done["arguments"] = item["arguments"];
    out += event(s, "response.function_call_arguments.delta", delta);
    out += event(s, "response.function_call_arguments.done", done);
    out += event(s, "response.output_item.done", {{"output_index", index}, {"item", item}});
    s.items.push_back(std::move(item));
    return out;
  }
  // The whole response ends here, with its one choice: the last item closes (a reply of nothing is one
  // empty message, as its whole response has), then response.completed or response.incomplete carries
  // every item and the usage. stream_end has nothing left to send.
  std::string stream_choice_end(const ResponseMeta& m, int, const ApiResult& r,
                                StreamState& s) const override {
    std::string out = s.blocks == 0 ? open_item(m, s, StreamState::Block::text) : "";
    if (s.open == StreamState::Block::text)  // the last tokens' (an end of turn) go with the message's end
      for (json& e : s.held_logprobs) s.item_logprobs.push_back(std::move(e));
    else  // tokens after the message closed (calls): the last event's message lists them, as a whole one
      for (auto it = s.items.rbegin(); it != s.items.rend(); ++it)
        if ((*it)["type"] == "message") {
          for (json& e : s.held_logprobs) (*it)["content"][0]["logprobs"].push_back(std::move(e));
          break;
        }
    s.held_logprobs = json::array();
    out += close_item(m, s, incomplete(r.reason));
    const char* name = incomplete(r.reason) ? "response.incomplete" : "response.completed";
    return out +
           event(s, name, {{"response", whole(m, r.reason, s.items, s.prompt_tokens, r.completion_tokens)}});
  }
  std::string stream_end(const ResponseMeta&, const ApiResult&, bool) const override { return ""; }
  std::string stream_error(int status, const std::string& message) const override {
    return sse_event("error", {{"type", "error"},
                               {"code", error_type(status)},
                               {"message", message},
                               {"param", nullptr},
                               {"sequence_number", 0}});
  }

 private:
  // Output items are named after the response: msg_/rs_/fc_ and the response's id, then their index.
  static std::string item_id(const ResponseMeta& m, const char* prefix, int index) {
    return prefix + m.id.substr(m.id.find('_') + 1) + "_" + std::to_string(index);
  }
  static std::string item_id(const ResponseMeta& m, const StreamState& s) {
    return item_id(m, s.open == StreamState::Block::thinking ? "rs_" : "msg_", s.blocks - 1);
  }
  // A message; `cut`: the limit ended it (status "incomplete").
  static json message_item(const ResponseMeta& m, int index, const std::string& text, bool cut = false,
                           json logprobs = json::array()) {
    return {{"type", "message"},
            {"id", item_id(m, "msg_", index)},
            {"status", cut ? "incomplete" : "completed"},
            {"role", "assistant"},
            {"content", json::array({text_part(text, std::move(logprobs))})}};
  }
  static json text_part(const std::string& text, json logprobs = json::array()) {
    return {{"type", "output_text"},
            {"text", text},
            {"annotations", json::array()},
            {"logprobs", std::move(logprobs)}};
  }
  static json reasoning_item(const ResponseMeta& m, int index, const std::string& text) {
    return {{"type", "reasoning"},
            {"id", item_id(m, "rs_", index)},
            {"summary", json::array()},
            {"content", json::array({{{"type", "reasoning_text"}, {"text", text}}})}};
  }
  static json call_item(const ResponseMeta& m, int index, const runtime::ToolCall& c) {
    return {{"type", "function_call"},
            {"id", item_id(m, "fc_", index)},
            {"call_id", c.id},
            {"name", c.name},
            {"arguments", runtime::json_text(c.arguments)},
            {"status", "completed"}};
  }
  static json base(const ResponseMeta& m) {
    return {{"id", m.id},
            {"object", "response"},
            {"created_at", m.created},
            {"status", "completed"},
            {"error", nullptr},
            {"incomplete_details", nullptr},
            {"model", m.model},
            {"output", json::array()},
            {"store", false},
            {"usage", nullptr}};
  }
  static json whole(const ResponseMeta& m, StopReason reason, json items, int input, int output) {
    json r = base(m);
    if (incomplete(reason)) {
      r["status"] = "incomplete";
      r["incomplete_details"] = {{"reason", "max_output_tokens"}};
    }
    r["output"] = std::move(items);
    r["usage"] = {{"input_tokens", input},
                  {"input_tokens_details", {{"cached_tokens", 0}}},
                  {"output_tokens", output},
                  {"output_tokens_details", {{"reasoning_tokens", 0}}},
                  {"total_tokens", input + output}};
    return r;
  }
  static std::string event(StreamState& s, const char* type, json fields) {
    json e = {{"type", type}, {"sequence_number", s.events++}};
    e.update(fields);
    return sse_event(type, e);
  }
  // Opens an item of `type` (a message with its one text part, or a reasoning item) unless one is open.
  // An item's one content part: output_text for a message, reasoning_text for reasoning.
  static json part_of(StreamState::Block type, const std::string& text) {
    return type == StreamState::Block::text ? text_part(text)
                                            : json{{"type", "reasoning_text"}, {"text", text}};
  }
  // Opens an item of `type` (a message or a reasoning item, each with its one part) unless one is open.
  static std::string open_item(const ResponseMeta& m, StreamState& s, StreamState::Block type) {
    if (s.open == type) return "";
    std::string out = close_item(m, s);
    s.open = type;
    const int index = s.blocks++;
    json item = type == StreamState::Block::text ? message_item(m, index, "") : reasoning_item(m, index, "");
    item["content"] = json::array();
    if (type == StreamState::Block::text) item["status"] = "in_progress";
    out += event(s, "response.output_item.added", {{"output_index", index}, {"item", item}});
    return out + event(s, "response.content_part.added",
                       {{"item_id", item["id"]},
                        {"output_index", index},
                        {"content_index", 0},
                        {"part", part_of(type, "")}});
  }
  // Closes the open item; `cut`: the limit ended it.
  static std::string close_item(const ResponseMeta& m, StreamState& s, bool cut = false) {
    if (s.open == StreamState::Block::none) return "";
    const int index = s.blocks - 1;
    const bool text = s.open == StreamState::Block::text;
    const json where = {{"item_id", item_id(m, s)}, {"output_index", index}, {"content_index", 0}};
    json done = where, part = where;
    done["text"] = s.item_text;
    if (text) done["logprobs"] = s.item_logprobs;
    part["part"] = part_of(s.open, s.item_text);
    if (text) part["part"]["logprobs"] = s.item_logprobs;
    std::string out = event(s, text ? "response.output_text.done" : "response.reasoning_text.done", done);
    out += event(s, "response.content_part.done", part);
    json item = text ? message_item(m, index, s.item_text, cut, std::move(s.item_logprobs))
                     : reasoning_item(m, index, s.item_text);
    s.item_logprobs = json::array();
    out += event(s, "response.output_item.done", {{"output_index", index}, {"item", item}});
    s.items.push_back(std::move(item));
    s.open = StreamState::Block::none;
    s.item_text.clear();
    return out;
  }
};

}  // namespace

std::unique_ptr<Dialect> openai_responses_dialect() {
  return std::make_unique<Responses>();
}

}  // namespace mx8::server
