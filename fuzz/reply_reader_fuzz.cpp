// libFuzzer target: a model's reply through the readers of tool calls and reasoning
// (runtime/tool_calls.h, runtime/reasoning.h), as the server reads a stream. The first byte picks the
// call syntax (its low three bits, modulo the five syntaxes), whether a <think> block is read (bit 3)
// and whether the prompt opened one (bit 4); its high bits and the reply's bytes set where the reply is
// cut into pieces. Checked: the
// same reasoning, text and calls however the reply is cut (tokens cut it anywhere) as fed byte by byte;
// with nothing read out of it, the reply comes back whole.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "mx8/runtime/reasoning.h"
#include "mx8/runtime/tool_calls.h"

namespace {

using mx8::runtime::ReasoningParser;
using mx8::runtime::ToolCallParser;
using mx8::runtime::ToolSyntax;

struct Result {
  std::string reasoning, text, calls;  // calls: name and arguments, each call on a line
  bool operator==(const Result&) const = default;
};

Result run(const std::string& reply, ToolSyntax syntax, bool thinks, bool opened, unsigned seed) {
  ReasoningParser reasoning(thinks, opened);
  ToolCallParser calls(syntax);
  Result r;
  auto take = [&](ReasoningParser::Piece p, bool last) {
    r.reasoning += p.reasoning;
    ToolCallParser::Piece c = calls.feed(p.text);
    if (last) {
      ToolCallParser::Piece tail = calls.finish();
      c.text += tail.text;
      c.calls.insert(c.calls.end(), tail.calls.begin(), tail.calls.end());
    }
    r.text += c.text;
    for (const auto& call : c.calls) r.calls += call.name + " " + call.arguments.dump() + "\n";
  };
  size_t pos = 0;
  for (size_t k = 0; pos < reply.size(); ++k) {
    // Piece lengths 1..16: from the seed when given, else one byte at a time.
    const size_t len = seed == 0 ? 1 : 1 + (seed * 2654435761u + k * 40503u + reply[k % reply.size()]) % 16;
    take(reasoning.feed(reply.substr(pos, len)), false);
    pos += len;
  }
  ReasoningParser::Piece end = reasoning.finish();
  take(end, true);
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const unsigned mode = data[0];
  const ToolSyntax syntax = ToolSyntax((mode & 7) % (int(ToolSyntax::mistral) + 1));
  const bool thinks = mode & 8, opened = mode & 16;
  const std::string reply(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Result bytewise = run(reply, syntax, thinks, opened, 0);
  const Result cut = run(reply, syntax, thinks, opened, 1 + (mode >> 5));
  if (!(cut == bytewise)) std::abort();
  if (bytewise.calls.empty() && bytewise.reasoning.empty() && !thinks && bytewise.text != reply) std::abort();
  return 0;
}
