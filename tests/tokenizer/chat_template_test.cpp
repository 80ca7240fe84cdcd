// Chat templates rendered by mx8's Jinja interpreter equal Jinja2's renderings byte for byte
// (tests/data/chat/fixtures.json, made by scripts/render_chat_fixtures.py), and template errors
// are reported.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mx8/error.h"
#include "mx8/runtime/chat_template.h"
#include "tokenizer/gguf_keys.h"
#include "tokenizer/tokenizer_test_data.h"

namespace mx8::runtime {
namespace {

using nlohmann::ordered_json;

ordered_json load_fixtures() {
  auto path = std::filesystem::path(MX8_SOURCE_DIR) / "tests" / "data" / "chat" / "fixtures.json";
  return ordered_json::parse(test::read_text(path));
}

TEST(ChatTemplate, MatchesJinja2Renderings) {
  ordered_json fx = load_fixtures();
  std::map<std::string, std::unique_ptr<ChatTemplate>> templates;
  for (auto& [name, t] : fx["templates"].items())
    templates[name] = std::make_unique<ChatTemplate>(
        t["source"].get<std::string>(), t["bos_token"].get<std::string>(), t["eos_token"].get<std::string>());
  size_t checked = 0;
  for (auto& c : fx["cases"]) {
    const ChatTemplate& t = *templates.at(c["template"].get<std::string>());
    std::string label = c["template"].get<std::string>() + "/" + c["conversation"].get<std::string>() +
                        " add_generation_prompt=" + c["variables"]["add_generation_prompt"].dump();
    if (c.contains("error")) {
      try {
        t.render(c["messages"], c["variables"]);
        ADD_FAILURE() << label << ": expected the template to raise '" << c["error"].get<std::string>()
                      << "'";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(c["error"].get<std::string>()), std::string::npos) << e.what();
      }
    } else {
      EXPECT_EQ(t.render(c["messages"], c["variables"]), c["expected"].get<std::string>()) << label;
    }
    ++checked;
  }
  EXPECT_GE(checked, 116u);
}

TEST(ChatTemplate, ApplyWithPlainMessages) {
  // The convenience form gives the same text as the JSON form.
  ordered_json fx = load_fixtures();
  auto& t = fx["templates"]["llama3"];
  ChatTemplate tmpl(t["source"].get<std::string>(), t["bos_token"].get<std::string>(), "");
  std::string text = tmpl.apply({{"system", "S"}, {"user", "U"}}, true);
  EXPECT_EQ(text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>"
            "user<|end_"
            "header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, FromModelFolders) {
  for (const char* name : {"llama3", "qwen3", "deepseek_v3"}) {
    auto dir = test::tokenizer_data_dir() / name;
    auto t = ChatTemplate::from_model(dir);
    ASSERT_TRUE(t.has_value()) << name;
    EXPECT_FALSE(t->source().empty());
    EXPECT_NE(t->apply({{"user", "hello"}}, true).find("hello"), std::string::npos) << name;
  }
  EXPECT_EQ(ChatTemplate::from_model(test::tokenizer_data_dir() / "deepseek_v3")->bos_token(),
            "<\xEF\xBD\x9C"
            "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
  // The GGUF vocabularies have no chat template.
  auto gguf = test::vocab_case_dir() / "ggml-vocab-llama-spm.gguf";
  if (std::filesystem::exists(gguf)) {
    EXPECT_FALSE(ChatTemplate::from_model(gguf).has_value());
  }
}

// Where a template is found: tokenizer_config.json (its default among named templates, BOS and EOS as
// plain strings or as {"content": ...}), the folder of a tokenizer.json path, and a GGUF file alone in a
// folder (its tokens name BOS and EOS by id, id 0 included).
TEST(ChatTemplate, FromEachKindOfSource) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("mx8_chat_sources_" + std::to_string(::getpid()));
  fs::create_directories(dir / "hf");
  fs::create_directories(dir / "gguf");
  std::ofstream(dir / "hf/tokenizer_config.json") << R"({"bos_token": "<s>", "eos_token": {"content": "</s>"},
      "chat_template": [{"name": "tool_use", "template": "T"},
                        {"name": "default", "template": "D{{ bos_token }}{{ eos_token }}"}]})";
  std::ofstream(dir / "hf/tokenizer.json") << "{}";
  for (const fs::path& p : {dir / "hf", dir / "hf/tokenizer.json", dir / "hf/tokenizer_config.json"}) {
    auto t = ChatTemplate::from_model(p);
    ASSERT_TRUE(t.has_value()) << p;
    EXPECT_EQ(t->apply({{"user", "x"}}, false), "D<s></s>") << p;
  }
  const std::vector<uint8_t> gguf = GgufKeys()
                                        .strings("tokenizer.ggml.tokens", {"<first>", "<bos>", "<eos>"})
                                        .uint("tokenizer.ggml.bos_token_id", 0)
                                        .uint("tokenizer.ggml.eos_token_id", 2)
                                        .string("tokenizer.chat_template", "G{{ bos_token }}{{ eos_token }}")
                                        .bytes();
  std::ofstream(dir / "gguf/notes.txt") << "not a model";  // other files in the folder are passed over
  std::ofstream(dir / "gguf/m.gguf", std::ios::binary)
      .write(reinterpret_cast<const char*>(gguf.data()), std::streamsize(gguf.size()));
  for (const fs::path& p : {dir / "gguf", dir / "gguf/m.gguf"}) {
    auto t = ChatTemplate::from_model(p);
    ASSERT_TRUE(t.has_value()) << p;
    EXPECT_EQ(t->apply({{"user", "x"}}, false), "G<first><eos>") << p;
  }
  fs::remove_all(dir);
}

