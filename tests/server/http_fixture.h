// The HTTP tests' fixture: a generation service over stories260K (or a given model and backend) and an
// HTTP server on a free port, listening on a thread of its own; and readers of what it sends.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mx8/runtime/chat_template.h"
#include "mx8/server/http_server.h"
#include "server/server_fixture.h"

namespace mx8::testing {

using json = nlohmann::ordered_json;

inline constexpr int kContext = 2048;
// A plain template (stories260K has none): "user: Hi\nassistant:".
inline const char* kTemplate =
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}";

// A service and an HTTP server on a free port, listening on a thread of its own.
struct Served {
  server::GenerationService service;
  runtime::ChatTemplate tmpl;
  std::mutex log_mu;
  std::vector<std::string> log;  // the server's request log
  server::HttpServer http;
  int port = 0;
  std::thread listener;

  // stories260K on the CPU backend unless a model and its backend are given. `backend_draws`: the
  // backend draws greedy tokens (its arg max) whatever memory it has.
  explicit Served(bool with_template = true, size_t max_body = 32u << 20, model::LlamaModel* model = nullptr,
                  backend::Backend* backend = nullptr, const std::string& template_source = kTemplate,
                  bool backend_draws = false)
      : service(model ? *model : *stories().model, backend ? *backend : *stories().be, *stories().tok,
                service_options(backend_draws)),
        tmpl(template_source),
        http(service, *stories().tok, with_template ? &tmpl : nullptr, server_options(max_body)) {
    port = http.bind();
    listener = std::thread([this] { http.listen(); });
  }
  ~Served() {
    service.stop();
    http.stop();
    listener.join();
  }
  static server::ServiceOptions service_options(bool backend_draws) {
    server::ServiceOptions o;
    if (backend_draws) o.engine.backend_draw = runtime::EngineOptions::BackendDraw::always;
    o.engine.kv_format = backend::KvFormat::f32;
    o.engine.max_context = kContext;
    o.engine.max_sequences = 3;
    return o;
  }
  server::ServerOptions server_options(size_t max_body) {
    server::ServerOptions o;
    o.log = [this](const std::string& line) {
      std::lock_guard lk(log_mu);
      log.push_back(line);
    };
    o.host = "127.0.0.1";
    o.port = 0;
    o.model_name = "stories260K";
    o.max_body_bytes = max_body;
    return o;
  }
  httplib::Result post(const std::string& path, const std::string& body,
                       const std::string& content_type = "application/json") {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    return c.Post(path.c_str(), body, content_type.c_str());
  }
  // The body sent chunked (Transfer-Encoding: chunked, no Content-Length), `chunk` bytes at a time.
  httplib::Result post_chunked(const std::string& path, const std::string& body, size_t chunk) {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    return c.Post(
        path.c_str(),
        [&](size_t offset, httplib::DataSink& sink) {
          if (offset < body.size())
            return sink.write(body.data() + offset, std::min(chunk, body.size() - offset));
          sink.done();
          return true;
        },
        "application/json");
  }
  httplib::Result get(const std::string& path, const httplib::Headers& h = {}) {
    httplib::Client c("127.0.0.1", port);
    return c.Get(path.c_str(), h);
  }
};

// The reference for a chat request: the template's rendering (plus a prefill), greedy.
inline Reference chat_reference(const json& messages, int max_new, const std::string& prefix = "") {
  runtime::ChatTemplate t(kTemplate);
  server::GenerationJob j = greedy_job("", max_new);
  runtime::EncodeOptions enc;
  enc.add_special = false;
  j.prompt = stories().tok->encode(t.render(messages, {{"add_generation_prompt", true}}) + prefix, enc);
  return run_alone(j, kContext);
}

// The data lines of a server-sent-event body, and the event names.
inline std::vector<std::string> sse_data(const std::string& body, std::vector<std::string>* names = nullptr) {
  std::vector<std::string> out;
  size_t at = 0;
  while ((at = body.find_first_not_of('\n', at)) != std::string::npos) {
    size_t end = body.find("\n\n", at);
    EXPECT_NE(end, std::string::npos) << "an unterminated event";
    if (end == std::string::npos) break;
    const std::string block = body.substr(at, end - at);
    if (names) {
      const size_t e = block.find("event: ");
      names->push_back(e == 0 ? block.substr(7, block.find('\n') - 7) : "");
    }
    const size_t d = block.find("data: ");
    out.push_back(d == std::string::npos ? "" : block.substr(d + 6));
    at = end + 2;
  }
  return out;
}

}  // namespace mx8::testing
