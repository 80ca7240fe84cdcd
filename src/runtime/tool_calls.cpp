// Tool calls: see tool_calls.h.
#include "mx8/runtime/tool_calls.h"

#include <algorithm>
#include <optional>

#include "mx8/util/json_parse.h"
#include "runtime/chat_template_value.h"
#include "runtime/marker_scan.h"

namespace mx8::runtime {
namespace {

using json = nlohmann::ordered_json;

constexpr std::string_view kDeepSeekCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kDeepSeekCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kDeepSeekCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kDeepSeekCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kDeepSeekSep = "<｜tool▁sep｜>";
constexpr std::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr std::string_view kMistralArgs = "[ARGS]";
constexpr std::string_view kMistralCallId = "[CALL_ID]";

// The probe: a tool and a call of it whose name and arguments appear nowhere else in a rendering.
constexpr const char* kProbeName = "mx8_probe_function";
constexpr const char* kProbeArguments = R"({"mx8_probe_key": "mx8_probe_value"})";

// Where a call region starts and ends ("" end: at the end of the reply).
struct Markers {
  std::string_view open, close;
};

Markers markers(ToolSyntax s) {
  switch (s) {
    case ToolSyntax::hermes:
      return {"<tool_call>", "</tool_call>"};
    case ToolSyntax::deepseek_v3:
      return {kDeepSeekCallsBegin, kDeepSeekCallsEnd};
    case ToolSyntax::llama3_json:
      return {"{", ""};
    case ToolSyntax::mistral:
      return {kMistralCalls, ""};
    default:
      return {"", ""};
  }
}

}  // namespace

std::string_view tool_call_opener(ToolSyntax s) {
  return markers(s).open;
}

std::string_view tool_call_closer(ToolSyntax s) {
  return markers(s).close;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// `text` as one JSON value, or nullopt (a syntax error, or nesting past the bound).
std::optional<json> parse(std::string_view text) {
  try {
    return parse_json_bounded<json>(text, "a tool call");
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// A call's arguments: an object, or (as some models write them) a string holding one.
std::optional<json> arguments_object(const json& a) {
  if (a.is_object()) return a;
  if (a.is_string())
    if (auto inner = parse(a.get<std::string>()); inner && inner->is_object()) return inner;
  return std::nullopt;
}

// {"name": "...", "arguments" (or "parameters"): {...}}; other members (Mistral's "id") are ignored.
std::optional<ToolCall> call_value(const json& j) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return std::nullopt;
  const char* key = j.contains("arguments") ? "arguments" : "parameters";
  if (!j.contains(key)) return std::nullopt;
  std::optional<json> args = arguments_object(j[key]);
  if (!args || j["name"].get<std::string>().empty()) return std::nullopt;
  return ToolCall{"", j["name"], std::move(*args)};
}

std::optional<ToolCall> call_object(std::string_view text) {
  const std::optional<json> j = parse(trim(text));
  return j ? call_value(*j) : std::nullopt;
}

// The end of the JSON object or array that starts `text` (one past its closing bracket), or npos when
// it does not close; strings and their escapes are skipped.
size_t json_value_end(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string_view::npos;
}

// Llama 3: objects separated by ';' (and whitespace), nothing else.
std::optional<std::vector<ToolCall>> llama3_calls(std::string_view region) {
  std::vector<ToolCall> calls;
  region = trim(region);
  while (!region.empty()) {
    const size_t end = region.front() == '{' ? json_value_end(region) : std::string_view::npos;
    if (end == std::string_view::npos) return std::nullopt;
    std::optional<ToolCall> c = call_object(region.substr(0, end));
    if (!c) return std::nullopt;
    calls.push_back(std::move(*c));
    region = trim(region.substr(end));
    if (!region.empty() && region.front() == ';') region = trim(region.substr(1));
  }
  if (calls.empty()) return std::nullopt;
  return calls;
}

// One DeepSeek call, between its begin and end markers: "function<sep>NAME\n```json\nARGS\n```" (V3)
// or "NAME<sep>ARGS" (V3.1).
std::optional<ToolCall> deepseek_call(std::string_view inner) {
  const size_t sep = inner.find(kDeepSeekSep);
  if (sep == std::string_view::npos) return std::nullopt;
  std::string_view head = trim(inner.substr(0, sep)), rest = inner.substr(sep + kDeepSeekSep.size());
  std::string name;
  std::string_view args;
  const size_t fence = rest.find("```json");
  if (head == "function" && fence != std::string_view::npos) {
    name = std::string(trim(rest.substr(0, fence)));
    args = trim(rest.substr(fence + 7));
    if (args.size() < 3 || args.substr(args.size() - 3) != "```") return std::nullopt;
    args.remove_suffix(3);
  } else {
    name = std::string(head);
    args = rest;
  }
  const std::optional<json> a = parse(trim(args));
  if (name.empty() || !a || !a->is_object()) return std::nullopt;
  return ToolCall{"", std::move(name), *a};
}

std::optional<std::vector<ToolCall>> deepseek_calls(std::string_view region) {
  std::vector<ToolCall> calls;
  region = trim(region);
  while (!region.empty()) {
    if (region.substr(0, kDeepSeekCallBegin.size()) != kDeepSeekCallBegin) return std::nullopt;
    region.remove_prefix(kDeepSeekCallBegin.size());
    const size_t end = region.find(kDeepSeekCallEnd);
    if (end == std::string_view::npos) return std::nullopt;
    std::optional<ToolCall> c = deepseek_call(region.substr(0, end));
    if (!c) return std::nullopt;
    calls.push_back(std::move(*c));
    region = trim(region.substr(end + kDeepSeekCallEnd.size()));
  }
  if (calls.empty()) return std::nullopt;
  return calls;
}

// Mistral, after the first [TOOL_CALLS]: a JSON array of call objects, or NAME[ARGS]{...} (with
// [CALL_ID]ID before [ARGS] where the model writes ids), each such call after the first opened by
// [TOOL_CALLS] again.
std::optional<std::vector<ToolCall>> mistral_calls(std::string_view region) {
  std::vector<ToolCall> calls;
  for (region = trim(region); !region.empty(); region = trim(region)) {
    if (region.front() == '[' && region.substr(0, kMistralCalls.size()) != kMistralCalls) {
      const size_t end = json_value_end(region);
      const std::optional<json> a =
          end == std::string_view::npos ? std::nullopt : parse(region.substr(0, end));
      if (!a || !a->is_array() || a->empty()) return std::nullopt;
      for (const json& c : *a) {
        std::optional<ToolCall> call = call_value(c);
        if (!call) return std::nullopt;
        calls.push_back(std::move(*call));
      }
      region.remove_prefix(end);
    } else {
      const size_t args_at = region.find(kMistralArgs);
      if (args_at == std::string_view::npos) return std::nullopt;
      std::string_view name = region.substr(0, args_at);
      name = trim(name.substr(0, name.find(kMistralCallId)));
      const bool plain = !name.empty() && std::none_of(name.begin(), name.end(), [](char c) {
        return is_space(c) || c == '[' || c == ']' || c == '"' || c == '{';
      });
      region = trim(region.substr(args_at + kMistralArgs.size()));
      const size_t end =
          region.empty() || region.front() != '{' ? std::string_view::npos : json_value_end(region);
      const std::optional<json> a =
          end == std::string_view::npos ? std::nullopt : parse(region.substr(0, end));
      if (!plain || !a || !a->is_object()) return std::nullopt;
      calls.push_back(ToolCall{"", std::string(name), *a});
      region.remove_prefix(end);
    }
    region = trim(region);
    if (region.substr(0, kMistralCalls.size()) == kMistralCalls) region.remove_prefix(kMistralCalls.size());
  }
  if (calls.empty()) return std::nullopt;
  return calls;
}

// The calls in a region (between the markers, the opening one's text excluded), or nullopt.
std::optional<std::vector<ToolCall>> region_calls(ToolSyntax s, std::string_view region) {
  switch (s) {
    case ToolSyntax::hermes:
      if (std::optional<ToolCall> c = call_object(region)) return std::vector<ToolCall>{std::move(*c)};
      return std::nullopt;
    case ToolSyntax::llama3_json:
      return llama3_calls("{" + std::string(region));
    case ToolSyntax::deepseek_v3:
      return deepseek_calls(region);
    case ToolSyntax::mistral:
      return mistral_calls(region);
    default:
      return std::nullopt;
  }
}

// `variables` with the probe's tools and add_generation_prompt.
json with(json variables, const json& tools, bool generation_prompt) {
  variables["tools"] = tools;
  variables["add_generation_prompt"] = generation_prompt;
  return variables;
}

}  // namespace

const char* tool_syntax_name(ToolSyntax s) {
  switch (s) {
    case ToolSyntax::hermes:
      return "hermes";
    case ToolSyntax::llama3_json:
      return "llama3_json";
    case ToolSyntax::deepseek_v3:
      return "deepseek_v3";
    case ToolSyntax::mistral:
      return "mistral";
    default:
      return "none";
  }
}

std::vector<int32_t> tool_marker_tokens(const Tokenizer& tok, ToolSyntax s) {
  std::vector<int32_t> ids;
  if (s != ToolSyntax::mistral) return ids;  // the others' markers are plain (added) tokens
  for (std::string_view marker : {kMistralCalls, kMistralArgs, kMistralCallId})
    if (std::optional<TokenId> id = tok.find_token(marker); id && tok.is_special(*id)) ids.push_back(*id);
  return ids;
}

std::string nine_character_id(std::string_view id) {
  static constexpr std::string_view kDigits =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  if (id.size() == 9 && id.find_first_not_of(kDigits) == std::string_view::npos) return std::string(id);
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a: 62^9 < 2^64, so nine digits hold most of it
  for (char c : id) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  std::string out(9, '0');
  for (char& c : out) c = kDigits[h % 62], h /= 62;
  return out;
}

std::string json_text(const json& j) {
  return jinja::to_json(jinja::Value::from_json(j), -1);
}

std::string ToolFormat::forced_call_prefix(const std::string& name) const {
  return name.empty() ? before_name : before_name + name + between_name_and_arguments;
}

std::optional<ToolFormat::StrictCallForm> ToolFormat::strict_call_form() const {
  constexpr std::string_view kObjectStart = R"({"name": ")";
  const std::string_view b = before_name;
  const bool bare_name = !between_name_and_arguments.empty() && between_name_and_arguments[0] != '"';
  switch (syntax) {
    case ToolSyntax::hermes:
      return StrictCallForm{std::string(markers(syntax).open), std::string(markers(syntax).close), ""};
    case ToolSyntax::llama3_json:
      return StrictCallForm{};
    case ToolSyntax::mistral:
      if (bare_name) return StrictCallForm{before_name, "", between_name_and_arguments};
      if (b.size() > kObjectStart.size() && b.substr(b.size() - kObjectStart.size()) == kObjectStart &&
          b.substr(b.size() - kObjectStart.size() - 1, 1) == "[")
        return StrictCallForm{std::string(b.substr(0, b.size() - kObjectStart.size())), "]", ""};
      break;
    case ToolSyntax::deepseek_v3:  // one call per block (DeepSeek-V3's template closes a block of one
                                   // call only where another follows: the close is written here)
      if (const size_t end = after_arguments.find(kDeepSeekCallEnd); bare_name && end != std::string::npos)
        return StrictCallForm{
            before_name,
            after_arguments.substr(0, end + kDeepSeekCallEnd.size()) + std::string(kDeepSeekCallsEnd),
            between_name_and_arguments};
      break;
    default:
      break;
  }
  return std::nullopt;
}

json ToolFormat::template_messages(json messages) const {
  for (json& m : messages) {
    if (nine_character_ids && m.contains("tool_call_id") && m["tool_call_id"].is_string())
      m["tool_call_id"] = nine_character_id(m["tool_call_id"].get<std::string>());
    if (!m.contains("tool_calls")) continue;
    if (nine_character_ids)
      for (json& c : m["tool_calls"])
        if (c.contains("id") && c["id"].is_string()) c["id"] = nine_character_id(c["id"].get<std::string>());
    if (null_content && m.value("content", json()) == "") m["content"] = nullptr;
    if (!object_arguments)  // the template writes the arguments as the JSON text a client sent
      for (json& c : m["tool_calls"]) c["function"]["arguments"] = json_text(c["function"]["arguments"]);
  }
  return messages;
}

ToolFormat probe_tool_format(const ChatTemplate& t, const json& variables) {
  ToolFormat f;
  const json tools =
      json::array({{{"type", "function"},
                    {"function",
                     {{"name", kProbeName},
                      {"description", "mx8's probe of the chat template"},
                      {"parameters", {{"type", "object"}, {"properties", json::object()}}}}}}});
  const json user = {{"role", "user"}, {"content", "mx8 probe"}};
  std::string prompt;
  try {
    prompt = t.render(json::array({user}), with(variables, tools, true));
  } catch (const std::exception&) {  // the template's own error, or one the probe provoked
    return f;
  }
  f.renders_tools = prompt.find(kProbeName) != std::string::npos;
  // The assistant turn of one call: the conversation with it, past the prompt that asks for it. Each
  // form of the arguments (object, text), of the turn's empty content (null, "") and of the call's id
  // (OpenAI's, or the nine characters Mistral's templates insist on) is tried in turn.
  for (const int form : {0, 1, 2, 3, 4, 5, 6, 7}) {
    const bool object = form % 4 < 2, null_content = form % 2 == 0, nine = form >= 4;
    const json args = object ? json::parse(kProbeArguments) : json(kProbeArguments);
    const json call = {
        {"role", "assistant"},
        {"content", null_content ? json() : json("")},
        {"tool_calls", json::array({{{"id", nine ? "mx8probe1" : "call_mx8probe"},
                                     {"type", "function"},
                                     {"function", {{"name", kProbeName}, {"arguments", args}}}}})}};
    std::string whole;
    try {
      whole = t.render(json::array({user, call}), with(variables, tools, false));
    } catch (const std::exception&) {  // the template's own error, or one the probe provoked
      continue;
    }
    if (whole.compare(0, prompt.size(), prompt) != 0) continue;
    const std::string turn = whole.substr(prompt.size());
    const size_t name_at = turn.find(kProbeName), args_at = turn.find(kProbeArguments);
    if (name_at == std::string::npos || args_at == std::string::npos || args_at < name_at) continue;
    f.object_arguments = object;
    f.null_content = null_content;
    f.nine_character_ids = nine;
    f.before_name = turn.substr(0, name_at);
    const size_t name_end = name_at + std::string_view(kProbeName).size();
    f.between_name_and_arguments = turn.substr(name_end, args_at - name_end);
    f.after_arguments = turn.substr(args_at + std::string_view(kProbeArguments).size());
    if (f.before_name.find("<tool_call>") != std::string::npos)
      f.syntax = ToolSyntax::hermes;
    else if (f.before_name.find(kDeepSeekCallsBegin) != std::string::npos)
      f.syntax = ToolSyntax::deepseek_v3;
    else if (f.before_name.find(kMistralCalls) != std::string::npos)
      f.syntax = ToolSyntax::mistral;
    else if (trim(f.before_name) == R"({"name": ")")
      f.syntax = ToolSyntax::llama3_json;
    break;
  }
  return f;
}

ToolCallParser::ToolCallParser(ToolSyntax syntax) : syntax_(syntax) {}

void ToolCallParser::prime(std::string_view prefix) {
  Piece ignored;
  buf_ += prefix;
  step(ignored, false);
  dropped_ws_.clear();  // the prompt's, like the text before the call
}

ToolCallParser::Piece ToolCallParser::feed(std::string_view text) {
  Piece out;
  buf_ += text;
  step(out, false);
  return out;
}

ToolCallParser::Piece ToolCallParser::finish() {
  Piece out;
  step(out, true);
  return out;
}

void ToolCallParser::step(Piece& out, bool at_end) {
  const Markers m = markers(syntax_);
  for (;;) {
    if (in_call_) {
      // Only the text not searched before (and a marker's length back) can hold the close: a long
      // call costs its length once, not once per token.
      const size_t close = m.close.empty() ? std::string::npos : buf_.find(m.close, searched_);
      if (close == std::string::npos && !at_end) {
        searched_ = buf_.size() >= m.close.size() ? buf_.size() - m.close.size() + 1 : 0;
        return;
      }
      searched_ = 0;
      const std::string_view region = std::string_view(buf_).substr(0, close);
      if (std::optional<std::vector<ToolCall>> calls = region_calls(syntax_, region)) {
        for (ToolCall& c : *calls) out.calls.push_back(std::move(c));
        after_call_ = true;
      } else {  // not a call after all: the text as the model wrote it
        out.text += dropped_ws_;
        out.text += m.open;
        out.text += buf_.substr(0, close == std::string::npos ? buf_.size() : close + m.close.size());
      }
      dropped_ws_.clear();
      buf_.erase(0, close == std::string::npos ? buf_.size() : close + m.close.size());
      in_call_ = false;
      continue;
    }
    if (after_call_) {
      size_t i = 0;
      while (i < buf_.size() && is_space(buf_[i])) ++i;
      buf_.erase(0, i);
      if (buf_.empty()) return;
      after_call_ = false;
    }
    if (m.open.empty() || (syntax_ == ToolSyntax::llama3_json && seen_text_)) {
      out.text += buf_;
      buf_.clear();
      return;
    }
    size_t open = std::string::npos;
    if (syntax_ == ToolSyntax::llama3_json) {
      // A call is the whole reply: only its first visible character can open one.
      const size_t first = buf_.find_first_not_of(" \n\t\r");
      if (first == std::string::npos) {
        if (at_end) out.text += buf_, buf_.clear();
        return;
      }
      seen_text_ = true;
      if (buf_[first] == '{') open = first;
    } else {
      open = buf_.find(m.open);
    }
    if (open != std::string::npos) {
      size_t text_end = open;
      while (text_end > 0 && is_space(buf_[text_end - 1])) --text_end;
      out.text += buf_.substr(0, text_end);
      dropped_ws_ = buf_.substr(text_end, open - text_end);
      buf_.erase(0, open + m.open.size());
      in_call_ = true;
      continue;
    }
    if (at_end || syntax_ == ToolSyntax::llama3_json) {
      out.text += buf_;
      buf_.clear();
      return;
    }
    // Hold back what may be the start of a call: a partial marker, and the whitespace before it.
    const size_t cut = safe_end(buf_, m.open);
    out.text += buf_.substr(0, cut);
    buf_.erase(0, cut);
    return;
  }
}

}  // namespace mx8::runtime
