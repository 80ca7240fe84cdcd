// HttpServer: see http_server.h.
#include "mx8/server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "mx8/runtime/json_constraint.h"
#include "mx8/runtime/reasoning.h"
#include "mx8/runtime/thinking_budget.h"
#include "mx8/server/api.h"
#include "mx8/server/embeddings_api.h"
#include "mx8/util/json_parse.h"
#include "server/api_fields.h"
#include "server/client_connection.h"
#include "server/reply_reader.h"

namespace mx8::server {

using json = nlohmann::ordered_json;

namespace {

// httplib's bind: port 0 takes any free port. Returns the port, or -1.
int bind_server(httplib::Server& http, const std::string& host, int port) {
  return port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, port) ? port : -1);
}

// SO_REUSEADDR on a listening socket: a restarted server binds at once (httplib's default would set
// SO_REUSEPORT, which lets a second server bind the same port and silently take half the connections).
void reuse_address(socket_t fd) {
  const int yes = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

Error cannot_listen(const std::string& host, int port) {
  return Error("cannot listen on " + host + ":" + std::to_string(port) +
               " (in use, or not an address of this machine)");
}

using Clock = std::chrono::steady_clock;
// How often a blocked non-streaming handler looks whether its client is still connected.
constexpr std::chrono::milliseconds kClientCheck{200};

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Response ids: the dialect's prefix, then 24 hex digits unique within this process run.
std::string new_id(const std::string& prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t start = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08llx%016llx", (unsigned long long)(start & 0xffffffffu),
                (unsigned long long)counter.fetch_add(1));
  return prefix + buf;
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

json parse_body(const std::string& body) {
  try {
    return parse_json_bounded<json>(body, "the request body");
  } catch (const json::parse_error& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
  }
}

// The characters (Unicode code points) in UTF-8 bytes: the bytes that are not continuation bytes.
// Summed over a text's tokens it is the text's count even where a token ends within a character
// (the character counts with the token where it starts).
size_t characters(const std::string& utf8) {
  return size_t(std::count_if(utf8.begin(), utf8.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// What a finished generation reports.
ApiResult result_of(const Update& u, int prompt_tokens, std::string text) {
  ApiResult r;
  r.text = std::move(text);
  r.reason = u.reason;
  r.stop_sequence = u.stop_sequence;
  r.prompt_tokens = prompt_tokens;
  r.completion_tokens = u.completion_tokens;
  return r;
}

// What a chat request's prompt means for reading its reply.
struct ChatPrompt {
  bool opened = false;  // it ends inside a <think> block
  std::string forced;   // the start of a forced tool call it ends with
};

}  // namespace

struct HttpServer::Impl {
  GenerationService& service;
  const runtime::Tokenizer& tok;
  const runtime::ChatTemplate* tmpl;
  ServerOptions opts;
  httplib::Server http;
  std::unique_ptr<Dialect> openai_chat = openai_chat_dialect();
  std::unique_ptr<Dialect> openai_completion = openai_completion_dialect();
  std::unique_ptr<Dialect> anthropic = anthropic_dialect();
  std::unique_ptr<Dialect> openai_responses = openai_responses_dialect();

  // What the chat template does with tools (found once, by rendering probes through it), and whether
  // it has <think> blocks (and the tokens that close one, for reasoning budgets).
  const runtime::ToolFormat tool_format;
  const std::vector<int32_t> tool_markers;  // the special tokens that write a call (kept in replies)
  const bool thinks;
  const std::shared_ptr<const std::vector<int32_t>> thinking_close;

  Impl(GenerationService& s, const runtime::Tokenizer& t, const runtime::ChatTemplate* c,
       const ServerOptions& o)
      : service(s),
        tok(t),
        tmpl(c),
        opts(o),
        tool_format(c ? runtime::probe_tool_format(*c) : runtime::ToolFormat{}),
        tool_markers(runtime::tool_marker_tokens(t, tool_format.syntax)),
        thinks(c && runtime::template_thinks(c->source())),
        thinking_close(std::make_shared<const std::vector<int32_t>>(runtime::thinking_close_tokens(t))) {}

  // Whether the request's tools or tool turns can be given to this model: its template must put tools
  // into the prompt (where any are offered) and show calls in a syntax that can be read back.
  void check_tool_use(const ApiRequest& r) const {
    const bool history = std::any_of(r.messages.begin(), r.messages.end(), [](const json& m) {
      return m.contains("tool_calls") || m["role"] == "tool";
    });
    if (!r.tools.offered() && !history) return;
    const std::string param = r.tools.offered() ? "tools" : "messages";
    if (r.tools.offered() && !tool_format.renders_tools)
      throw ApiError(
          400,
          "this model's chat template has no place for tools in its prompt, so it cannot be offered "
          "any (mx8 serve --template FILE can give it one that has)",
          param);
    if (tool_format.syntax == runtime::ToolSyntax::none)
      throw ApiError(400,
                     "this model's chat template does not show tool calls in a form mx8 reads (Hermes "
                     "<tool_call>, Llama 3 JSON, DeepSeek-V3 or Mistral [TOOL_CALLS] calls)",
                     param);
    if (r.tools.forces_call() && !r.assistant_prefix.empty())
      throw ApiError(
          400,
          "a prefill (a last assistant message) cannot be combined with a tool_choice that forces a call",
          "tool_choice");
  }

  // The start of a call that a reply must make (tool_choice required / named), written into the
  // prompt after the template's rendering: the reply goes on from inside the call. Cut from the
  // template's rendering of a call with the request's own variables (Qwen3 with enable_thinking false
  // renders its empty thinking block in the prompt already, not in the call's turn).
  std::string forced_call(const ApiRequest& r) const {
    if (!r.tools.forces_call()) return "";
    const runtime::ToolFormat f = runtime::probe_tool_format(*tmpl, r.template_variables);
    return f.forced_call_prefix(r.tools.choice == ToolRequest::Choice::named ? r.tools.name : "");
  }

  // The rule that holds a reply to `r` to its JSON format and its calls to strict tools' schemas (none
  // without either). A reasoning model may think first. Where tools may be called, a reply may be a
  // call instead of the value: with strict tools each call is held to its tool's schema where its
  // syntax allows (ToolFormat::strict_call_form), else its opening marker frees the rest. Where calls are
  // JSON objects themselves (Llama 3), a value and a call cannot be told apart: a 400. Where the prompt
  // forces a call, the reply is that call (held where strict). A prefill must start the reply.
  std::shared_ptr<const runtime::TokenConstraint> json_rule(const ApiRequest& r, const ChatPrompt& p) {
    const bool llama3 = tool_format.syntax == runtime::ToolSyntax::llama3_json;
    if (r.json_output && p.forced.empty() && r.tools.offered() && llama3)
      throw ApiError(400,
                     "this model's tool calls are JSON objects themselves, so its replies cannot be held to "
                     "a JSON format while it may call tools (tool_choice \"none\" allows the format)",
                     r.json_output_field);
    const auto held = tool_format.strict_call_form();
    const bool strict = r.tools.offered() && !r.tools.strict_calls.empty() && held;
    if (!strict && (!r.json_output || !p.forced.empty())) return nullptr;
    // A forced call's start comes after any thinking: the reply goes on inside the call.
    runtime::JsonPrelude prelude{thinks && p.forced.empty(), p.opened && p.forced.empty(), {}, "", ""};
    std::shared_ptr<const runtime::JsonSchema> schema = r.json_output;
    if (strict) {
      prelude.call_open = held->open;  // Llama 3's: none (its first character opens its calls)
      prelude.call_close = held->close;
      prelude.calls_only = !p.forced.empty();
      prelude.one_call = !r.tools.parallel;
      const runtime::JsonSchema base =
          r.json_output && p.forced.empty() ? *r.json_output : runtime::JsonSchema::text();
      schema = std::make_shared<const runtime::JsonSchema>(
          held->name_separator.empty()
              ? base.with_calls(r.tools.strict_calls, llama3 ? "parameters" : "arguments")
              : base.with_bare_calls(r.tools.strict_calls, held->name_separator));
    } else if (r.tools.offered()) {
      prelude.free_after.emplace_back(runtime::tool_call_opener(tool_format.syntax));
    }
    runtime::JsonMatcher m(schema, prelude);
    // The forced call's start is the template's own rendering; where it is written otherwise than the
    // matcher's JSON (a template's own spacing), the call goes unheld rather than refused.
    for (char c : p.forced)
      if (!m.feed(uint8_t(c))) return nullptr;
    for (char c : r.assistant_prefix)
      if (!m.feed(uint8_t(c)))
        throw ApiError(400,
                       r.json_output ? "the prefill (the last assistant message) does not start a reply in "
                                       "the format '" +
                                           r.json_output_field + "' asks for"
                                     : "the prefill (the last assistant message) writes a tool call that "
                                       "its strict tool's schema does not allow",
                       "messages");
    std::call_once(json_vocab_once,
                   [&] { json_vocab = std::make_shared<const runtime::JsonVocabulary>(tok, tool_markers); });
    return std::make_shared<runtime::JsonConstraint>(json_vocab, std::move(m));
  }
  std::once_flag json_vocab_once;
  std::shared_ptr<const runtime::JsonVocabulary> json_vocab;  // made at the first request that needs it

  // The rule for a reply to `r`: its JSON (json_rule), under a reasoning budget where the request
  // asks one of a chat model that thinks and the reply may reason (a forced call starts past it).
  std::shared_ptr<const runtime::TokenConstraint> reply_constraint(const ApiRequest& r, const ChatPrompt& p) {
    std::shared_ptr<const runtime::TokenConstraint> json = json_rule(r, p);
    if (!r.thinking_budget || !thinks || !r.prompts.empty() || !p.forced.empty()) return json;
    return std::make_shared<runtime::ThinkingBudget>(tok, thinking_close, *r.thinking_budget, p.opened,
                                                     json.get());
  }

  // How a reply to `r` is read: reasoning where the template thinks (chat only), tool calls where
  // tools are offered.
  ReplyReader reader(const ApiRequest& r, const ChatPrompt& p) const {
    return ReplyReader(thinks && r.prompts.empty(), p.opened,
                       r.tools.offered() ? tool_format.syntax : runtime::ToolSyntax::none, p.forced);
  }
  // A finished reply's reasoning, calls (with ids; the first alone where the request allows one) and
  // the text that is left.
  void read_reply(ApiResult& r, const ApiRequest& ar, const ChatPrompt& prompt, const Dialect& d) const {
    ReplyReader::Piece p = reader(ar, prompt).read(r.text, true);
    r.reasoning = std::move(p.reasoning);
    r.text = std::move(p.text);
    for (runtime::ToolCall& c : p.calls) take_call(std::move(c), ar, d, r.tool_calls);
  }
  static bool take_call(runtime::ToolCall c, const ApiRequest& ar, const Dialect& d,
                        std::vector<runtime::ToolCall>& calls) {
    if (!ar.tools.parallel && !calls.empty()) return false;
    c.id = new_id(d.tool_call_id_prefix());
    calls.push_back(std::move(c));
    return true;
  }

  // The prompts' token ids: the chat template's rendering (it writes BOS where the model wants it), or
  // each completion prompt, text with the tokenizer's own framing or ids as given.
  std::vector<std::vector<int32_t>> prompt_ids(const ApiRequest& r, ChatPrompt* chat = nullptr) const {
    runtime::EncodeOptions enc;
    std::vector<std::vector<int32_t>> out;
    for (const PromptInput& p : r.prompts) out.push_back(p.ids ? *p.ids : tok.encode(*p.text, enc));
    if (!out.empty()) return out;
    if (!tmpl)
      throw ApiError(400,
                     "this model has no chat template; start mx8 serve with --template FILE, or send a raw "
                     "prompt to /v1/completions");
    check_tool_use(r);
    json variables = r.template_variables;
    variables["add_generation_prompt"] = true;
    if (r.tools.offered()) variables["tools"] = r.tools.tools;
    const std::string forced = forced_call(r);
    std::string text =
        tmpl->render(tool_format.template_messages(r.messages), variables) + r.assistant_prefix + forced;
    if (chat) *chat = {runtime::opens_thinking(text), forced};
    enc.add_special = false;
    return {tok.encode(text, enc)};
  }

  // Log-probabilities as the APIs show them: token ids as the bytes they add to the reply (as the
  // decoder writes them: SentencePiece drops a leading space at the start of a text, not where the
  // reply `continues` the prompt's), each at `offset` in it, in characters as OpenAI counts them
  // (advanced past it).
  std::vector<TokenLogprob> shown(const std::vector<runtime::TokenLogprobs>& lps, size_t& offset,
                                  bool continues = false) const {
    std::vector<TokenLogprob> out;
    for (const runtime::TokenLogprobs& lp : lps) {
      const bool at_start = offset == 0 && !continues;
      TokenLogprob t{tok.token_bytes(lp.token, at_start), offset, lp.logprob, {}};
      offset += characters(t.token);
      for (const auto& [id, v] : lp.top) t.top.emplace_back(tok.token_bytes(id, at_start), v);
      out.push_back(std::move(t));
    }
    return out;
  }

  // Requests by endpoint and outcome (an HTTP status for refusals, a stop reason for the rest), for
  // /metrics; and one log line per request when the options ask for it.
  std::mutex counters_mu;
  std::map<std::pair<std::string, std::string>, int64_t> requests;

  void record(const std::string& endpoint, const std::string& outcome, const std::string& detail) {
    {
      std::lock_guard lk(counters_mu);
      requests[{endpoint, outcome}]++;
    }
    if (opts.log) opts.log(endpoint + " " + outcome + (detail.empty() ? "" : " " + detail));
  }
  // An error response in dialect `d`'s shape, counted and logged.
  void refuse(httplib::Response& res, const Dialect& d, const std::string& endpoint, int status,
              const std::string& why, const std::string& param = "") {
    record(endpoint, std::to_string(status), why);
    send_json(res, status, d.error_body(status, why, param));
  }
  void record_end(const std::string& endpoint, const ResponseMeta& m, bool stream, int prompt,
                  const Update& u, Clock::time_point start) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s, %d + %d tokens, %.3f s", m.id.c_str(), stream ? " (stream)" : "",
                  prompt, u.completion_tokens, std::chrono::duration<double>(Clock::now() - start).count());
    record(endpoint, stop_reason_name(u.reason), u.reason == StopReason::error ? u.error : buf);
  }

  // Waits for a non-streamed request's end: its text and, when asked, its log-probabilities (an echo's
  // prompt first, its first token without one). `u` is the last update (how it ended). Nothing once the
  // client has gone (looked at every kClientCheck, as the streaming path notices at its next write).
  std::optional<ApiResult> collect(Generation& gen, const Dialect& d, const std::vector<int32_t>& echoed,
                                   bool logprobs, Update& u, ClientConnection& client) const {
    std::string text;
    std::vector<runtime::TokenLogprobs> raw, prompt_raw;
    Clock::time_point check = Clock::now() + kClientCheck;
    while (!u.finished) {
      if (gen.next(u, kClientCheck)) {
        text += u.text;
        raw.insert(raw.end(), u.logprobs.begin(), u.logprobs.end());
        if (u.end_logprobs && d.lists_end_of_turn()) raw.push_back(*u.end_logprobs);
        prompt_raw.insert(prompt_raw.end(), u.prompt_logprobs.begin(), u.prompt_logprobs.end());
      }
      if (!u.finished && Clock::now() >= check) {
        if (client.gone()) return std::nullopt;
        check = Clock::now() + kClientCheck;
      }
    }
    size_t offset = 0;
    std::string echo;
    std::vector<TokenLogprob> lps = echo_of(echoed, prompt_raw, echo, offset);
    for (TokenLogprob& t : shown(raw, offset, gen.continues_text())) lps.push_back(std::move(t));
    ApiResult r = result_of(u, gen.prompt_tokens(), echo + text);
    if (logprobs) r.logprobs = std::move(lps);
    return r;
  }

  // An echoed prompt: its tokens' bytes appended to `text`, and their log-probabilities (the first
  // token's none: NaN), each from `prompt_raw` (those of the prompt's tokens but the first) where it
  // has them. `offset` advances past the prompt.
  std::vector<TokenLogprob> echo_of(const std::vector<int32_t>& echoed,
                                    const std::vector<runtime::TokenLogprobs>& prompt_raw, std::string& text,
                                    size_t& offset) const {
    std::vector<TokenLogprob> lps;
    for (size_t i = 0; i < echoed.size(); ++i) {
      TokenLogprob t{tok.token_bytes(echoed[i], offset == 0), offset, NAN, {}};
      if (i > 0 && i - 1 < prompt_raw.size())
        t = shown({prompt_raw[i - 1]}, offset).front();
      else
        offset += characters(t.token);
      text += t.token;
      lps.push_back(std::move(t));
    }
    return lps;
  }

  void generate(const Dialect& d, int busy_status, const httplib::Request& req, const std::string& body,
                httplib::Response& res) {
    const Clock::time_point start = Clock::now();
    ResponseMeta meta{new_id(d.id_prefix()), opts.model_name, unix_now()};
    ApiRequest ar;
    // One generation per choice: n per prompt (the completions take several prompts), prompt by
    // prompt; the prompts an echo repeats; each prompt's tokens once (the usage's prompt_tokens).
    std::vector<std::shared_ptr<Generation>> gens;
    std::vector<std::vector<int32_t>> echoed;
    int prompt_tokens = 0;
    ChatPrompt chat;
    try {
      ar = d.parse(parse_body(body), opts.sampling);
      std::vector<std::vector<int32_t>> prompts = prompt_ids(ar, &chat);
      const auto constraint = reply_constraint(ar, chat);
      for (std::vector<int32_t>& prompt : prompts) {
        prompt_tokens += int(prompt.size());
        for (int i = 0; i < ar.n; ++i) {
          GenerationJob job;
          job.prompt = prompt;
          job.sampling = ar.sampling;
          job.sampling.seed += uint64_t(i);  // each choice its own sample; choice 0 draws as n = 1 does
          job.max_new_tokens = ar.max_tokens.value_or(service.max_context());
          job.stop = ar.stop;
          job.stop.insert(job.stop.end(), opts.stop.begin(), opts.stop.end());
          job.logprobs = ar.logprobs;
          job.prompt_logprobs = ar.echo && ar.logprobs >= 0;
          // Completions continue their prompt's text, and so does a reply after an assistant prefill or
          // inside a forced tool call.
          job.continues_prompt = !ar.prompts.empty() || !ar.assistant_prefix.empty() || !chat.forced.empty();
          job.constraint = constraint;
          if (ar.tools.offered() || ar.json_output)
            job.keep_special = tool_markers;  // as the JSON rule reads them
          echoed.push_back(ar.echo ? job.prompt : std::vector<int32_t>());
          gens.push_back(service.submit(std::move(job)));
        }
      }
    } catch (const Error& e) {
      for (auto& g : gens) g->cancel();  // all of a request's choices run, or none
      if (auto* a = dynamic_cast<const ApiError*>(&e))
        return refuse(res, d, req.path, a->status(), e.what(), a->param());
      if (dynamic_cast<const ServiceBusy*>(&e)) return refuse(res, d, req.path, busy_status, e.what());
      if (dynamic_cast<const ServiceUnavailable*>(&e)) return refuse(res, d, req.path, 503, e.what());
      return refuse(res, d, req.path, 400,
                    e.what());  // a prompt that does not fit, a template's raise_exception
    }

    const bool logprobs = ar.logprobs >= 0;
    if (!ar.stream) {
      std::vector<ApiResult> results;
      ApiResult total;
      ClientConnection client(req.remote_addr, req.remote_port, req.local_port);
      for (size_t i = 0; i < gens.size(); ++i) {
        Update u;
        std::optional<ApiResult> r = collect(*gens[i], d, echoed[i], logprobs, u, client);
        if (!r) {
          for (auto& g : gens) g->cancel();
          record(req.path, "disconnected", meta.id);
          return;  // nobody reads a reply
        }
        if (ar.prompts.empty()) read_reply(*r, ar, chat, d);
        results.push_back(std::move(*r));
        record_end(req.path, meta, false, gens[i]->prompt_tokens(), u, start);
        if (u.reason == StopReason::error || u.reason == StopReason::cancelled) {
          for (auto& g : gens) g->cancel();
          if (u.reason == StopReason::error) return send_json(res, 500, d.error_body(500, u.error, ""));
          return send_json(res, 503, d.error_body(503, "the server is shutting down", ""));
        }
        total.completion_tokens += results.back().completion_tokens;
      }
      total.reason = results.front().reason;
      total.stop_sequence = results.front().stop_sequence;
      total.prompt_tokens = prompt_tokens;
      return send_json(res, 200, d.response(meta, results, total));
    }

    res.set_header("Cache-Control", "no-cache");
    const Dialect* dp = &d;
    const bool include_usage = ar.include_usage;
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, gens, echoed, meta, dp, include_usage, logprobs, start, prompt_tokens, ar, chat,
         endpoint = req.path](size_t, httplib::DataSink& sink) {
          auto gone = [&] {  // the client went away
            for (auto& g : gens) g->cancel();
            record(endpoint, "disconnected", meta.id);
            return false;
          };
          auto send = [&](const std::string& s) {
            return s.empty() || sink.write(s.data(), s.size()) || gone();
          };
          std::vector<StreamState> states(gens.size());
          std::vector<ReplyReader> readers;
          std::vector<std::vector<runtime::ToolCall>> calls(gens.size());
          for (StreamState& st : states) {
            st.lazy_text = ar.tools.offered() || (thinks && ar.prompts.empty());
            readers.push_back(reader(ar, chat));
          }
          if (!send(dp->stream_start(meta, prompt_tokens, states))) return false;
          // The choices advance together (one engine step makes a token of each): wait on the first
          // unfinished one, then take what the others have. Briefly, where there are others: the one
          // waited on may be holding text back (a possible stop string) while they have some.
          std::vector<Update> last(gens.size());
          std::vector<size_t> offsets(gens.size(), 0);
          std::vector<bool> echo_sent(gens.size(), false);
          ApiResult total;
          total.prompt_tokens = prompt_tokens;
          const auto wait = std::chrono::milliseconds(gens.size() == 1 ? 200 : 10);
          size_t done = 0;
          while (done < gens.size()) {
            size_t waited = 0;
            while (last[waited].finished) ++waited;
            bool any = false;
            for (size_t i = waited; i < gens.size(); ++i) {
              Update& u = last[i];
              if (u.finished || !gens[i]->next(u, i == waited ? wait : std::chrono::milliseconds(0)))
                continue;
              any = true;
              if (u.end_logprobs && dp->lists_end_of_turn()) u.logprobs.push_back(*u.end_logprobs);
              // An echo comes first, with the first text (which brings the prompt's log-probabilities).
              std::string text;
              std::vector<TokenLogprob> lps;
              if (!echoed[i].empty() && !echo_sent[i]) {
                lps = echo_of(echoed[i], u.prompt_logprobs, text, offsets[i]);
                echo_sent[i] = true;
              }
              ReplyReader::Piece piece = readers[i].read(u.text, u.finished);
              if (!piece.reasoning.empty() &&
                  !send(dp->stream_reasoning(meta, int(i), piece.reasoning, states[i])))
                return false;
              text += piece.text;
              for (TokenLogprob& t : shown(u.logprobs, offsets[i], gens[i]->continues_text()))
                lps.push_back(std::move(t));
              if ((!text.empty() || !lps.empty()) &&
                  !send(dp->stream_text(meta, int(i), text, logprobs ? &lps : nullptr, states[i])))
                return false;
              for (runtime::ToolCall& c : piece.calls)
                if (take_call(std::move(c), ar, *dp, calls[i]) &&
                    !send(dp->stream_tool_call(meta, int(i), calls[i].back(), states[i])))
                  return false;
              if (!u.finished) continue;
              ++done;
              record_end(endpoint, meta, true, gens[i]->prompt_tokens(), u, start);
              if (u.reason == StopReason::error || u.reason == StopReason::cancelled) {
                for (auto& g : gens) g->cancel();
                const std::string tail = u.reason == StopReason::error
                                             ? dp->stream_error(500, u.error)
                                             : dp->stream_error(503, "the server is shutting down");
                if (!send(tail)) return false;
                sink.done();
                return true;
              }
              ApiResult r = result_of(u, gens[i]->prompt_tokens(), "");
              r.tool_calls = calls[i];
              total.completion_tokens += r.completion_tokens;
              if (i == 0) {  // how the response ended, where it has one choice
                total.reason = r.reason;
                total.stop_sequence = r.stop_sequence;
                total.tool_calls = r.tool_calls;
              }
              if (!send(dp->stream_choice_end(meta, int(i), r, states[i]))) return false;
            }
            if (!any && !sink.is_writable()) return gone();
          }
          if (!send(dp->stream_end(meta, total, include_usage))) return false;
          sink.done();
          return true;
        },
        [gens](bool success) {
          if (!success)
            for (auto& g : gens) g->cancel();
        });
  }

  int listen_fd = -1;
  std::atomic<bool> listening{false}, stop_requested{false};

  // Prometheus' text format.
  std::string metrics() {
    const ServiceStatus st = service.status();
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help, const std::string& samples) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + samples;
    };
    auto one = [](const char* name, double v) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s %.17g\n", name, v);
      return std::string(buf);
    };
    std::string by_outcome;
    {
      std::lock_guard lk(counters_mu);
      for (const auto& [key, n] : requests)
        by_outcome += "mx8_requests_total{endpoint=\"" + key.first + "\",outcome=\"" + key.second + "\"} " +
                      std::to_string(n) + "\n";
    }
    metric("mx8_requests_total", "counter",
           "Generation requests by endpoint and outcome (an HTTP status when refused, else how they ended).",
           by_outcome);
    metric("mx8_requests_running", "gauge", "Requests generating now.",
           one("mx8_requests_running", st.running));
    metric("mx8_requests_waiting", "gauge", "Requests waiting for a slot.",
           one("mx8_requests_waiting", st.waiting));
    metric("mx8_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
           one("mx8_prompt_tokens_total", double(st.stats.prefill_tokens)));
    metric("mx8_prompt_tokens_reused_total", "counter",
           "Prompt tokens taken from earlier requests' KV cache.",
           one("mx8_prompt_tokens_reused_total", double(st.stats.reused_tokens)));
    metric("mx8_preemptions_total", "counter",
           "Requests that gave their KV cache pages to older ones (they prefill again later).",
           one("mx8_preemptions_total", double(st.stats.preemptions)));
    metric("mx8_recomputed_tokens_total", "counter", "Positions prefilled again after a preemption.",
           one("mx8_recomputed_tokens_total", double(st.stats.recomputed_tokens)));
    metric("mx8_decoded_tokens_total", "counter", "Tokens fed back in decode steps.",
           one("mx8_decoded_tokens_total", double(st.stats.decode_tokens)));
    metric("mx8_engine_steps_total", "counter", "Forward steps.",
           one("mx8_engine_steps_total", double(st.stats.steps)));
    metric("mx8_engine_busy_seconds_total", "counter", "Time spent in forward steps.",
           one("mx8_engine_busy_seconds_total", st.stats.prefill_seconds + st.stats.decode_seconds));
    metric("mx8_up", "gauge", "1 while the server can generate, 0 once a step has failed.",
           one("mx8_up", st.broken.empty() ? 1 : 0));
    return out;
  }

  // With an API key set, every endpoint but /health wants it: OpenAI clients send
  // "Authorization: Bearer KEY", Anthropic's "x-api-key: KEY". Compared in constant time.
  bool authorized(const httplib::Request& q) const {
    if (opts.api_key.empty() || q.path == "/health") return true;
    auto same = [&](const std::string& given) {
      unsigned char diff = given.size() != opts.api_key.size();
      for (size_t i = 0; i < given.size() && i < opts.api_key.size(); ++i)
        diff |= (unsigned char)(given[i] ^ opts.api_key[i]);
      return diff == 0;
    };
    const std::string bearer = q.get_header_value("Authorization");
    return same(q.get_header_value("x-api-key")) ||
           (bearer.rfind("Bearer ", 0) == 0 && same(bearer.substr(7)));
  }

  using BodyHandler =
      std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;

  // A POST endpoint whose body is read here, as raw bytes, whatever its Content-Type. httplib's own
  // reading parses an application/x-www-form-urlencoded body (what `curl -d` sends unless told
  // otherwise) as form fields and refuses one over 8 KiB with a 413
  // (CPPHTTPLIB_FORM_URL_ENCODED_PAYLOAD_MAX_LENGTH, compiled into Debian's library); a handler with
  // a content reader gets the bytes unparsed, and these bodies are JSON whatever the header says.
  // Errors reading the body come back in `d`'s shape.
  void post(const std::string& path, const Dialect& d, BodyHandler handler) {
    http.Post(path, [this, &d, handler = std::move(handler)](const httplib::Request& q, httplib::Response& s,
                                                             const httplib::ContentReader& read) {
      // A multipart body would go to httplib's multipart parser, which wants receivers of its own.
      if (q.is_multipart_form_data())
        return refuse(s, d, q.path, 400,
                      "the request body must be JSON, not multipart/form-data (send Content-Type: "
                      "application/json)");
      std::string body;
      // A chunked body has no length to check first: it is bounded as it arrives. Past the limit the
      // rest is read and dropped, up to as much again, so that a client still sending finishes and
      // reads the 413; a connection closed under a writing client loses the answer (ASan-slow test
      // runs showed it).
      size_t received = 0;
      const bool whole = read([&](const char* data, size_t n) {
        received += n;
        if (received <= opts.max_body_bytes) body.append(data, n);
        return received <= 2 * opts.max_body_bytes;
      });
      const bool over_limit = received > opts.max_body_bytes;
      if (over_limit || s.status == 413)
        return refuse(s, d, q.path, 413,
                      "the request body is over " + std::to_string(opts.max_body_bytes) + " bytes");
      if (!whole) return refuse(s, d, q.path, 400, "the request body could not be read");
      handler(q, body, s);
    });
  }

  // POST /v1/embeddings: each input read by the engine as a prompt that ends in its embedding. A
  // request keeps at most max_sequences inputs in the service at once (OpenAI allows 2048 in one
  // request, past any waiting queue), submitting the next as each finishes, in input order.
  void embeddings(const httplib::Request& req, const std::string& body, httplib::Response& res) {
    const Dialect& d = *openai_chat;  // OpenAI's error shape
    const Clock::time_point start = Clock::now();
    EmbeddingsRequest er;
    std::vector<std::vector<int32_t>> prompts;
    int prompt_tokens = 0;
    try {
      if (!opts.embeddings_refused.empty()) throw ApiError(400, opts.embeddings_refused, "model");
      er = parse_embeddings_request(parse_body(body));
      if (er.dimensions > service.hidden_size())
        throw ApiError(400,
                       "'dimensions' " + std::to_string(er.dimensions) + " is past this model's " +
                           std::to_string(service.hidden_size()),
                       "dimensions");
      for (const PromptInput& in : er.inputs) {
        std::string text;
        if (in.text) {
          try {
            text = opts.embeddings.with_prompt(*in.text, er.prompt_name);
          } catch (const Error& e) {
            throw ApiError(400, e.what(), "prompt_name");
          }
        }
        prompts.push_back(in.ids ? *in.ids : tok.encode(text));
        prompt_tokens += int(prompts.back().size());
      }
    } catch (const ApiError& e) {
      return refuse(res, d, req.path, e.status(), e.what(), e.param());
    } catch (const Error& e) {
      return refuse(res, d, req.path, 400, e.what());
    }
    std::vector<std::vector<float>> vectors(prompts.size());
    std::deque<std::pair<size_t, std::shared_ptr<Generation>>> flying;
    auto cancel_all = [&] {
      for (auto& [i, g] : flying) g->cancel();
    };
    const size_t window = size_t(std::max(1, service.options().engine.max_sequences));
    ClientConnection client(req.remote_addr, req.remote_port, req.local_port);
    for (size_t next = 0; next < prompts.size() || !flying.empty();) {
      while (next < prompts.size() && flying.size() < window) {
        GenerationJob job;
        job.prompt = prompts[next];
        job.embed = true;
        try {
          flying.emplace_back(next, service.submit(std::move(job)));
          ++next;
        } catch (const ServiceBusy& e) {
          if (!flying.empty()) break;  // wait for this request's own inputs, then try again
          return refuse(res, d, req.path, 429, e.what());
        } catch (const ServiceUnavailable& e) {
          cancel_all();
          return refuse(res, d, req.path, 503, e.what());
        } catch (const Error& e) {  // a prompt that does not fit, a token id past the vocabulary
          cancel_all();
          return refuse(res, d, req.path, 400, "input " + std::to_string(next) + ": " + e.what());
        }
      }
      auto [i, g] = std::move(flying.front());
      flying.pop_front();
      Update u;
      Clock::time_point check = Clock::now() + kClientCheck;
      while (!u.finished) {
        g->next(u, kClientCheck);
        if (!u.finished && Clock::now() >= check) {
          if (client.gone()) {
            g->cancel();
            cancel_all();
            return record(req.path, "disconnected", "");
          }
          check = Clock::now() + kClientCheck;
        }
      }
      if (u.reason != StopReason::embedded) {
        cancel_all();
        if (u.reason == StopReason::error) return refuse(res, d, req.path, 500, u.error);
        return refuse(res, d, req.path, 503, "the server is shutting down");
      }
      vectors[i] = runtime::finish_embedding(u.embedding, er.dimensions, opts.embeddings.normalize);
    }
    char detail[96];
    std::snprintf(detail, sizeof detail, "%zu inputs, %d tokens, %.3f s", prompts.size(), prompt_tokens,
                  std::chrono::duration<double>(Clock::now() - start).count());
    record(req.path, "embedded", detail);
    send_json(res, 200, embeddings_response(vectors, er.base64, opts.model_name, prompt_tokens));
  }

  // An endpoint whose answer is one JSON object made by `make`: 200 with it, or the error it throws in
  // `d`'s shape (an ApiError's status, else 400).
  void answer(const Dialect& d, const httplib::Request& q, httplib::Response& s,
              const std::function<json()>& make) {
    try {
      send_json(s, 200, make());
    } catch (const ApiError& e) {
      refuse(s, d, q.path, e.status(), e.what(), e.param());
    } catch (const Error& e) {
      refuse(s, d, q.path, 400, e.what());
    }
  }

  void routes() {
    http.set_pre_routing_handler([this](const httplib::Request& q, httplib::Response& s) {
      if (authorized(q)) return httplib::Server::HandlerResponse::Unhandled;
      const Dialect& d = q.path.rfind("/v1/messages", 0) == 0 ? *anthropic : *openai_chat;
      refuse(s, d, q.path, 401, "a valid API key is required (Authorization: Bearer KEY, or x-api-key: KEY)");
      return httplib::Server::HandlerResponse::Handled;
    });
    // The listening socket as httplib makes it, with SO_REUSEADDR; the fd is kept for the backlog (bind()).
    http.set_socket_options([this](socket_t fd) {
      reuse_address(fd);
      listen_fd = fd;
    });
    // A body whose Content-Length is over the limit is discarded as it arrives (the content reader
    // fails with status 413); post() bounds a chunked one, which declares no length, as it reads it.
    http.set_payload_max_length(opts.max_body_bytes);
    post("/v1/chat/completions", *openai_chat,
         [this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
           generate(*openai_chat, 429, q, b, s);
         });
    post("/v1/completions", *openai_completion,
         [this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
           generate(*openai_completion, 429, q, b, s);
         });
    post("/v1/responses", *openai_responses,
         [this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
           generate(*openai_responses, 429, q, b, s);
         });
    post("/v1/messages", *anthropic,
         [this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
           generate(*anthropic, 529, q, b, s);
         });
    // The prompt's length in tokens, as a request would be rendered: Anthropic's count_tokens and
    // OpenAI's responses input_tokens (max_tokens, required of a message, is not asked here).
    auto count_tokens = [this](const Dialect& d, json shape) {
      return [this, &d, shape](const httplib::Request& q, const std::string& b, httplib::Response& s) {
        answer(d, q, s, [&] {
          json body = parse_body(b);
          if (&d == anthropic.get() && body.is_object() && !body.contains("max_tokens"))
            body["max_tokens"] = 1;
          json out = shape;
          out["input_tokens"] = prompt_ids(d.parse(body, opts.sampling)).front().size();
          return out;
        });
      };
    };
    // vLLM's /tokenize and /detokenize (clients count tokens and map them to text with them): a
    // completions prompt with the tokenizer's framing (add_special_tokens, default true), or a chat
    // request's messages rendered as /v1/chat/completions would render them, generation prompt included.
    post("/tokenize", *openai_chat,
         [this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
           answer(*openai_chat, q, s, [&] {
             const json body = parse_body(b);
             fields::require_object(body);
             std::vector<int32_t> ids;
             if (body.contains("messages")) {
               ids = prompt_ids(openai_chat->parse(body, opts.sampling)).front();
             } else {
               if (!body.contains("prompt") || !body["prompt"].is_string())
                 throw ApiError(400, "'prompt' (a string) or 'messages' is required", "prompt");
               runtime::EncodeOptions enc;
               enc.add_special = fields::boolean(body, "add_special_tokens").value_or(true);
               ids = tok.encode(body["prompt"].get<std::string>(), enc);
             }
             json strs = nullptr;
             if (fields::boolean(body, "return_token_strs").value_or(false)) {
               strs = json::array();
               for (int32_t id : ids) strs.push_back(tok.token_text(id));
             }
             return json{{"count", ids.size()},
                         {"max_model_len", service.max_context()},
                         {"tokens", ids},
                         {"token_strs", std::move(strs)}};
           });
         });
    post("/detokenize", *openai_chat,
         [this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
           answer(*openai_chat, q, s, [&] {
             const json body = parse_body(b);
             fields::require_object(body);
             const std::vector<PromptInput> in = fields::prompts(body, "tokens");
             if (in.size() != 1 || !in[0].ids) throw ApiError(400, "'tokens' must be token ids", "tokens");
             for (int32_t id : *in[0].ids)
               if (size_t(id) >= tok.vocab_size())
                 throw ApiError(400, "token " + std::to_string(id) + " is outside the vocabulary", "tokens");
             return json{{"prompt", tok.decode(*in[0].ids)}};
           });
         });
    post("/v1/embeddings", *openai_chat,
         [this](const httplib::Request& q, const std::string& b, httplib::Response& s) {
           embeddings(q, b, s);
         });
    post("/v1/messages/count_tokens", *anthropic, count_tokens(*anthropic, json::object()));
    post("/v1/responses/input_tokens", *openai_responses,
         count_tokens(*openai_responses, {{"object", "response.input_tokens"}}));
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& s) {
      s.set_content(metrics(), "text/plain; version=0.0.4");
    });
    // The model list, or one model (/v1/models/ID): OpenAI's shapes, Anthropic's when the request
    // carries an anthropic-version header.
    auto model_object = [this](const httplib::Request& q) -> json {
      if (q.has_header("anthropic-version"))
        return {{"type", "model"},
                {"id", opts.model_name},
                {"display_name", opts.model_name},
                {"created_at", "1970-01-01T00:00:00Z"}};
      return {{"id", opts.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "mx8"}};
    };
    http.Get("/v1/models", [this, model_object](const httplib::Request& q, httplib::Response& s) {
      const json m = model_object(q);
      if (q.has_header("anthropic-version"))
        send_json(s, 200,
                  {{"data", json::array({m})},
                   {"has_more", false},
                   {"first_id", opts.model_name},
                   {"last_id", opts.model_name}});
      else
        send_json(s, 200, {{"object", "list"}, {"data", json::array({m})}});
    });
    http.Get("/v1/models/(.+)", [this, model_object](const httplib::Request& q, httplib::Response& s) {
      const Dialect& d = q.has_header("anthropic-version") ? *anthropic : *openai_chat;
      if (q.matches[1] != opts.model_name)
        return send_json(s, 404,
                         d.error_body(404,
                                      "no model '" + std::string(q.matches[1]) + "' here; this server has '" +
                                          opts.model_name + "'",
                                      "model"));
      send_json(s, 200, model_object(q));
    });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& s) {
      const ServiceStatus st = service.status();
      json body = {
          {"status", st.broken.empty() ? "ok" : "error"}, {"running", st.running}, {"waiting", st.waiting}};
      if (!st.broken.empty()) body["error"] = st.broken;
      send_json(s, st.broken.empty() ? 200 : 503, body);
    });
    // Anything else (an unknown path, a wrong method, a body over the limit): an error in OpenAI's
    // shape, which Anthropic clients also read as an error.
    http.set_error_handler([this](const httplib::Request& q, httplib::Response& s) {
      if (!s.body.empty()) return;  // a handler already wrote its error
      const std::string msg =
          s.status == 404   ? "no endpoint " + q.method + " " + q.path
          : s.status == 413 ? "the request body is over " + std::to_string(opts.max_body_bytes) + " bytes"
                            : "the request failed (HTTP " + std::to_string(s.status) + ")";
      send_json(s, s.status, openai_chat->error_body(s.status, msg, ""));
    });
    http.set_exception_handler([this](const httplib::Request&, httplib::Response& s, std::exception_ptr ep) {
      std::string msg = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        msg = e.what();
      } catch (...) {
      }
      send_json(s, 500, openai_chat->error_body(500, msg, ""));
    });
    const ServiceOptions& so = service.options();
    const size_t threads = opts.threads > 0 ? size_t(opts.threads)
                                            : size_t(so.engine.max_sequences) + size_t(so.max_waiting) + 8;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  }
};

