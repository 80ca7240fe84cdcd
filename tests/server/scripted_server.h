// An HTTP server over stories260K whose greedy draws follow a script (scripted_backend.h), so that the
// model "writes" what a test needs (tool calls, reasoning), behind a given chat template.
#pragma once

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/http_fixture.h"
#include "server/scripted_backend.h"

namespace mx8::testing {

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

// Runs `script` with node against the server on `port` (MX8_SERVER_URL); its output, and its exit
// status in `status`.
inline std::string run_node(const std::string& script, int port, int* status) {
  const std::string cmd =
      "MX8_SERVER_URL=http://127.0.0.1:" + std::to_string(port) + " node '" + script + "' 2>&1";
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return "cannot run: " + cmd;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  *status = pclose(p);
  return out;
}

}  // namespace mx8::testing
