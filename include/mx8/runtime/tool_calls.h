// Tool calls: how a chat model's template offers tools and shows a call, and reading the calls out of
// the text the model generates.
//
// A model trained for tool use writes a call in its family's own syntax; mx8 reads three:
//   hermes       <tool_call>{"name": ..., "arguments": {...}}</tool_call>, once per call
//                (Qwen2.5, Qwen3, Hermes and the many templates that copied them)
//   llama3_json  the whole reply one JSON object {"name": ..., "parameters": {...}}, or several joined
//                by ';' (Llama 3.1 / 3.2 / 3.3 with custom tools)
//   deepseek_v3  <｜tool▁calls▁begin｜> then per call <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//                ```json ARGS ```<｜tool▁call▁end｜> (V3; V3.1's NAME<｜tool▁sep｜>ARGS form too),
//                then <｜tool▁calls▁end｜>
//   mistral      [TOOL_CALLS] then a JSON array [{"name": ..., "arguments": {...}}, ...] (the v3
//                tokenizer's models: Mistral-7B-Instruct-v0.3, Mistral-Nemo, Mistral-Large-2), or per
//                call [TOOL_CALLS]NAME[ARGS]{...} (v11: Mistral-Small-3.2, Magistral, Devstral), to the
//                end of the reply. [TOOL_CALLS] and [ARGS] are special tokens in those vocabularies
//                (tool_marker_tokens).
// Which one a model speaks, and whether its template renders tools at all, is found by rendering a
// probe conversation through the template (probe_tool_format), not by the model's name.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mx8/runtime/chat_template.h"
#include "mx8/runtime/tokenizer.h"

namespace mx8::runtime {

enum class ToolSyntax { none, hermes, llama3_json, deepseek_v3, mistral };
const char* tool_syntax_name(ToolSyntax s);
// The text that opens a reply's calls ("<tool_call>" for Hermes; "{" for Llama 3 JSON; "": none).
std::string_view tool_call_opener(ToolSyntax s);
// The text that closes the calls that tool_call_opener opened ("</tool_call>": one Hermes call; "":
// the end of the reply).
std::string_view tool_call_closer(ToolSyntax s);
// The special (control) tokens of `tok` that write a call in syntax `s` ([TOOL_CALLS], [ARGS] and
// [CALL_ID] in Mistral's vocabularies): a reply's text must keep them where it drops the others.
std::vector<int32_t> tool_marker_tokens(const Tokenizer& tok, ToolSyntax s);

struct ToolCall {
  std::string id;  // given by whoever shows the call to a client (the server: "call_...", "toolu_...")
  std::string name;
  nlohmann::ordered_json arguments;  // always a JSON object
};

// What a chat template does with tools.
struct ToolFormat {
  // The template puts the `tools` variable into the prompt.
  bool renders_tools = false;
  // How an assistant turn's calls look when rendered (none: the template does not render them, or in
  // a syntax mx8 does not read).
  ToolSyntax syntax = ToolSyntax::none;
  // A call's arguments go to the template as a JSON object (Qwen, Llama 3.1) or as JSON text
  // (DeepSeek-V3 concatenates them into the prompt).
  bool object_arguments = true;
  // The content of an assistant turn that only calls tools goes to the template as null (DeepSeek-V3
  // renders calls only then), or as "".
  bool null_content = true;
  // The template takes only call ids of nine letters and digits (Mistral's): the ids a client sends
  // (call_..., toolu_...) go to it as nine characters made from each (the same id, the same nine).
  bool nine_character_ids = false;
  // The rendered assistant turn of one call, cut where the function's name starts and where its
  // arguments start, around kProbeName: what a reply must begin with to be that call.
  std::string before_name, between_name_and_arguments;
  // What the rendered turn holds after the arguments (closing markers, the end of the turn).
  std::string after_arguments;

  // `messages` (as ChatTemplate::render takes them, calls with object arguments and "" content) with
  // each assistant turn's calls in the forms this template takes.
  nlohmann::ordered_json template_messages(nlohmann::ordered_json messages) const;

  // The text that starts a reply which must call a tool: `name`'s call up to its arguments, or where
  // `name` is empty, any call up to the function's name.
  std::string forced_call_prefix(const std::string& name) const;

  // How a strict tool's call is held to its schema (nullopt: it cannot be, and calls stay free).
  struct StrictCallForm {
    std::string open, close;  // around each call ("" close: calls run to the next one or the end)
    // "": the call is the object {"name": ..., "arguments": ...}; else the name bare, this, then the
    // arguments' object.
    std::string name_separator;
    bool operator==(const StrictCallForm&) const = default;
  };
  // Hermes: <tool_call> and </tool_call> around the object; Llama 3 JSON: no markers (its calls are the
  // whole reply); Mistral's array form: one call per array ("[TOOL_CALLS] [" as the template writes it,
  // and "]"); Mistral's NAME[ARGS] form: "[TOOL_CALLS]", the bare name, "[ARGS]"; DeepSeek: one call
  // per calls block, its name bare before <｜tool▁sep｜> (V3.1) or after "function<｜tool▁sep｜>" and
  // before its ```json fence (V3).
  std::optional<StrictCallForm> strict_call_form() const;
};

// `j` as JSON text the way Python's json.dumps writes it (", " and ": " between items, non-ASCII
// kept): how chat templates (tojson) and the models trained on them write a call's arguments, so the
// text a client is given back renders as the model wrote it.
std::string json_text(const nlohmann::ordered_json& j);

// `id` as nine letters and digits: itself where it is that already, else made from its hash.
std::string nine_character_id(std::string_view id);

// Renders probe conversations through `t`, with `variables` besides (a request's enable_thinking, say).
// Never throws: a template that fails on the probes has no tool support (renders_tools false, syntax
// none).
ToolFormat probe_tool_format(const ChatTemplate& t,
                             const nlohmann::ordered_json& variables = nlohmann::ordered_json::object());

// Reads a reply as it is generated: feed() each new piece of text, finish() at the end. Text outside
// calls comes back as the reply's text, as soon as it cannot be the start of a call (a possible call
// marker, and whitespace before it, is held back until known). Whitespace between the text and a
// call, and after a call, is dropped. A call whose syntax does not parse (say a reply cut off by the
// token limit inside it) comes back as text, unchanged, so nothing the model wrote is lost. A reply
// with no call comes back byte for byte.
class ToolCallParser {
 public:
  struct Piece {
    std::string text;
    std::vector<ToolCall> calls;
  };
  explicit ToolCallParser(ToolSyntax syntax);
  // `prefix` is the start of a call that the prompt already holds (a forced call): read as if the
  // model had written it. What precedes the call in it is never returned; should the call not parse,
  // the text returned starts with its opening marker.
  void prime(std::string_view prefix);
  Piece feed(std::string_view text);
  Piece finish();

 private:
  void step(Piece& out, bool at_end);
  ToolSyntax syntax_;
  std::string buf_;          // text not yet returned or consumed
  std::string dropped_ws_;   // whitespace dropped before the call being read (returned if it fails)
  bool in_call_ = false;     // buf_ is the inside of a call region
  size_t searched_ = 0;      // in a call: where in buf_ the search for its closing marker goes on
  bool after_call_ = false;  // drop whitespace until the next text
  bool seen_text_ = false;   // llama3_json: the reply has started (a call can only be the whole reply)
};

}  // namespace mx8::runtime
