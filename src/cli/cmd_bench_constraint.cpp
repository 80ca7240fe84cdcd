// `mx8 bench constraint`: the cost of structured output per generated token, the time to compute one
// step's token mask (JsonConstraint::allowed) in each kind of place a reply can be (JSON structure,
// strings plain and under maxLength, numbers, escapes, free text with strict tool calls, a call's
// name, a think block), next to the obvious way measured in the same run (every token fed on its own,
// json_allowed_one_by_one), whose mask it must equal. Writes the cpu-constraint section of
// docs/PERF.md.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/bench_cpu_util.h"
#include "cli/command.h"
#include "cli/gen_common.h"
#include "cli/perf_report.h"
#include "mx8/error.h"
#include "mx8/runtime/json_constraint.h"

namespace {

namespace bench = mx8::cli::bench;
namespace runtime = mx8::runtime;
using json = nlohmann::json;
using mx8::cli::fmt;

struct Options {
  std::string model;
  double min_time = 0.3;
  mx8::cli::PerfMdTarget perf;
};

// A person record, and two tools (one strict), as the server's tests use them.
const char* kSchema = R"({"type": "object", "properties": {"name": {"type": "string"},
    "code": {"type": "string", "maxLength": 4}, "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}}, "stars": {"type": "integer", "minimum": 1,
    "maximum": 5}, "date": {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"},
    "word": {"type": "string", "pattern": "^[a-z]+( [a-z]+)*$"}}, "required": ["name"]})";
const char* kWeather =
    R"({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})";

struct Place {
  const char* what;
  bool calls;          // free text with strict calls (else the schema's value)
  const char* prefix;  // the reply so far
};
const Place kPlaces[] = {
    {"structure (a key to come)", false, "{\"name\": \"A\", "},
    {"a string", false, "{\"name\": \"Al"},
    {"a string under maxLength", false, "{\"code\": \"ab"},
    {"an escape", false, "{\"name\": \"Al\\"},
    {"a number", false, "{\"name\": \"A\", \"age\": 4"},
    {"a number in a range", false, "{\"name\": \"A\", \"stars\": "},
    {"a pattern (a date)", false, "{\"date\": \"2024-0"},
    {"a pattern (words)", false, "{\"word\": \"the ca"},
    {"an array", false, "{\"name\": \"A\", \"tags\": ["},
    {"a think block", false, "<think>"},
    {"free text (strict tools)", true, "Sure, "},
    {"a call's name", true, "<tool_call>\n{\"name\": \""},
    {"a call's arguments", true, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa"},
};

void run(const Options& o) {
  const std::string model = o.model.empty() ? mx8::cli::default_model_path() : o.model;
  const auto tok = runtime::load_tokenizer(model);
  const auto vocab = std::make_shared<const runtime::JsonVocabulary>(*tok);
  const auto value =
      std::make_shared<const runtime::JsonSchema>(runtime::JsonSchema::compile(json::parse(kSchema)));
  const auto calls = std::make_shared<const runtime::JsonSchema>(runtime::JsonSchema::text().with_calls(
      {{"get_weather", json::parse(kWeather)}, {"note", std::nullopt}}));
  std::printf("mx8 bench constraint: %s, %zu tokens, one thread\n", model.c_str(), tok->vocab_size());

  struct Row {
    const Place* place;
    size_t allowed;
    double ms, reference_ms;
  };
  std::vector<Row> rows;
  for (const Place& p : kPlaces) {
    runtime::JsonMatcher m(p.calls ? calls : value,
                           {true, false, {}, p.calls ? "<tool_call>" : "", p.calls ? "</tool_call>" : ""});
    for (const char* c = p.prefix; *c; ++c)
      if (!m.feed(uint8_t(*c))) throw mx8::Error(std::string("the matcher refuses the prefix ") + p.prefix);
    runtime::JsonConstraint fast(vocab, m);
    (void)fast.allowed();  // lists made once per vocabulary (tokens holding a marker's byte) are not timed
    const std::vector<uint8_t> want = runtime::json_allowed_one_by_one(*tok, m);
    if (fast.allowed() != want)
      throw mx8::Error(std::string("the mask differs from the reference after ") + p.prefix);
    Row r{&p, 0, bench::median_ms([&] { (void)fast.allowed(); }, o.min_time),
          bench::median_ms([&] { (void)runtime::json_allowed_one_by_one(*tok, m); }, o.min_time, 3)};
    for (uint8_t a : want) r.allowed += a;
    rows.push_back(r);
    std::printf("%-28s %8zu allowed  %8.3f ms  (one by one %8.2f ms, %5.0fx)\n", p.what, r.allowed, r.ms,
                r.reference_ms, r.reference_ms / r.ms);
    std::fflush(stdout);
  }

  std::string md = "## Structured output: one step's token mask (`mx8 bench constraint`)\n\n";
  md += "Machine: " + mx8::cli::machine_description() + ". Date: " + mx8::cli::today_utc() +
        ". Command: `mx8 bench constraint -m " + model + "` (" + std::to_string(tok->vocab_size()) +
        " tokens), one thread.\n\n";
  md +=
      "The time to compute which tokens may come next (JsonConstraint::allowed, what the engine does once "
      "per constrained sequence per step) after each prefix, and the obvious way measured in the same run "
      "(every token fed to a copy of the matcher, json_allowed_one_by_one), whose mask it equals (checked "
      "here before timing). Schema: a person record (a string, a string under maxLength 4, an integer, an "
      "array of strings); tools: get_weather (strict) and note, in the Hermes syntax. A decode step of a "
      "model this vocabulary belongs to takes milliseconds or more: the mask is paid once per sequence per "
      "step, on the sampling pool beside the other rows.\n\n";
  md +=
      "| after | where | tokens allowed | mask ms | one by one ms | speedup "
      "|\n|---|---|---:|---:|---:|---:|\n";
  for (const Row& r : rows) {
    std::string prefix = r.place->prefix;
    for (size_t i = 0; (i = prefix.find('\n', i)) != std::string::npos;) prefix.replace(i, 1, "\\n");
    for (size_t i = 0; (i = prefix.find('|', i)) != std::string::npos; i += 2) prefix.replace(i, 1, "\\|");
    md += "| `" + prefix + "` | " + r.place->what + " | " + std::to_string(r.allowed) + " | " +
          fmt("%.3f", r.ms) + " | " + fmt("%.2f", r.reference_ms) + " | " +
          fmt("%.0fx", r.reference_ms / r.ms) + " |\n";
  }
  md += "\nLoad average when the run started: " + mx8::cli::load_average() + ".\n";
  if (o.perf.write) {
    const std::string path = o.perf.path();
    mx8::cli::update_perf_section(path, "cpu-constraint", md);
    std::printf("updated %s (section cpu-constraint)\n", path.c_str());
  }
}

mx8::cli::CommandRegistration reg{
    "bench constraint",
    "Structured output: one step's token mask per kind of place, next to feeding each token",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("-m,--model", o->model,
                     "GGUF file, Hugging Face folder or tokenizer folder (default: the bundled stories260K)");
      app.add_option("--min-time", o->min_time, "seconds per case")
          ->capture_default_str()
          ->check(CLI::Range(0.01, 3600.0));
      o->perf.add_options(app);
      return [o] { run(*o); };
    }};

}  // namespace
