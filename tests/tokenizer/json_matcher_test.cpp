// JsonSchema and JsonMatcher: which texts a schema lets a reply be, byte by byte.
#include "mx8/runtime/json_matcher.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "mx8/error.h"

namespace mx8::runtime {
namespace {

using json = nlohmann::json;

std::shared_ptr<const JsonSchema> schema(const char* text) {
  return std::make_shared<const JsonSchema>(JsonSchema::compile(json::parse(text)));
}
std::shared_ptr<const JsonSchema> any_object() {
  return std::make_shared<const JsonSchema>(JsonSchema::any_object());
}

// How far `text` gets: its length when every byte is taken, else the index of the first byte refused.
size_t taken(JsonMatcher m, std::string_view text) {
  for (size_t i = 0; i < text.size(); ++i)
    if (!m.feed(uint8_t(text[i]))) return i;
  return text.size();
}
bool whole(JsonMatcher m, std::string_view text) {
  for (char c : text)
    if (!m.feed(uint8_t(c))) return false;
  return m.complete();
}

TEST(JsonMatcher, AnyObjectTakesJsonObjectsOnly) {
  const JsonMatcher m(any_object());
  for (const char* ok :
       {"{}", " {\"a\": 1}", "{\"a\":[1,-2.5e+3,true,false,null,{\"b\":\"\\u00e9\\n\\uD83D\\ude00\"}]}\n",
        "{\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\": 0}", "{\"a\":-0.0E-0}"})
    EXPECT_TRUE(whole(m, ok)) << ok;
  // Each refused at the byte that breaks it (the index is that byte's).
  const std::pair<const char*, size_t> bad[] = {{"[1]", 0},
                                                {"\"a\"", 0},
                                                {"{a:1}", 1},
                                                {"{\"a\" 1}", 5},
                                                {"{\"a\":01}", 6},
                                                {"{\"a\":1.}", 7},
                                                {"{\"a\":1,}", 7},
                                                {"{\"a\":tru}", 8},
                                                {"{\"a\":\"\n\"}", 6},
                                                {"{\"a\":\"\\x\"}", 7},
                                                {"{}\n{}", 3},
                                                {"{\"a\":\"\xc0\xaf\"}", 6},
                                                {"{\"a\":\"\xed\xa0\x80\"}", 7},
                                                {"{\"a\":\"\xf4\x90\x80\x80\"}", 7},
                                                {"{\"a\":+1}", 5},
                                                {"{\"a\":\"\xe2\x82\"}", 8},
                                                {"{\"a\":\"\\udc00\"}", 9},
                                                {"{\"a\":\"\\ud800x\"}", 12},
                                                {"{\"a\":\"\\ud800\\u0041\"}", 14}};
  for (const auto& [text, at] : bad) EXPECT_EQ(taken(m, text), at) << text;
  for (const char* cut : {"", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":\"b"})
    EXPECT_FALSE(whole(m, cut)) << cut;
}

TEST(JsonMatcher, WhitespaceAndNumbersAreBounded) {
  const JsonMatcher m(any_object());
  // Compact and pretty-printed JSON (up to 4 blanks of indentation per level, one line break per gap);
  // no more: a model cannot pad a reply forever.
  EXPECT_TRUE(whole(m, "\n\n{\n    \"a\": [\n        1,\n        {}\n    ]\n}\n"));
  EXPECT_TRUE(whole(m, " {\n\t\"a\": [1, 2]}"));
  EXPECT_TRUE(whole(m, "{\"a\":[1,{}]}"));
  EXPECT_EQ(taken(m, "{\n\n"), 2u);
  EXPECT_EQ(taken(m, "{  \"a\""), 2u);   // one blank, or a line break and indentation
  EXPECT_EQ(taken(m, "{ \n\"a\""), 2u);  // no blank before a line break
  EXPECT_EQ(taken(m, "{\r\n\"a\""), 1u);
  EXPECT_EQ(taken(m, "  {}"), 1u);
  EXPECT_EQ(taken(m, "{\"a\": [\n         1]}"), 16u);  // 9 blanks at the second level
  EXPECT_EQ(taken(m, "{}\n\n"), 3u);
  EXPECT_EQ(taken(m, "{} "), 2u);
  EXPECT_EQ(taken(m, "\n\n\n{}"), 2u);
  // 40 bytes per number (kMaxNumber).
  EXPECT_TRUE(whole(m, "{\"a\":" + std::string(40, '1') + "}"));
  EXPECT_EQ(taken(m, "{\"a\":" + std::string(41, '1') + "}"), 45u);
  EXPECT_TRUE(whole(m, "{\"a\":1e99}"));  // two exponent digits (kMaxExponent): 1e999 is no double
  EXPECT_EQ(taken(m, "{\"a\":1e999}"), 9u);
  // Nesting stops at kMaxDepth (the document's frame is one of them).
  const std::string deep = "{\"a\":" + std::string(JsonMatcher::kMaxDepth - 2, '[');
  EXPECT_EQ(taken(m, deep + "["), deep.size());
}

TEST(JsonMatcher, SchemaObjectsTakeTheirPropertiesEachOnceAndNeedTheRequired) {
  const JsonMatcher m(schema(R"({"type": "object", "properties": {"name": {"type": "string"},
      "age": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
      "required": ["name", "age"], "additionalProperties": false})"));
  EXPECT_TRUE(whole(m, R"({"name": "Ann", "age": 31})"));
  EXPECT_TRUE(whole(m, R"({"age":31,"tags":["a","b"],"name":"Ann"})"));
  EXPECT_FALSE(whole(m, R"({"name": "Ann"})"));                  // age is required
  EXPECT_EQ(taken(m, R"({"name": "Ann", "name": "Bo"})"), 17u);  // no unused property starts "n"
  EXPECT_EQ(taken(m, R"({"nick": 1})"), 3u);                     // no property starts "ni"
  EXPECT_EQ(taken(m, R"({"age": 3.5})"), 9u);                    // an integer has no fraction
  EXPECT_EQ(taken(m, R"({"age": "3"})"), 8u);                    // nor quotes
  EXPECT_EQ(taken(m, R"({"tags": [1]})"), 10u);
  EXPECT_EQ(taken(m, R"({"name": "Ann", "age": 1,})"), 25u);  // no property is left to follow
}

TEST(JsonMatcher, EnumsConstsChoicesAndLimits) {
  EXPECT_TRUE(whole(JsonMatcher(schema(R"({"enum": ["red", "green", 1, 12, null]})")), "12"));
  const JsonMatcher e(schema(R"({"type": "object", "properties": {"c": {"enum": ["red", "green", 1, 12]}},
      "required": ["c"]})"));
  for (const char* ok : {R"({"c":"red"})", R"({"c": 1})", R"({"c":12 })"}) EXPECT_TRUE(whole(e, ok)) << ok;
  EXPECT_EQ(taken(e, R"({"c":"blue"})"), 6u);
  EXPECT_EQ(taken(e, R"({"c":123})"), 7u);
  // Keywords beside a list still hold: its values they rule out are never written.
  const JsonMatcher r(schema(R"({"type": "integer", "enum": [1, 5, 50, "x", 2.5], "maximum": 10})"));
  for (const char* ok : {"1", "5"}) EXPECT_TRUE(whole(r, ok)) << ok;
  for (const char* no : {"50", "\"x\"", "2.5"}) EXPECT_FALSE(whole(r, no)) << no;
  const JsonMatcher d(schema(
      R"({"type": "string", "enum": ["2025-02-30", "2025-02-28"], "format": "date", "nullable": true})"));
  for (const char* ok : {"\"2025-02-28\"", "null"}) EXPECT_TRUE(whole(d, ok)) << ok;
  EXPECT_FALSE(whole(d, "\"2025-02-30\""));  // no such day
  try {
    schema(R"({"type": "object", "properties": {"s": {"const": "abc", "maxLength": 2}}})");
    ADD_FAILURE() << "a const its maxLength rules out was compiled";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no value of const at #/properties/s"), std::string::npos)
        << e.what();
  }
  const JsonMatcher c(schema(R"({"type": "object", "properties": {"v": {"const": {"x": [1, "a"]}}}})"));
  EXPECT_TRUE(whole(c, R"({"v":{"x":[1,"a"]}})"));  // compact, as nlohmann writes it
  EXPECT_EQ(taken(c, R"({"v":{"x": [1,"a"]}})"), 10u);
  // Optional[int] and a list of types: the first byte chooses.
  const JsonMatcher o(schema(R"({"type": "object", "properties": {"n": {"anyOf": [{"type": "integer"},
      {"type": "null"}]}, "s": {"type": ["string", "boolean"]}}})"));
  for (const char* ok : {R"({"n":null})", R"({"n":-3,"s":true})", R"({"s":"x"})"})
    EXPECT_TRUE(whole(o, ok)) << ok;
  EXPECT_EQ(taken(o, R"({"n":"3"})"), 5u);
  const JsonMatcher l(schema(R"({"type": "array", "items": {"type": "string", "minLength": 1,
      "maxLength": 2}, "minItems": 1, "maxItems": 2})"));
  for (const char* ok : {R"(["a"])", R"(["\u00e9\n","\u20ac"])", "[\"\xf0\x9f\x98\x80\"]"})
    EXPECT_TRUE(whole(l, ok)) << ok;
  EXPECT_EQ(taken(l, "[]"), 1u);
  EXPECT_EQ(taken(l, R"([""])"), 2u);
  EXPECT_EQ(taken(l, R"(["abc"])"), 4u);
  EXPECT_EQ(taken(l, R"(["a","b","c"])"), 8u);
}

