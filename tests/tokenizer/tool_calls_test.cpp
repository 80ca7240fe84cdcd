// Tool calls (runtime/tool_calls.h): what the real templates of tests/data/chat say about tools, and
// the calls read out of replies in each family's syntax, whole and streamed in every split.
#include "mx8/runtime/tool_calls.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "mx8/runtime/json_constraint.h"
#include "mx8/runtime/json_matcher.h"
#include "runtime/tokenizer/byte_level.h"
#include "tokenizer/tokenizer_test_data.h"

namespace mx8::runtime {
namespace {

using json = nlohmann::ordered_json;

ChatTemplate fixture_template(const std::string& name) {
  const auto path = std::filesystem::path(MX8_SOURCE_DIR) / "tests" / "data" / "chat" / "fixtures.json";
  const json t = json::parse(test::read_text(path))["templates"][name];
  return ChatTemplate(t["source"].get<std::string>(), t["bos_token"].get<std::string>(),
                      t["eos_token"].get<std::string>());
}

TEST(ToolFormat, ProbedFromTheRealTemplates) {
  const ToolFormat qwen3 = probe_tool_format(fixture_template("qwen3"));
  EXPECT_TRUE(qwen3.renders_tools);
  EXPECT_EQ(qwen3.syntax, ToolSyntax::hermes);
  EXPECT_TRUE(qwen3.object_arguments);
  // Qwen3 shows the last assistant turn with an empty thinking block: a forced call skips thinking.
  EXPECT_EQ(qwen3.forced_call_prefix(""), "<think>\n\n</think>\n\n<tool_call>\n{\"name\": \"");
  EXPECT_EQ(qwen3.forced_call_prefix("add"),
            "<think>\n\n</think>\n\n<tool_call>\n{\"name\": \"add\", \"arguments\": ");
  // With thinking switched off the prompt holds the empty block already: the call starts at once.
  EXPECT_EQ(
      probe_tool_format(fixture_template("qwen3"), {{"enable_thinking", false}}).forced_call_prefix("add"),
      "<tool_call>\n{\"name\": \"add\", \"arguments\": ");

  const ToolFormat llama31 = probe_tool_format(fixture_template("llama31_style"));
  EXPECT_TRUE(llama31.renders_tools);
  EXPECT_EQ(llama31.syntax, ToolSyntax::llama3_json);
  EXPECT_TRUE(llama31.object_arguments);
  EXPECT_EQ(llama31.forced_call_prefix("add"), "{\"name\": \"add\", \"parameters\": ");

  // DeepSeek-V3's template takes no `tools` (its prompt has no tool section) but renders calls, with
  // their arguments as text.
  const ToolFormat deepseek = probe_tool_format(fixture_template("deepseek_v3"));
  EXPECT_FALSE(deepseek.renders_tools);
  EXPECT_EQ(deepseek.syntax, ToolSyntax::deepseek_v3);
  EXPECT_FALSE(deepseek.object_arguments);
  EXPECT_EQ(deepseek.forced_call_prefix("add"),
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n");

  // Mistral's: the v3 form takes only ids of nine characters (the probe finds that out), the v11 form
  // writes each call as NAME[ARGS]ARGUMENTS.
  const ToolFormat mistral_v3 = probe_tool_format(fixture_template("mistral_v3_style"));
  EXPECT_TRUE(mistral_v3.renders_tools);
  EXPECT_EQ(mistral_v3.syntax, ToolSyntax::mistral);
  EXPECT_TRUE(mistral_v3.object_arguments);
  EXPECT_TRUE(mistral_v3.nine_character_ids);
  EXPECT_EQ(mistral_v3.forced_call_prefix("add"), "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": ");
  const ToolFormat mistral_v11 = probe_tool_format(fixture_template("mistral_v11_style"));
  EXPECT_TRUE(mistral_v11.renders_tools);
  EXPECT_EQ(mistral_v11.syntax, ToolSyntax::mistral);
  EXPECT_FALSE(mistral_v11.nine_character_ids);
  EXPECT_EQ(mistral_v11.forced_call_prefix("add"), "[TOOL_CALLS]add[ARGS]");
  EXPECT_EQ(mistral_v11.forced_call_prefix(""), "[TOOL_CALLS]");

  // How each holds a strict call (tool_choice forced or not, the call's JSON is held to its schema).
  using Form = ToolFormat::StrictCallForm;
  EXPECT_EQ(qwen3.strict_call_form(), (Form{"<tool_call>", "</tool_call>", ""}));
  EXPECT_EQ(llama31.strict_call_form(), Form{});
  EXPECT_EQ(mistral_v3.strict_call_form(), (Form{"[TOOL_CALLS] [", "]", ""}));
  EXPECT_EQ(mistral_v11.strict_call_form(), (Form{"[TOOL_CALLS]", "", "[ARGS]"}));
  EXPECT_EQ(deepseek.strict_call_form(),
            (Form{"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>",
                  "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>", "\n```json\n"}));

  // Templates with no tool use at all.
  for (const char* name : {"llama3", "llama2", "mistral", "gemma_style"}) {
    const ToolFormat none = probe_tool_format(fixture_template(name));
    EXPECT_FALSE(none.renders_tools) << name;
    EXPECT_EQ(none.syntax, ToolSyntax::none) << name;
  }
}

// Feeds `reply` whole, then in every two-piece split and one character at a time; every way must give
// the same text and calls. Returns the whole-reply result.
ToolCallParser::Piece read_reply(ToolSyntax s, const std::string& reply, const std::string& prefix = "") {
  auto run = [&](const std::vector<std::string>& pieces) {
    ToolCallParser p(s);
    if (!prefix.empty()) p.prime(prefix);
    ToolCallParser::Piece all;
    auto take = [&](ToolCallParser::Piece x) {
      all.text += x.text;
      for (ToolCall& c : x.calls) all.calls.push_back(std::move(c));
    };
    for (const std::string& piece : pieces) take(p.feed(piece));
    take(p.finish());
    return all;
  };
  const ToolCallParser::Piece whole = run({reply});
  auto same = [&](const ToolCallParser::Piece& other, const std::string& how) {
    EXPECT_EQ(other.text, whole.text) << how;
    ASSERT_EQ(other.calls.size(), whole.calls.size()) << how;
    for (size_t i = 0; i < whole.calls.size(); ++i) {
      EXPECT_EQ(other.calls[i].name, whole.calls[i].name) << how;
      EXPECT_EQ(other.calls[i].arguments, whole.calls[i].arguments) << how;
    }
  };
  for (size_t cut = 0; cut <= reply.size(); ++cut)
    same(run({reply.substr(0, cut), reply.substr(cut)}), "split at " + std::to_string(cut));
  std::vector<std::string> bytes;
  for (char c : reply) bytes.emplace_back(1, c);
  same(run(bytes), "byte by byte");
  return whole;
}

TEST(ToolCallParser, HermesCallsAndTheTextAroundThem) {
  auto r = read_reply(
      ToolSyntax::hermes,
      "Let me add them.\n\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 2}}\n"
      "</tool_call>\n<tool_call>\n{\"name\": \"mul\", \"arguments\": \"{\\\"a\\\": 3}\"}\n</tool_call>\n");
  EXPECT_EQ(r.text, "Let me add them.");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "add");
  EXPECT_EQ(r.calls[0].arguments, json::parse(R"({"a": 2, "b": 2})"));
  EXPECT_EQ(r.calls[1].name, "mul");  // arguments given as a string holding the object
  EXPECT_EQ(r.calls[1].arguments, json::parse(R"({"a": 3})"));

  // Text after a call is text (its leading whitespace dropped); a call the model did not close but
  // whose JSON is whole is a call.
  r = read_reply(ToolSyntax::hermes,
                 "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>\n\nDone. <tool_call>"
                 "{\"name\": \"g\", \"arguments\": {\"x\": [1, \"}\"]}}");
  EXPECT_EQ(r.text, "Done.");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[1].arguments, json::parse(R"({"x": [1, "}"]})"));
}

TEST(ToolCallParser, WhatIsNotACallComesBackAsWritten) {
  // No call: byte for byte, whitespace and marker-like text included.
  const std::string plain = "a < b and <tool_c are not calls\n\n  ";
  auto r = read_reply(ToolSyntax::hermes, plain);
  EXPECT_EQ(r.text, plain);
  EXPECT_TRUE(r.calls.empty());
  // Broken calls (cut off by the token limit, no name, arguments not an object) return as text, the
  // whitespace before them included.
  for (const std::string broken :
       {"Sure.\n<tool_call>\n{\"name\": \"add\", \"argum", "x <tool_call>{\"arguments\": {}}</tool_call> y",
        "<tool_call>{\"name\": \"f\", \"arguments\": 3}</tool_call>", "<tool_call>not json</tool_call>"}) {
    r = read_reply(ToolSyntax::hermes, broken);
    EXPECT_EQ(r.text, broken);
    EXPECT_TRUE(r.calls.empty()) << broken;
  }
  // With no syntax nothing is read.
  r = read_reply(ToolSyntax::none, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>");
  EXPECT_TRUE(r.calls.empty());
}

TEST(ToolCallParser, Llama3JsonIsTheWholeReply) {
  auto r = read_reply(
      ToolSyntax::llama3_json,
      " {\"name\": \"add\", \"parameters\": {\"a\": 2}}; {\"type\": \"function\", \"name\": \"neg\", "
      "\"parameters\": {\"a\": \"{;}\"}}\n");
  EXPECT_EQ(r.text, "");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "add");
  EXPECT_EQ(r.calls[1].arguments, json::parse(R"({"a": "{;}"})"));
  // JSON after text is text, and so is a JSON reply that is not a call.
  for (const std::string text :
       {"Here: {\"name\": \"add\", \"parameters\": {}}", "{\"answer\": 4}", "{not json"}) {
    r = read_reply(ToolSyntax::llama3_json, text);
    EXPECT_EQ(r.text, text);
    EXPECT_TRUE(r.calls.empty()) << text;
  }
}

TEST(ToolCallParser, DeepSeekV3AndV31Forms) {
  auto r = read_reply(
      ToolSyntax::deepseek_v3,
      "Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n"
      "{\"a\": 2, \"b\": 2}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>mul<｜tool▁sep｜>{\"a\": 3}"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>");
  EXPECT_EQ(r.text, "Checking.");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "add");
  EXPECT_EQ(r.calls[0].arguments, json::parse(R"({"a": 2, "b": 2})"));
  EXPECT_EQ(r.calls[1].name, "mul");
  EXPECT_EQ(r.calls[1].arguments, json::parse(R"({"a": 3})"));
  const std::string cut =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>add\n```json\n{\"a\"";
  r = read_reply(ToolSyntax::deepseek_v3, cut);
  EXPECT_EQ(r.text, cut);
  EXPECT_TRUE(r.calls.empty());
}

TEST(ToolCallParser, MistralArraysAndArgsForms) {
  // v3: one JSON array of calls (ids the model writes are ignored; the server gives its own).
  auto r = read_reply(ToolSyntax::mistral,
                      "Adding. [TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": \"]\"}, "
                      "\"id\": \"a1B2c3D4e\"}, {\"name\": \"neg\", \"arguments\": \"{\\\"a\\\": 3}\"}]");
  EXPECT_EQ(r.text, "Adding.");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "add");
  EXPECT_EQ(r.calls[0].arguments, json::parse(R"({"a": 2, "b": "]"})"));
  EXPECT_EQ(r.calls[1].name, "neg");  // arguments given as a string holding the object
  EXPECT_EQ(r.calls[1].arguments, json::parse(R"({"a": 3})"));
  // v11: [TOOL_CALLS]NAME[ARGS]{...} per call, with or without [CALL_ID]ID.
  r = read_reply(ToolSyntax::mistral,
                 "[TOOL_CALLS]add[ARGS]{\"a\": {\"b\": [1]}}[TOOL_CALLS]mul[CALL_ID]Z9y8X7w6v[ARGS]{}");
  EXPECT_EQ(r.text, "");
  ASSERT_EQ(r.calls.size(), 2u);
  EXPECT_EQ(r.calls[0].name, "add");
  EXPECT_EQ(r.calls[0].arguments, json::parse(R"({"a": {"b": [1]}})"));
  EXPECT_EQ(r.calls[1].name, "mul");
  EXPECT_EQ(r.calls[1].arguments, json::object());
  // Not calls: text as written (a partial marker, a cut-off array, an empty one, a name with spaces,
  // arguments that are no object, text after the calls).
  for (const std::string text :
       {"[TOOL_CALL is no marker", "[TOOL_CALLS] [{\"name\": \"add\", \"argu", "[TOOL_CALLS] []",
        "[TOOL_CALLS]add two[ARGS]{}", "[TOOL_CALLS]add[ARGS][1]", "[TOOL_CALLS]add[ARGS]{} and more",
        "Sure [TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}}] then text"}) {
    r = read_reply(ToolSyntax::mistral, text);
    EXPECT_EQ(r.text, text);
    EXPECT_TRUE(r.calls.empty()) << text;
  }
}

TEST(ToolFormat, NineCharacterIdsAreStableAndOnlyWhereAsked) {
  EXPECT_EQ(nine_character_id("a1B2c3D4e"), "a1B2c3D4e");  // already nine letters and digits
  const std::string a = nine_character_id("call_0"), b = nine_character_id("call_1"),
                    c = nine_character_id("toolu_01A09q90qw90lq917835lq9");
  for (const std::string& id : {a, b, c}) {
    EXPECT_EQ(id.size(), 9u);
    EXPECT_TRUE(std::all_of(id.begin(), id.end(), [](char x) { return std::isalnum(uint8_t(x)); })) << id;
  }
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(nine_character_id("call_0"), a);
  EXPECT_NE(nine_character_id("a1B2c3D4_"), "a1B2c3D4_");  // nine, but not all letters and digits

  // A conversation with OpenAI's ids renders through the v3 template, each call's id the same nine
  // characters in its call and in its result.
  const ChatTemplate t = fixture_template("mistral_v3_style");
  const ToolFormat f = probe_tool_format(t);
  const json messages = json::parse(R"([{"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call_0", "type": "function",
      "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": "4"}])");
  const std::string text = t.render(f.template_messages(messages), {{"add_generation_prompt", true}});
  EXPECT_NE(text.find("\"id\": \"" + a + "\"}]</s>"), std::string::npos) << text;
  EXPECT_NE(text.find("\"call_id\": \"" + a + "\"}[/TOOL_RESULTS]"), std::string::npos) << text;
  // Where the template takes any id, ids go to it as sent.
  const ChatTemplate v11 = fixture_template("mistral_v11_style");
  EXPECT_EQ(probe_tool_format(v11).template_messages(messages)[1]["tool_calls"][0]["id"], "call_0");
}

// Mistral's [TOOL_CALLS] and [ARGS] are special tokens: a reply's text keeps them where it drops the
// other special tokens, and a reply held to a JSON format may write them where calls are free. A
// byte-level vocabulary made here: ids 0-255 the bytes, then </s>, [TOOL_CALLS], [ARGS] (special) and
// <tool_call> (an added token that is plain text, as in Qwen's).
TEST(ToolFormat, MistralMarkersAreSpecialTokensThatRepliesKeep) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::byte_to_string(uint8_t(b))] = b;
  const json tj = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
      {"added_tokens", json::array({{{"id", 256}, {"content", "</s>"}, {"special", true}},
                                    {{"id", 257}, {"content", "[TOOL_CALLS]"}, {"special", true}},
                                    {{"id", 258}, {"content", "[ARGS]"}, {"special", true}},
                                    {{"id", 259}, {"content", "<tool_call>"}, {"special", false}}})}};
  const std::unique_ptr<Tokenizer> tok = tokenizer_from_hf_json(tj.dump(), "", "test tokenizer.json");
  const std::vector<int32_t> markers = tool_marker_tokens(*tok, ToolSyntax::mistral);
  EXPECT_EQ(markers, (std::vector<int32_t>{257, 258}));               // no [CALL_ID] in this vocabulary
  EXPECT_TRUE(tool_marker_tokens(*tok, ToolSyntax::hermes).empty());  // <tool_call> is text already

  const std::vector<int32_t> reply = {'O', 'k', 257, 'f', 258, '{', '}', 256};
  DecodeOptions skip{.skip_special = true};
  EXPECT_EQ(tok->decode(reply, skip), "Okf{}");
  skip.keep_special = markers;
  EXPECT_EQ(tok->decode(reply, skip), "Ok[TOOL_CALLS]f[ARGS]{}");  // </s> still dropped
  const ToolFormat v11 = probe_tool_format(fixture_template("mistral_v11_style"));
  ToolCallParser p(v11.syntax);
  ToolCallParser::Piece read = p.feed(tok->decode(reply, skip));
  const ToolCallParser::Piece end = p.finish();
  EXPECT_EQ(read.text + end.text, "Ok");
  ASSERT_EQ(end.calls.size(), 1u);
  EXPECT_EQ(end.calls[0].name, "f");

  // A JSON format beside free calls: [TOOL_CALLS] may start the reply where the vocabulary reads it
  // as its text, and cannot where it is a special token like the others.
  const auto schema = std::make_shared<const JsonSchema>(JsonSchema::any_object());
  const JsonPrelude prelude{false, false, {"[TOOL_CALLS]"}, "", "", false, false};
  JsonConstraint as_text(std::make_shared<const JsonVocabulary>(*tok, markers), JsonMatcher(schema, prelude));
  EXPECT_TRUE(as_text.allowed()[257]);
  EXPECT_FALSE(as_text.allowed()[258]);  // [ARGS] cannot start a value or the marker
  EXPECT_TRUE(as_text.allowed()['{']);
  as_text.accept(257);
  EXPECT_TRUE(as_text.matcher().free());
  JsonConstraint as_special(std::make_shared<const JsonVocabulary>(*tok), JsonMatcher(schema, prelude));
  EXPECT_FALSE(as_special.allowed()[257]);
}

// A strict call as the JSON rule holds it (ToolFormat::strict_call_form) is one the reader reads: for
// each template, a forced call's prefix, valid arguments and the form's close are taken whole by a
// matcher of that form, and read back as the call.
TEST(ToolFormat, StrictCallFormsAreWhatTheReaderReads) {
  const json add = json::parse(R"({"type": "object", "properties": {"a": {"type": "integer"}},
                                   "required": ["a"], "additionalProperties": false})");
  for (const char* name : {"llama31_style", "mistral_v3_style", "mistral_v11_style", "deepseek_v3"}) {
    const ToolFormat f = probe_tool_format(fixture_template(name));
    const std::optional<ToolFormat::StrictCallForm> form = f.strict_call_form();
    ASSERT_TRUE(form) << name;
    const std::vector<JsonTool> tools = {{"add", add}};
    const JsonSchema calls =
        form->name_separator.empty()
            ? JsonSchema::text().with_calls(tools,
                                            f.syntax == ToolSyntax::llama3_json ? "parameters" : "arguments")
            : JsonSchema::text().with_bare_calls(tools, form->name_separator);
    JsonMatcher m(std::make_shared<const JsonSchema>(calls),
                  {false, false, {}, form->open, form->close, /*calls_only=*/true, /*one_call=*/true});
    const std::string prefix = f.forced_call_prefix("add");
    const std::string rest =
        std::string(R"({"a": 1})") + (form->name_separator.empty() ? "}" : "") + form->close;
    const std::string reply = prefix + rest;
    EXPECT_TRUE(std::all_of(reply.begin(), reply.end(), [&](char c) { return m.feed(uint8_t(c)); }) &&
                m.complete())
        << name << ": " << reply;
    ToolCallParser p(f.syntax);
    p.prime(prefix);
    ToolCallParser::Piece read = p.feed(rest);
    const ToolCallParser::Piece end = p.finish();
    read.calls.insert(read.calls.end(), end.calls.begin(), end.calls.end());
    EXPECT_EQ(read.text + end.text, "") << name;
    ASSERT_EQ(read.calls.size(), 1u) << name;
    EXPECT_EQ(read.calls[0].name, "add") << name;
    EXPECT_EQ(read.calls[0].arguments, json::parse(R"({"a": 1})")) << name;
  }
}

TEST(ToolCallParser, AForcedCallIsReadFromItsPrefix) {
  const ToolFormat qwen3 = probe_tool_format(fixture_template("qwen3"));
  auto r = read_reply(ToolSyntax::hermes, "{\"a\": 1}}\n</tool_call>", qwen3.forced_call_prefix("add"));
  EXPECT_EQ(r.text, "");  // the prefix's empty thinking block is the prompt's, not the reply's
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "add");
  r = read_reply(ToolSyntax::hermes, "mul\", \"arguments\": {}}\n</tool_call>", qwen3.forced_call_prefix(""));
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "mul");
  // A forced call the model did not finish: the call's text from its opening marker, not the prompt's
  // thinking block or whitespace before it.
  r = read_reply(ToolSyntax::hermes, "Mommy", qwen3.forced_call_prefix(""));
  EXPECT_EQ(r.text, "<tool_call>\n{\"name\": \"Mommy");
  EXPECT_TRUE(r.calls.empty());
  const ToolFormat llama31 = probe_tool_format(fixture_template("llama31_style"));
  r = read_reply(ToolSyntax::llama3_json, "{\"a\": 1}}", llama31.forced_call_prefix("add"));
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, json::parse(R"({"a": 1})"));
  const ToolFormat mistral = probe_tool_format(fixture_template("mistral_v3_style"));
  r = read_reply(ToolSyntax::mistral, "{\"a\": 1}}]", mistral.forced_call_prefix("add"));
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, json::parse(R"({"a": 1})"));
}

}  // namespace
}  // namespace mx8::runtime
