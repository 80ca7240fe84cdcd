// An HTTP server over stories260K whose greedy draws follow a script (scripted_backend.h), so that the
// model "writes" what a test needs (tool calls, reasoning), behind a given chat template.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/http_fixture.h"
#include "server/scripted_backend.h"

namespace mx8::testing {

// A small chat template in the Hermes tool syntax: "tools: NAME ...\n" where tools are offered, a line
// "role: content" per turn (an assistant's calls as <tool_call>{"name": ..., "arguments": ...}
// </tool_call>), then "assistant:" and `after_prompt` (say, a thinking switch).
inline std::string hermes_template(const std::string& after_prompt = "") {
  return "{% if tools %}tools:{% for t in tools %} {{ t['function']['name'] }}{% endfor %}"
         "{{ '\\n' }}{% endif %}"
         "{% for m in messages %}{{ m['role'] }}: "
         "{% if m.tool_calls is defined and m.tool_calls %}{% for c in m.tool_calls %}"
         "<tool_call>{\"name\": \"{{ c['function']['name'] }}\", \"arguments\": "
         "{{ c['function']['arguments'] | tojson }}}</tool_call>{% endfor %}"
         "{% else %}{{ m['content'] }}{% endif %}{{ '\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}assistant:" +
         after_prompt + "{% endif %}";
}

struct ScriptedServer {
  ScriptedBackend be{*stories().be};
  std::unique_ptr<model::LlamaModel> model;
  std::unique_ptr<Served> served;
  explicit ScriptedServer(const std::string& template_source) {
    model::LoadOptions lo;
    lo.max_tokens_per_step = 32;
    model = model::load_llama(kStoriesModel, be, lo);
    served =
        std::make_unique<Served>(true, 32u << 20, model.get(), &be, template_source, /*backend_draws=*/true);
  }
  // The next reply is `text`, then the end of the turn: as byte tokens (<0x41>...), which decode to
  // their bytes alone, with no leading space wherever the reply starts. `every_time`: each of the
  // requests that follow, one at a time, gets it.
  void reply(const std::string& text, bool every_time = false) {
    std::vector<int32_t> ids;
    for (unsigned char c : text) {
      char piece[8];
      std::snprintf(piece, sizeof piece, "<0x%02X>", c);
      const std::optional<int32_t> id = stories().tok->find_token(piece);
      ASSERT_TRUE(id) << piece;
      ids.push_back(*id);
    }
    ids.push_back(stories().tok->eos_id());
    be.script(std::move(ids), every_time);
  }
  httplib::Result post(const std::string& path, const json& body) { return served->post(path, body.dump()); }
};

// The length in tokens of a prompt the template renders as `text`.
inline int tokens_of(const std::string& text) {
  runtime::EncodeOptions enc;
  enc.add_special = false;
  return int(stories().tok->encode(text, enc).size());
}

// The folder of the official client libraries' scripts (tests/server/sdk).
inline const std::string kSdk = std::string(MX8_SOURCE_DIR) + "/tests/server/sdk";

// Why the client-library scripts cannot run here ("" when they can): node, or the libraries
// (scripts/setup.sh installs them where npm is present), missing.
inline std::string sdk_missing() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not installed";
  if (!std::filesystem::exists(kSdk + "/node_modules/openai") ||
      !std::filesystem::exists(kSdk + "/node_modules/@anthropic-ai/sdk"))
    return "the client libraries are not installed: npm ci --prefix " + kSdk;
  return "";
}

// Runs tests/server/sdk/`script` with node against the server on `port` (MX8_SERVER_URL); its output,
// and its exit status in `status`.
inline std::string run_node(const std::string& script, int port, int* status) {
  const std::string cmd =
      "MX8_SERVER_URL=http://127.0.0.1:" + std::to_string(port) + " node '" + kSdk + "/" + script + "' 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "cannot run: " + cmd;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  *status = pclose(p);
  return out;
}

}  // namespace mx8::testing