TEST(JsonMatcher, ReferencesReachDefinitionsAndRecurse) {
  const JsonMatcher m(schema(R"({"$defs": {"node": {"type": "object", "properties": {
      "value": {"type": "number"}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
      "required": ["value", "next"]}}, "$ref": "#/$defs/node"})"));
  EXPECT_TRUE(whole(m, R"({"value": 1, "next": {"value": 2e3, "next": null}})"));
  EXPECT_FALSE(whole(m, R"({"value": 1, "next": {"value": 2}})"));
}

TEST(JsonMatcher, UnsupportedOrMalformedSchemasAreRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"type": "array", "uniqueItems": true})", "\"uniqueItems\" at #"},
      {R"({"type": "number", "multipleOf": 0.1})", "multipleOf at # must be a whole number"},
      {R"({"type": "integer", "minimum": 1, "maximum": 4, "multipleOf": 5})", "no integer"},
      {R"x({"type": "string", "pattern": "(?=a)"})x",
       "lookaround ((?=, (?!, (?<=, (?<!) is not supported (at #)"},
      {R"({"type": "string", "pattern": "a", "maxLength": 3})", "pattern beside minLength or maxLength at #"},
      {R"({"type": "string", "pattern": 3})", "pattern at # must be a string"},
      {R"({"properties": {"a": {"not": {}}}})", "\"not\" at #/properties/a"},
      {R"({"type": "number", "minimum": "a"})", "minimum at # must be a number"},
      {R"({"type": "integer", "minimum": 5, "maximum": 4})",
       "no integer mx8 can write lies in the range at #"},
      {R"({"type": "integer", "exclusiveMinimum": 4, "exclusiveMaximum": 5})", "no integer"},
      {R"({"type": "integer", "minimum": 1e19})", "no integer"},
      {R"({"type": "number", "maximum": -1e30})", "no number"},
      {R"({"type": "number", "minimum": 1e-15})", "more than 12 decimals"},
      {R"({"type": "texts"})", "unknown type \"texts\""},
      {R"({"anyOf": [{"type": "object"}, {"type": "object", "properties": {}}]})", "can both start with '{'"},
      {R"({"$ref": "#/$defs/missing"})", "names no schema"},
      {R"({"properties": {"a": {}}, "required": ["b"]})", "not one of its properties"},
      {R"({"type": "array", "minItems": 3, "maxItems": 2})", "maxItems is below minItems"},
      {"false", "no value can match"}};
  for (const auto& [text, message] : cases) {
    try {
      JsonSchema::compile(json::parse(text));
      ADD_FAILURE() << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  }
}