HttpServer::HttpServer(GenerationService& service, const runtime::Tokenizer& tok,
                       const runtime::ChatTemplate* tmpl, const ServerOptions& opts)
    : impl_(std::make_unique<Impl>(service, tok, tmpl, opts)) {
  // Debian's cpp-httplib sends without MSG_NOSIGNAL, so a write to a client that has gone would raise
  // SIGPIPE and end the process; ignored, the write fails with EPIPE and the request is cancelled.
  std::signal(SIGPIPE, SIG_IGN);
  impl_->routes();
}

HttpServer::~HttpServer() {
  stop();
}

void check_can_listen(const std::string& host, int port) {
  // A server that binds as HttpServer does (SO_REUSEADDR; httplib resolves the host and listens), then
  // lets go of its socket: httplib closes a socket it could not bind, but one that bound stays open until
  // a server that listened on it stops, which this one never does.
  httplib::Server probe;
  socket_t bound = INVALID_SOCKET;
  probe.set_socket_options([&](socket_t fd) {
    reuse_address(fd);
    bound = fd;
  });
  if (bind_server(probe, host, port) < 0) throw cannot_listen(host, port);
  ::close(bound);
}

int HttpServer::bind() {
  Impl& m = *impl_;
  const int port = bind_server(m.http, m.opts.host, m.opts.port);
  if (port < 0) throw cannot_listen(m.opts.host, m.opts.port);
  // httplib listens with a backlog of 5: a burst of clients connecting at once overflows it, and
  // each dropped connection waits for the client's SYN retry (1 s, then 3). Listening again on the
  // bound socket raises the backlog to the system's limit.
  if (m.listen_fd >= 0) ::listen(m.listen_fd, SOMAXCONN);
  return port;
}

bool HttpServer::listen() {
  Impl& m = *impl_;
  m.listening = true;
  if (m.stop_requested) {
    m.listening = false;
    return true;
  }
  const bool ok = m.http.listen_after_bind();
  m.listening = false;
  return ok;
}

void HttpServer::stop() {
  // httplib's stop() does nothing until listen has marked itself running, so a stop() that comes
  // while listen() is starting waits for that; one that comes before listen() makes it return at
  // once (the two flags are sequentially consistent: each side sees the other's).
  Impl& m = *impl_;
  m.stop_requested = true;
  while (m.listening && !m.http.is_running()) std::this_thread::yield();
  if (m.http.is_running()) m.http.stop();
}

}  // namespace mx8::server