TEST(ChatTemplate, ErrorsNameTheProblem) {
  auto expect_error = [](const std::string& src, const std::string& needle) {
    try {
      ChatTemplate t(src);
      t.apply({{"user", "x"}}, false);
      ADD_FAILURE() << "no error for: " << src;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{% if true %}x", "missing {% endif %}");
  expect_error("{{ x | nosuchfilter }}", "unsupported filter 'nosuchfilter'");
  expect_error("{% frobnicate %}", "unsupported tag 'frobnicate'");
  expect_error("{{ 'a' + 1 }}", "unsupported operand types");
  expect_error("{{ raise_exception('boom') }}", "boom");
  expect_error("line1\n{{ (1 }}", "line 2");
  expect_error("{{ missing.attr }}", "undefined");
  expect_error("{{ }}", "expected an expression");
  expect_error("{{ 1 + ) }}", "expected an expression");
}

// Builtins the bundled templates do not use, each with the output Jinja2 3.1.6 gives in transformers'
// setup (ImmutableSandboxedEnvironment, trim_blocks and lstrip_blocks on; checked with it). Mutation
// testing found none of these under a test. Where Jinja2 keeps a lone surrogate in its output ('\udfff'),
// mx8 refuses it: no tokenizer can encode it.
TEST(ChatTemplate, BuiltinsBehaveAsInJinja2) {
  auto render = [](const std::string& src) { return ChatTemplate(src).apply({{"user", "x"}}, false); };
  auto expect_error = [&](const std::string& src, const std::string& needle) {
    try {
      render(src);
      ADD_FAILURE() << "no error for " << src;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Tests, and the argument a test takes (the value tested is not its argument).
  EXPECT_EQ(render("{{ 6 is divisibleby 4 }} {{ 6 is divisibleby 3 }} {{ 3 is odd }} {{ -3 is odd }} "
                   "{{ 4 is even }} {{ 1 is ne 1 }} {{ 1 is ne 2 }}"),
            "False True True True True False True");
  EXPECT_EQ(render("{{ 'abc' is lower }} {{ 'aBc' is lower }} {{ 'ABC' is upper }} {{ 'AbC' is upper }}"),
            "True False True False");
  // Slices with steps, and the step that Python refuses.
  EXPECT_EQ(render("{{ [1, 2, 3, 4, 5][::2] }} {{ 'abcdef'[1:5:2] }} {{ [1, 2, 3][::-1] }}"),
            "[1, 3, 5] bd [3, 2, 1]");
  expect_error("{{ [1, 2, 3][::0] }}", "slice step cannot be zero");
  EXPECT_EQ(render("{{ range(10, 0, -3) | list }} {{ 7 // -1 }} {{ 7 % -1 }}"), "[10, 7, 4, 1] -7 0");
  expect_error("{{ range(1, 5, 0) | list }}", "step cannot be zero");
  // indent: the first line only with first=true, blank lines only with blank=true.
  EXPECT_EQ(render("{{ 'a\\n\\nb' | indent(2) }}|{{ 'a\\n\\nb' | indent(2, true, true) }}"),
            "a\n\n  b|  a\n  \n  b");
  // lstrip_blocks on the template's first line; a \u escape below 0x80; the last surrogate.
  EXPECT_EQ(render("  {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(render(" x{{ 1 }}"), " x1");  // leading text before no tag is kept
  EXPECT_EQ(render("{{ '\\u0041' }}"), "A");
  expect_error("{{ '\\udfff' }}", "lone surrogate");
  // An error after a tag that spans lines names the line it is on.
  expect_error("{%\nif true\n%}{{ (1 }}{% endif %}", "line 3");
  // strftime_now formats the local time (Llama 3.1's template dates its system prompt with it).
  auto year = [] {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    return std::to_string(1900 + tm.tm_year);
  };
  const std::string before = year(), rendered = render("{{ strftime_now('%Y') }}"), after = year();
  EXPECT_TRUE(rendered == before || rendered == after) << rendered;  // a render across New Year
}

// How values print and compare, as Python's str() and == and transformers' tojson (json.dumps) do;
// each expected string is Jinja2 3.1.6's rendering of the same template in the same setup.
TEST(ChatTemplate, ValuesPrintAndCompareAsInPython) {
  auto render = [](const std::string& src) { return ChatTemplate(src).apply({{"user", "x"}}, false); };
  EXPECT_EQ(render("{{ 1e-05 }} {{ 1.5e+20 }} {{ -2.5e-07 }} {{ 1e16 }} {{ 123456789012345680.0 }} {{ 0.1 }} "
                   "{{ 1e15 }}"),
            "1e-05 1.5e+20 -2.5e-07 1e+16 1.2345678901234568e+17 0.1 1000000000000000.0");
  // repr of strings: single quotes unless the text holds one and no double quote.
  EXPECT_EQ(render(R"({{ ["a'b", 'c\\d', 'e"f', 'x\ny', "g'h\"i", '\t'] }})"),
            R"(["a'b", 'c\\d', 'e"f', 'x\ny', 'g\'h"i', '\t'])");
  EXPECT_EQ(render("{{ [1, [2, 3]] == [1, [2, 3]] }} {{ [1, [2, 3]] == [1, [2, 4]] }} {{ [1] == [1, 2] }} "
                   "{{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }} {{ {'a': 1} == {'a': 2} }} "
                   "{{ {'a': 1} == {'b': 1} }} {{ {'a': 1} == {'a': 1, 'b': 2} }}"),
            "True False False True False False False");
  EXPECT_EQ(
      render("{{ 'yes' if range else 'no' }} {{ 'yes' if {} else 'no' }} {{ 'yes' if {'a': 1} else 'no' }}"),
      "yes no yes");
  EXPECT_EQ(render(R"({{ (1e999 - 1e999) | tojson }} {{ 1e999 | tojson }} {{ -1e999 | tojson }} )"
                   R"({{ ["a\"b\\c\n"] | tojson }})"),
            R"(NaN Infinity -Infinity ["a\"b\\c\n"])");
  EXPECT_EQ(render("{{ () }} {{ () | length }} {{ {'a': 1, 'b': [2]} }} {{ (1,) }} {{ (1, 2) }}"),
            "() 0 {'a': 1, 'b': [2]} (1,) (1, 2)");
}

// Templates come from model files and --template: nesting deep enough to overflow the parser's or the
// interpreter's stack must fail with an error instead (the probe's crashes: 5000 brackets, 20000
// nested ifs, a chain of 100000 '~', a macro that calls itself). Depths just inside the limits
// (chat_template_parse.cpp: 64 levels, 1000 tokens a tag; chat_template_eval.cpp: 256 scopes) render.
TEST(ChatTemplate, DeepNestingFailsCleanly) {
  auto repeat = [](const std::string& s, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += s;
    return out;
  };
  auto render = [](const std::string& src) {
    ChatTemplate t(src);
    return t.apply({{"user", "x"}}, false);
  };
  auto expect_error = [&](const std::string& src, const std::string& needle) {
    try {
      render(src);
      ADD_FAILURE() << "no error for a template of " << src.size() << " bytes";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // 60 brackets (each bracket level is one of the 64) and 60 nested ifs render.
  EXPECT_EQ(render("{{ " + repeat("(", 60) + "1" + repeat(")", 60) + " }}"), "1");
  EXPECT_EQ(render(repeat("{% if true %}", 60) + "y" + repeat("{% endif %}", 60)), "y");
  EXPECT_EQ(render("{{ " + repeat("- ", 60) + "1 }}"), "1");  // an even count of minus signs
  expect_error("{{ " + repeat("(", 5000) + "1" + repeat(")", 5000) + " }}", "tokens");
  expect_error("{{ " + repeat("[", 100) + repeat("]", 100) + " }}", "nested more than 64");
  expect_error("{{ " + repeat("not ", 100) + "1 }}", "nested more than 64");
  expect_error(repeat("{% if true %}", 20000) + "y" + repeat("{% endif %}", 20000), "blocks nested");
  expect_error("{{ 'a'" + repeat(" ~ 'a'", 100000) + " }}", "tokens");
  // A macro that recurses 100 levels and stops renders; one that never stops fails.
  EXPECT_EQ(
      render("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% else %}z{% endif %}{% endmacro %}{{ f(100) }}"),
      "z");
  expect_error("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "unbounded recursion");
  // Values nested 100000 deep in a loop: freed without recursion (this crashed at the end of the
  // render), and compared or printed only to chat_template_value.cpp's 512 levels.
  const std::string deep =
      "{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}";
  EXPECT_EQ(render(deep + "{{ ns.x | length }}"), "1");
  expect_error(deep + "{{ ns.x == ns.x }}", "nested more than 512");
  expect_error(deep + "{{ ns.x | tojson }}", "nested more than 512");
  expect_error("{% set ns = namespace(x=1) %}{% set ns.x = ns %}{{ [ns] | tojson }}", "holding itself");
}

// Found by fuzz/chat_template_fuzz.cpp: numbers past 64 bits, escapes that are not hex, and work or
// values without bound (a template is the model's code, run as found) each end in an Error, not in a
// std::out_of_range that ended the process, undefined arithmetic, a hang or memory without end.
TEST(ChatTemplate, RunawayWorkAndNumbersFailCleanly) {
  auto render = [](const std::string& src) { return ChatTemplate(src).apply({{"user", "x"}}, false); };
  auto expect_error = [&](const std::string& src, const std::string& needle) {
    try {
      std::string out = render(src);
      ADD_FAILURE() << "no error for " << src.substr(0, 80) << " (rendered " << out.size() << " bytes)";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // Literals, as Python reads them: a float past the range is inf or 0.0, an integer past 64 bits
  // (Python's are unbounded) is refused.
  EXPECT_EQ(render("{{ 1e999 }} {{ -1e999 }} {{ 1e-999 }}"), "inf -inf 0.0");
  EXPECT_EQ(render("{{ 9223372036854775807 }}"), "9223372036854775807");
  expect_error("{{ 99999999999999999999 }}", "does not fit in 64 bits");
  EXPECT_EQ(render("{{ '\\u00e9\\x41' }}"),
            "\xc3\xa9"
            "A");
  expect_error("{{ '\\u12' }}", "needs 4 hex digits");
  expect_error("{{ '\\xZZ' }}", "needs 2 hex digits");
  expect_error("{{ '\\ud800' }}", "lone surrogate");
  // An endraw tag that is never closed: the scan for its closer wrapped around to the start and
  // collected segments until memory ran out.
  expect_error("{% raw %}x{% endraw %x }}", "missing endraw");
  EXPECT_EQ(render("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
  // 64-bit arithmetic says when it overflows, instead of wrapping (undefined behaviour in C++).
  EXPECT_EQ(render("{{ 2 ** 62 }} {{ (-1) ** 3 }} {{ 1 ** 1000000000000000 }} {{ 7 // -2 }} {{ -7 % 3 }}"),
            "4611686018427387904 -1 1 -4 2");
  expect_error("{{ 2 ** 63 }}", "overflows 64 bits");
  expect_error("{{ 9223372036854775807 + 1 }}", "overflows 64 bits");
  expect_error("{{ -9223372036854775807 - 2 }}", "overflows 64 bits");
  expect_error("{{ 4294967296 * 4294967296 }}", "overflows 64 bits");
  expect_error("{{ (-9223372036854775807 - 1) // -1 }}", "overflows 64 bits");
  EXPECT_EQ(render("{{ (-9223372036854775807 - 1) % -1 }}"), "0");  // as in Python
  expect_error("{{ -(-9223372036854775807 - 1) }}", "overflows 64 bits");
  EXPECT_EQ(render("{{ 2.9 | int }} {{ -2.9 | int }}"), "2 -2");
  expect_error("{{ 1e300 | int }}", "does not fit in 64 bits");
  // Slices and ranges count their items without overflow.
  EXPECT_EQ(render("{{ [1, 2, 3][1::9223372036854775807] }} {{ range(9223372036854775806, "
                   "9223372036854775807) | list }}"),
            "[2] [9223372036854775806]");
  // Values and work without bound.
  EXPECT_EQ(render("{{ 'ab' * 3 }}|{{ 'ab' * -1 }}|{{ 'x\\ny' | indent(-3) }}"), "ababab||x\ny");
  expect_error("{{ 'ab' * 100000000 }}", "over the limit");
  expect_error("{{ 'ab' * 9223372036854775807 }}", "over the limit");
  expect_error("{{ ('x' * 10000000) | replace('x', 'yy') }}", "over the limit");
  expect_error("{{ ('x' * 1000000) | list | join('y' * 20) }}", "over the limit");
  expect_error("{{ 'a\\nb' | indent(100000000) }}", "over the limit");
  expect_error("{% for i in range(1000000000000) %}{% endfor %}", "over the limit of 1048576");
  expect_error(
      "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
      "over the limit of 1048576");
  expect_error("{% for i in range(1000000) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}", "steps");
  expect_error("{% for i in range(1000000) %}{{ 'x' * 100 }}{% endfor %}", "over the limit");
  expect_error(
      "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(200) }}",
      "steps");
}

// A namespace that holds itself is a reference cycle (found leaking by fuzz/chat_template_fuzz.cpp);
// the render empties its namespaces when it ends, so they are freed. LeakSanitizer, in CI's
// sanitizer stage, fails this test without that.
TEST(ChatTemplate, ANamespaceHoldingItselfIsFreed) {
  ChatTemplate t("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{% set ns.l = [ns, [ns]] %}{{ ns.me.a }}");
  EXPECT_EQ(t.apply({{"user", "x"}}, false), "1");
}

}  // namespace
}  // namespace mx8::runtime