// Pydantic's way of putting a description beside a reference: allOf of that one reference.
TEST(JsonMatcher, AllOfOneSchemaIsThatSchema) {
  const auto s = schema(R"({"$defs": {"Kind": {"enum": ["cat", "dog"]}}, "type": "object",
      "properties": {"kind": {"allOf": [{"$ref": "#/$defs/Kind"}], "description": "the animal"}},
      "required": ["kind"]})");
  EXPECT_TRUE(whole(JsonMatcher(s), R"({"kind": "dog"})"));
  EXPECT_FALSE(whole(JsonMatcher(s), R"({"kind": "cow"})"));
  for (const char* text : {R"({"allOf": [{"type": "string"}, {"maxLength": 3}]})",
                           R"({"allOf": [{"type": "string"}], "maxLength": 3})", R"({"allOf": {}})"})
    EXPECT_THROW(JsonSchema::compile(json::parse(text)), Error) << text;
}

TEST(JsonMatcher, RangedNumbersEndInTheirRange) {
  const auto days = schema(R"({"type": "integer", "minimum": 1, "maximum": 14})");
  EXPECT_TRUE(whole(JsonMatcher(days), "7"));
  EXPECT_TRUE(whole(JsonMatcher(days), "14"));
  EXPECT_FALSE(whole(JsonMatcher(days), "0"));
  EXPECT_EQ(taken(JsonMatcher(days), "15"), 1u);   // nor 15, nor 150..159, ... is in range
  EXPECT_EQ(taken(JsonMatcher(days), "140"), 2u);  // 14 is; 140 is not
  EXPECT_EQ(taken(JsonMatcher(days), "-1"), 0u);   // no negative value is
  EXPECT_EQ(taken(JsonMatcher(days), "1.0"), 1u);  // an integer has no fraction
  EXPECT_TRUE(whole(JsonMatcher(days), "10"));

  const auto unit = schema(R"({"type": "number", "minimum": 0, "maximum": 1})");
  EXPECT_TRUE(whole(JsonMatcher(unit), "0.5"));
  EXPECT_TRUE(whole(JsonMatcher(unit), "1.000000"));
  EXPECT_TRUE(whole(JsonMatcher(unit), "-0"));     // 0, as JSON reads it
  EXPECT_EQ(taken(JsonMatcher(unit), "1.5"), 2u);  // 1.5.. is past 1
  EXPECT_EQ(taken(JsonMatcher(unit), "-0.1"), 3u);
  EXPECT_EQ(taken(JsonMatcher(unit), "5e-1"), 0u);       // 5 and 50.. are past 1
  EXPECT_EQ(taken(JsonMatcher(unit), "0.5e0"), 3u);      // no exponent in a ranged number
  EXPECT_EQ(taken(JsonMatcher(unit), "0.1234567"), 8u);  // six decimals

  const auto open = schema(R"({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10})");
  EXPECT_FALSE(whole(JsonMatcher(open), "0"));
  EXPECT_TRUE(whole(JsonMatcher(open), "0.000001"));
  EXPECT_FALSE(whole(JsonMatcher(open), "10"));
  EXPECT_TRUE(whole(JsonMatcher(open), "9.999999"));
  const auto draft4 = schema(R"({"type": "integer", "minimum": 5, "exclusiveMinimum": true})");
  EXPECT_FALSE(whole(JsonMatcher(draft4), "5"));
  EXPECT_TRUE(whole(JsonMatcher(draft4), "6"));
  const auto latitude = schema(R"({"type": "number", "minimum": -90.5, "maximum": 90.25})");
  EXPECT_TRUE(whole(JsonMatcher(latitude), "-90.5"));
  EXPECT_EQ(taken(JsonMatcher(latitude), "-90.51"), 5u);
  EXPECT_TRUE(whole(JsonMatcher(latitude), "90.25"));
  EXPECT_EQ(taken(JsonMatcher(latitude), "90.26"), 4u);
  const auto halves = schema(R"({"type": "integer", "minimum": 0.5, "maximum": 2.5})");  // 1 and 2
  EXPECT_FALSE(whole(JsonMatcher(halves), "0"));
  EXPECT_TRUE(whole(JsonMatcher(halves), "1"));
  EXPECT_TRUE(whole(JsonMatcher(halves), "2"));
  EXPECT_EQ(taken(JsonMatcher(halves), "3"), 0u);
  const auto fine = schema(R"({"type": "number", "minimum": 0.00000001, "maximum": 0.00000002})");
  EXPECT_TRUE(whole(JsonMatcher(fine), "0.00000002"));      // the bounds' eight decimals
  EXPECT_EQ(taken(JsonMatcher(fine), "0.000000015"), 10u);  // and no more
  EXPECT_FALSE(whole(JsonMatcher(fine), "0.00000003"));
  const auto inferred = schema(R"({"minimum": 0})");  // a range alone: a number
  EXPECT_FALSE(whole(JsonMatcher(inferred), "-1"));
  EXPECT_TRUE(whole(JsonMatcher(inferred), "3.5"));
  EXPECT_EQ(taken(JsonMatcher(inferred), "\"3\""), 0u);
  // multipleOf: the bounds move in to multiples, and a digit goes only where a multiple can follow.
  const auto weeks = schema(R"({"type": "integer", "minimum": 1, "maximum": 30, "multipleOf": 7})");
  EXPECT_TRUE(whole(JsonMatcher(weeks), "14"));
  EXPECT_FALSE(whole(JsonMatcher(weeks), "15"));
  EXPECT_EQ(taken(JsonMatcher(weeks), "3"), 0u);  // 3, 30..39: none a multiple of 7 in range
  EXPECT_TRUE(whole(JsonMatcher(weeks), "28"));
  const auto fives = schema(R"({"type": "number", "multipleOf": 5})");  // no bounds: a number of 18 digits
  EXPECT_TRUE(whole(JsonMatcher(fives), "-10.0"));
  EXPECT_FALSE(whole(JsonMatcher(fives), "10.5"));
  // A type list: the range is the number's; null stays null.
  const auto optional = schema(R"({"type": ["integer", "null"], "maximum": 3})");
  EXPECT_TRUE(whole(JsonMatcher(optional), "null"));
  EXPECT_FALSE(whole(JsonMatcher(optional), "4"));
  EXPECT_TRUE(whole(JsonMatcher(optional), "-4"));
}

// Random walks through ranged numbers: every byte the matcher takes leaves a value in range reachable
// (a walk never gets stuck), and every number it completes is in range as JSON reads it.
TEST(JsonMatcher, RangedNumberWalksNeverLeaveTheRange) {
  const char* ranges[] = {R"({"type": "integer", "minimum": -7, "maximum": 1234})",
                          R"({"type": "integer", "minimum": 100, "maximum": 100})",
                          R"({"type": "integer", "exclusiveMinimum": -1000000, "exclusiveMaximum": -999990})",
                          R"({"type": "number", "minimum": 0.25, "maximum": 0.75})",
                          R"({"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1})",
                          R"({"type": "number", "minimum": -1e6, "maximum": 5e5})",
                          R"({"type": "number", "minimum": 123.456789, "maximum": 123.45679})",
                          R"({"type": "number", "minimum": 0})",
                          R"({"type": "integer", "maximum": -5})",
                          R"({"type": "integer", "minimum": -20, "maximum": 95, "multipleOf": 7})",
                          R"({"type": "number", "exclusiveMinimum": 0, "multipleOf": 25})"};
  std::mt19937 rng(11);
  for (const char* text : ranges) {
    const json spec = json::parse(text);
    const auto s = schema(text);
    int completed = 0;
    for (int walk = 0; walk < 400; ++walk) {
      JsonMatcher m(s);
      std::string out;
      for (int n = 0; n < 40; ++n) {
        if (m.complete() && rng() % 3 == 0) break;
        std::vector<uint8_t> next;
        JsonMatcher::Snapshot snap;
        m.save(snap);
        for (uint8_t b : std::string_view("-.e0123456789")) {
          if (m.feed(b)) next.push_back(b);
          m.restore(snap);
        }
        if (next.empty()) break;
        const uint8_t b = next[rng() % next.size()];
        ASSERT_TRUE(m.feed(b));
        out += char(b);
      }
      ASSERT_TRUE(m.complete()) << text << ": stuck after \"" << out << "\"";
      ++completed;
      const double v = json::parse(out).get<double>();
      if (spec.contains("minimum")) EXPECT_GE(v, spec["minimum"].get<double>()) << text << " " << out;
      if (spec.contains("maximum")) EXPECT_LE(v, spec["maximum"].get<double>()) << text << " " << out;
      if (spec.contains("exclusiveMinimum")) EXPECT_GT(v, spec["exclusiveMinimum"].get<double>()) << out;
      if (spec.contains("exclusiveMaximum")) EXPECT_LT(v, spec["exclusiveMaximum"].get<double>()) << out;
      if (spec.contains("multipleOf")) EXPECT_EQ(std::fmod(v, spec["multipleOf"].get<double>()), 0.0) << out;
      if (spec["type"] == "integer") EXPECT_TRUE(json::parse(out).is_number_integer()) << out;
    }
    EXPECT_EQ(completed, 400) << text;
  }
}

TEST(JsonMatcher, PreludeTakesAThinkBlockOrAToolCallBeforeTheValue) {
  const JsonMatcher m(any_object(), {true, false, {"<tool_call>"}, "", ""});
  EXPECT_TRUE(whole(m, "<think>\nit is {not json} </thin </think>\n\n{\"a\": 1}"));
  EXPECT_TRUE(whole(m, "<tool_call>\n{\"name\": \"f\"} anything"));
  EXPECT_TRUE(whole(m, "<think>x</think><tool_call>"));
  EXPECT_EQ(taken(m, "<think>x</think><think>"), 18u);  // one think block ("<t" may still be "<tool_call>")
  EXPECT_EQ(taken(m, "<tools>"), 5u);
  EXPECT_FALSE(whole(m, "<think>x</think>"));
  // The prompt opened the block: the reply starts inside it.
  EXPECT_TRUE(whole(JsonMatcher(any_object(), {true, true, {}, "", ""}), "a < b</think>{}"));
  // Without may_think a reply cannot open one.
  EXPECT_EQ(taken(JsonMatcher(any_object()), "<think>"), 0u);
  EXPECT_THROW(JsonMatcher(any_object(), {false, false, {"{\"name\""}, "", ""}), Error);
}

// Two tools: get_weather's arguments held to a schema (strict), note's free.
std::shared_ptr<const JsonSchema> with_tools(const JsonSchema& base) {
  const json weather = json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"], "additionalProperties": false})");
  return std::make_shared<const JsonSchema>(
      base.with_calls({{"get_weather", weather}, {"note", std::nullopt}}));
}
const JsonPrelude kHermes{true, false, {}, "<tool_call>", "</tool_call>"};

TEST(JsonMatcher, StrictCallsInFreeText) {
  const JsonMatcher m(with_tools(JsonSchema::text()), kHermes);
  for (const char* ok :
       {"", "Any text, even {\"a\" or <tool or <tools>.",
        "<think>plan</think>\n\nI'll look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
        "{\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\":\"note\",\"arguments\":{\"x\":[1]}}"
        "</tool_call> done",
        "<<tool_call>{\"name\": \"note\", \"arguments\": {}}</tool_call>"})
    EXPECT_TRUE(whole(m, ok)) << ok;
  // Refused where a call breaks its tool's rules; the index is the refused byte's.
  const std::pair<const char*, size_t> bad[] = {
      {"<tool_call>{\"arguments\": {}}", 13},                                   // the name first
      {"<tool_call>{\"name\": \"get_time\"", 25},                               // not a tool
      {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"town\"", 50},  // not its argument
      {"<tool_call>{\"name\": \"get_weather\", \"arguments\": {}", 49},         // city is required
      {"<tool_call>{\"name\": \"note\", \"arguments\": []", 41},                // arguments are an object
      {"<tool_call>{\"name\": \"note\", \"arguments\": {}} x",
       44},  // then the closing marker (a line break at most before it)
  };
  for (const auto& [text, at] : bad) EXPECT_EQ(taken(m, text), at) << text;
  // Inside a call the reply may not end.
  EXPECT_FALSE(whole(m, "<tool_call>{\"name\": \"note\", \"arguments\": {}}"));
  EXPECT_FALSE(whole(m, "<think>"));
  // A forced call: after it, only more calls.
  JsonPrelude forced = kHermes;
  forced.calls_only = true;
  const JsonMatcher f(with_tools(JsonSchema::text()), forced);
  EXPECT_TRUE(whole(f, "<tool_call>{\"name\": \"note\", \"arguments\": {}}</tool_call>\n"));
  EXPECT_EQ(taken(f, "<tool_call>{\"name\": \"note\", \"arguments\": {}}</tool_call>\nOK"), 57u);
  // Parallel calls off: after one, only the end.
  JsonPrelude single = kHermes;
  single.one_call = true;
  const JsonMatcher o(with_tools(JsonSchema::text()), single);
  EXPECT_TRUE(whole(o, "Look: <tool_call>{\"name\": \"note\", \"arguments\": {}}</tool_call>"));
  EXPECT_EQ(taken(o, "<tool_call>{\"name\": \"note\", \"arguments\": {}}</tool_call>\n<"), 57u);
}

// Bare names: Mistral's [TOOL_CALLS]NAME[ARGS]{...} (calls run to the next one or the end) and
// DeepSeek-V3's fenced form, whose closing marker starts with a line break.
TEST(JsonMatcher, StrictCallsWithBareNames) {
  const json weather = json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"], "additionalProperties": false})");
  const std::vector<JsonTool> tools = {{"get_weather", weather}, {"get", std::nullopt}};
  const auto mistral =
      std::make_shared<const JsonSchema>(JsonSchema::text().with_bare_calls(tools, "[ARGS]"));
  const JsonMatcher m(mistral, {false, false, {}, "[TOOL_CALLS]", ""});
  for (const char* ok : {"Sure. [TOOL_CALLS]get_weather[ARGS]{\"city\": \"Oslo\"}[TOOL_CALLS]get[ARGS]{}",
                         "[TOOL_CALLS]get[ARGS] {\"x\": 1}\n", "no call"})
    EXPECT_TRUE(whole(m, ok)) << ok;
  const std::pair<const char*, size_t> bad[] = {
      {"[TOOL_CALLS]got", 13},                         // not a tool ("get" is a prefix of both)
      {"[TOOL_CALLS]get_weather[ARGS]{\"town\"", 31},  // not its argument
      {"[TOOL_CALLS]get[ARGS]{} then", 23},            // after calls, only calls or the end
      {"[TOOL_CALLS]get[ARGS][1]", 21},                // arguments are an object
      {"[TOOL_CALLS]get_weather [ARGS]", 23},          // the separator right after the name
  };
  for (const auto& [text, at] : bad) EXPECT_EQ(taken(m, text), at) << text;
  EXPECT_FALSE(whole(m, "[TOOL_CALLS]get[ARGS]"));
  EXPECT_THROW((void)JsonSchema::text().with_bare_calls(tools, "_sep"), Error);  // starts like a name

  const auto fenced =
      std::make_shared<const JsonSchema>(JsonSchema::text().with_bare_calls(tools, "\n```json\n"));
  const JsonMatcher d(fenced, {false,
                               false,
                               {},
                               "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>",
                               "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"});
  EXPECT_TRUE(whole(d,
                    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                    "{\"city\": \"Rome\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"));
  EXPECT_EQ(
      taken(d, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n{}\n\n"),
      std::string_view("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get\n```json\n{}\n")
          .size());
}

TEST(JsonMatcher, StrictCallsOrTheValue) {
  const JsonMatcher m(with_tools(JsonSchema::any_object()), kHermes);
  EXPECT_TRUE(whole(m, "{\"answer\": 1}"));
  EXPECT_TRUE(whole(m,
                    "<tool_call>\n{\"name\": \"note\", \"arguments\": {}}\n</tool_call>\n"
                    "<tool_call>\n{\"name\": \"note\", \"arguments\": {}}\n</tool_call>"));
  EXPECT_FALSE(whole(m, "<tool_call>\n{\"name\": \"note\", \"arguments\": {}}\n</tool_call>\n<tool"));
  // After the calls, only more calls: no text, no value.
  EXPECT_EQ(taken(m, "<tool_call>{\"name\": \"note\", \"arguments\": {}}</tool_call>\n{"), 57u);
  EXPECT_EQ(taken(m, "Sure"), 0u);
}

TEST(JsonMatcher, StrictCallsWithoutMarkersOpenTheReply) {
  // Llama 3: a reply whose first character is '{' is calls ({"name", "parameters"}), else free text.
  const json weather = json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"]})");
  const auto calls = std::make_shared<const JsonSchema>(
      JsonSchema::text().with_calls({{"get_weather", weather}, {"note", std::nullopt}}, "parameters"));
  const JsonMatcher m(calls, {false, false, {}, "", ""});
  for (const char* ok :
       {"", "Hello {not a call}", "{\"name\": \"note\", \"parameters\": {}}",
        " {\"name\": \"note\", \"parameters\": {}}; {\"name\": \"get_weather\", "
        "\"parameters\": {\"city\": \"Oslo\"}}",
        "{\"name\": \"note\", \"parameters\": {}}\n{\"name\": \"note\", \"parameters\": {}}"})
    EXPECT_TRUE(whole(m, ok)) << ok;
  EXPECT_EQ(taken(m, "{\"name\": \"note\", \"arguments\""), 18u);
  EXPECT_EQ(taken(m, "{\"name\": \"note\", \"parameters\": {}} x"), 34u);       // after calls, only calls
  EXPECT_EQ(taken(m, "{\"name\": \"get_weather\", \"parameters\": {}}"), 39u);  // city is required
  // Beside a value that is not an object: the value, or calls.
  const JsonMatcher v(
      std::make_shared<const JsonSchema>(JsonSchema::compile(json::parse(R"({"type": "string"})"))
                                             .with_calls({{"note", std::nullopt}}, "parameters")),
      {false, false, {}, "", ""});
  EXPECT_TRUE(whole(v, "\"hi\""));
  EXPECT_TRUE(whole(v, "{\"name\": \"note\", \"parameters\": {}}"));
  EXPECT_EQ(taken(v, "hello"), 0u);
  // A value that may be an object cannot be told from a call.
  EXPECT_THROW(JsonMatcher(std::make_shared<const JsonSchema>(
                               JsonSchema::any_object().with_calls({{"note", std::nullopt}}, "parameters")),
                           {false, false, {}, "", ""}),
               Error);
}

TEST(JsonMatcher, ToolArgumentSchemasAreCheckedByTool) {
  const auto fails = [](const char* arguments, const char* message) {
    try {
      JsonSchema::text().with_calls({{"f", json::parse(arguments)}});
      ADD_FAILURE() << arguments;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  fails(R"({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}})",
        "tool \"f\": JSON schema: \"uniqueItems\"");
  fails(R"({"type": ["object", "null"]})", "may be a value other than an object");
  fails(R"({"$ref": "#/$defs/missing"})", "names no schema");
  EXPECT_THROW(JsonSchema::text().with_calls({{"f", std::nullopt}, {"f", std::nullopt}}), Error);
  EXPECT_THROW(JsonSchema::text().with_calls({}), Error);
  // Each tool's references resolve in its own document: two tools with the same $defs name.
  const json a = json::parse(
      R"({"$ref": "#/$defs/x", "$defs": {"x": {"type": "object", "properties": {"a": {"type": "integer"}}}}})");
  const json b = json::parse(
      R"({"$ref": "#/$defs/x", "$defs": {"x": {"type": "object", "properties": {"b": {"type": "boolean"}}}}})");
  const JsonMatcher m(std::make_shared<const JsonSchema>(JsonSchema::text().with_calls({{"a", a}, {"b", b}})),
                      kHermes);
  EXPECT_TRUE(whole(m, "<tool_call>{\"name\": \"a\", \"arguments\": {\"a\": 1}}</tool_call>"));
  EXPECT_TRUE(whole(m, "<tool_call>{\"name\": \"b\", \"arguments\": {\"b\": true}}</tool_call>"));
  EXPECT_EQ(taken(m, "<tool_call>{\"name\": \"b\", \"arguments\": {\"a\""), 40u);
  // Free text alone is no schema to hold.
  EXPECT_THROW(JsonMatcher(std::make_shared<const JsonSchema>(JsonSchema::text())), Error);
  // Calls have markers on both sides or none.
  EXPECT_THROW(
      JsonMatcher(std::make_shared<const JsonSchema>(JsonSchema::text().with_calls({{"f", std::nullopt}})),
                  {false, false, {}, "<tool_call>", ""}),
      Error);
}

// Random walks through the matcher: every byte that it takes is tried, one is chosen at random, until
// the text is complete. Whatever it lets through must parse as JSON and satisfy the schema.
TEST(JsonMatcher, EveryTextItCompletesIsJsonOfTheSchema) {
  const auto s = schema(R"({"type": "object", "properties": {"id": {"type": "integer"},
      "kind": {"enum": ["a", "b"]}, "score": {"type": ["number", "null"]},
      "items": {"type": "array", "maxItems": 3, "items": {"type": "object",
        "properties": {"k": {"type": "string", "maxLength": 3}}, "required": ["k"]}}},
      "required": ["id", "kind"]})");
  std::mt19937 rng(7);
  int completed = 0;
  for (int walk = 0; walk < 300; ++walk) {
    JsonMatcher m(s);
    std::string text;
    for (int n = 0; n < 400; ++n) {
      if (m.complete() && rng() % 4 == 0) break;
      std::vector<uint8_t> next;
      JsonMatcher::Snapshot snap;
      m.save(snap);
      // Printable ASCII and a few UTF-8 leads and continuations; blanks rarely (or walks pad to their end).
      for (int b : std::initializer_list<int>{rng() % 16 == 0 ? ' ' : '{',
                                              '{',
                                              '}',
                                              '[',
                                              ']',
                                              ',',
                                              ':',
                                              '"',
                                              '\\',
                                              '-',
                                              '+',
                                              '.',
                                              'e',
                                              'E',
                                              '0',
                                              '1',
                                              '9',
                                              'a',
                                              'b',
                                              'd',
                                              'i',
                                              'k',
                                              'n',
                                              's',
                                              't',
                                              'u',
                                              'l',
                                              'r',
                                              'o',
                                              'c',
                                              'm',
                                              'f',
                                              0xC3,
                                              0xA9,
                                              0x80})
        if (m.feed(uint8_t(b)))
          next.push_back(uint8_t(b)), m.restore(snap);
        else
          m.restore(snap);
      if (next.empty() && m.complete()) break;  // only blanks may follow
      ASSERT_FALSE(next.empty()) << text;       // something can always come until it is complete
      const uint8_t b = next[rng() % next.size()];
      ASSERT_TRUE(m.feed(b));
      text += char(b);
    }
    if (!m.complete()) continue;
    ++completed;
    json v;
    ASSERT_NO_THROW(v = json::parse(text)) << text;
    ASSERT_TRUE(v.is_object()) << text;
    EXPECT_TRUE(v.contains("id") && v["id"].is_number_integer()) << text;
    EXPECT_TRUE(v.contains("kind") && (v["kind"] == "a" || v["kind"] == "b")) << text;
    if (v.contains("score")) {
      EXPECT_TRUE(v["score"].is_number() || v["score"].is_null()) << text;
    }
    for (const auto& [key, value] : v.items())
      EXPECT_TRUE(key == "id" || key == "kind" || key == "score" || key == "items");
    if (v.contains("items")) {
      EXPECT_LE(v["items"].size(), 3u) << text;
      for (const json& it : v["items"])
        EXPECT_TRUE(it.contains("k") && it["k"].get<std::string>().size() <= 6)
            << text;  // <= 3 chars, é is 2 bytes
    }
  }
  // Enough walks end for the checks to mean something (most do: a walk ends a quarter of the times it may).
  EXPECT_GT(completed, 100);
}

}  // namespace
}  // namespace mx8::runtime
