// The wire formats the server speaks: OpenAI chat completions, (legacy) completions and responses, and
// Anthropic messages. Each is a Dialect: it turns a request body into the server's terms and the result back
// into that API's JSON and server-sent events. No I/O here (http_server.h does it), so every format
// is tested on its own (tests/server/api_test.cpp).
//
// Requests are checked field by field: a field of the wrong type or out of its range, a missing
// required field, or a feature the server does not have (images, server-side tools) is an
// ApiError that names the field; unknown fields are ignored, as both APIs' clients send extras.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "mx8/error.h"
#include "mx8/runtime/json_schema.h"
#include "mx8/runtime/sampler.h"
#include "mx8/runtime/tool_calls.h"
#include "mx8/server/generation_service.h"

namespace mx8::server {

// A request the server refuses, with the HTTP status to send and the field it is about ("" if none).
class ApiError : public Error {
 public:
  ApiError(int status, const std::string& message, std::string param = "")
      : Error(message), status_(status), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string param_;
};

// A generated token's log-probability as the APIs show it: the bytes it adds to the reply, where they
// start in it (in characters, Unicode code points), and its most likely alternatives (their bytes and
// log-probabilities).
struct TokenLogprob {
  std::string token;
  size_t offset = 0;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};

// One prompt of a completions request: text, or token ids used as given.
struct PromptInput {
  std::optional<std::string> text;
  std::optional<std::vector<int32_t>> ids;
};

// The tools a request offers the model, and whether its reply may, must or must not call one.
struct ToolRequest {
  // As chat templates take them: [{"type": "function", "function": {"name", "description",
  // "parameters"}}]; empty: none offered.
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();
  enum class Choice { automatic, none, required, named } choice = Choice::automatic;
  std::string name;      // Choice::named: the tool to call
  bool parallel = true;  // false: a reply has at most one call (the first)
  // Where any tool is strict (OpenAI function.strict, Anthropic strict): every tool, the strict ones
  // with their arguments' schema, for generation to hold calls to; empty: calls are not held.
  std::vector<runtime::JsonTool> strict_calls;
  bool offered() const { return !tools.empty() && choice != Choice::none; }
  bool forces_call() const {
    return !tools.empty() && (choice == Choice::required || choice == Choice::named);
  }
};

// A request in the server's terms.
struct ApiRequest {
  // Chat: the conversation for the chat template, [{"role", "content"}] with text content; an
  // assistant turn may carry "tool_calls" ([{"id", "type": "function", "function": {"name",
  // "arguments": an object}}]), and a "tool" turn a "tool_call_id".
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  ToolRequest tools;
  // Chat: variables for the chat template besides messages, tools and add_generation_prompt (OpenAI
  // chat_template_kwargs and reasoning_effort, Anthropic thinking: enable_thinking / thinking).
  nlohmann::ordered_json template_variables = nlohmann::ordered_json::object();
  // Chat: text the reply must start with (an Anthropic request whose last message is the assistant's);
  // it is appended to the rendered prompt and is not repeated in the reply.
  std::string assistant_prefix;
  // Chat: the reply must be JSON, a value of this schema (OpenAI response_format json_object or
  // json_schema, Anthropic output_config.format); none: free text.
  std::shared_ptr<const runtime::JsonSchema> json_output;
  std::string json_output_field;  // the field that asked for it, for errors
  // Chat: the most tokens a thinking model's reasoning may take before its block is closed for it
  // (Anthropic thinking.budget_tokens, vLLM's thinking_token_budget); none: no limit but max_tokens.
  std::optional<int64_t> thinking_budget;
  // Completions: the prompts, `n` choices each; empty for chat.
  std::vector<PromptInput> prompts;
  int n = 1;                         // OpenAI: choices per prompt, each its own sample
  bool echo = false;                 // completions: the reply starts with the prompt
  runtime::SamplingParams sampling;  // the server's settings, overridden by the request's fields
  bool seeded = false;               // the request gave a seed
  std::optional<int> max_tokens;     // none: up to the context
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // OpenAI stream_options.include_usage
  int logprobs = -1;           // OpenAI: >= 0 when asked for log-probabilities, with this many alternatives
};

// What a finished request produced.
struct ApiResult {
  std::string text;
  StopReason reason = StopReason::none;
  std::string stop_sequence;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  std::optional<std::vector<TokenLogprob>> logprobs;  // when the request asked for them
  std::vector<runtime::ToolCall> tool_calls = {};     // read out of the text (`text` is what is left)
  std::string reasoning = {};                         // the reply's <think> block, where the model thinks
  // The reply ended by calling tools (not cut off by the token limit or the context).
  bool ended_with_calls() const {
    return !tool_calls.empty() && reason != StopReason::max_tokens && reason != StopReason::context_full;
  }
};

// What a streamed choice has sent so far: Anthropic numbers its content blocks, and where a reply may
// hold more than text (tool calls, reasoning) it opens a text block only when text comes.
struct StreamState {
  bool lazy_text = false;  // set before stream_start: no text block until there is text
  enum class Block { none, text, thinking } open = Block::none;  // the block being written
  int blocks = 0;                                                // content blocks opened
  int calls = 0;                                                 // tool calls sent
  // OpenAI Responses: events are numbered, the .done events repeat the text of their item, and the
  // last event repeats every item and the usage.
  int64_t events = 0;
  int prompt_tokens = 0;
  std::string item_text;
  nlohmann::ordered_json items = nlohmann::ordered_json::array();
  // Log-probabilities of tokens that wrote no text yet (sent with the next text), and the open
  // message's (repeated by its .done events).
  nlohmann::ordered_json held_logprobs = nlohmann::ordered_json::array();
  nlohmann::ordered_json item_logprobs = nlohmann::ordered_json::array();
};

// The fields every response carries.
struct ResponseMeta {
  std::string id;  // "chatcmpl-...", "cmpl-...", "msg_..."
  std::string model;
  int64_t created = 0;  // Unix seconds
};

class Dialect {
 public:
  virtual ~Dialect() = default;
  // Throws ApiError. `defaults`: the server's sampling settings, for the fields the body leaves out.
  virtual ApiRequest parse(const nlohmann::ordered_json& body,
                           const runtime::SamplingParams& defaults) const = 0;
  virtual std::string id_prefix() const = 0;
  // The prefix of the ids the server gives tool calls ("call_", "toolu_").
  virtual std::string tool_call_id_prefix() const { return "call_"; }
  // Whether log-probabilities list an end-of-turn token (the completions do: a harness that echoes a
  // prompt expects one entry per token, however generation ended; chat lists the reply's tokens).
  virtual bool lists_end_of_turn() const { return false; }
  // A whole (non-streaming) response: its choices in order (the OpenAI dialects number them; Anthropic
  // has one), with `total`'s token counts as its usage (each prompt's tokens once, every choice's
  // generated tokens).
  virtual nlohmann::ordered_json response(const ResponseMeta& m, const std::vector<ApiResult>& choices,
                                          const ApiResult& total) const = 0;
  // The response of one choice.
  nlohmann::ordered_json response(const ResponseMeta& m, const ApiResult& r) const {
    return response(m, {r}, r);
  }
  // An error body for `status`.
  virtual nlohmann::ordered_json error_body(int status, const std::string& message,
                                            const std::string& param) const = 0;
  // Server-sent events of a streamed response: the opening (of one choice per state), a piece of
  // choice `index`'s text or reasoning, one of its tool calls, its end, the end of the response (`total`: the
  // token counts, and for one choice how it ended), an error. `logprobs`: those of the tokens since the
  // previous piece, when the request asked for them.
  virtual std::string stream_start(const ResponseMeta& m, int prompt_tokens,
                                   std::vector<StreamState>& choices) const = 0;
  virtual std::string stream_text(const ResponseMeta& m, int index, const std::string& text,
                                  const std::vector<TokenLogprob>* logprobs, StreamState& s) const = 0;
  virtual std::string stream_reasoning(const ResponseMeta& m, int index, const std::string& text,
                                       StreamState& s) const {
    throw Error("this endpoint has no reasoning");
  }
  virtual std::string stream_tool_call(const ResponseMeta& m, int index, const runtime::ToolCall& call,
                                       StreamState& s) const {
    throw Error("this endpoint has no tool calls");
  }
  virtual std::string stream_choice_end(const ResponseMeta& m, int index, const ApiResult& r,
                                        StreamState& s) const = 0;
  virtual std::string stream_end(const ResponseMeta& m, const ApiResult& total, bool include_usage) const = 0;
  virtual std::string stream_error(int status, const std::string& message) const = 0;
};

std::unique_ptr<Dialect> openai_chat_dialect();        // POST /v1/chat/completions
std::unique_ptr<Dialect> openai_completion_dialect();  // POST /v1/completions
std::unique_ptr<Dialect> anthropic_dialect();          // POST /v1/messages
std::unique_ptr<Dialect> openai_responses_dialect();   // POST /v1/responses

// One server-sent event: "event: NAME\n" (when NAME is not empty), "data: JSON\n\n".
std::string sse_event(const std::string& name, const nlohmann::ordered_json& data);

// Log-probabilities as OpenAI's chat and Responses APIs list them: [{token, logprob, bytes (its UTF-8
// bytes), top_logprobs: [{token, logprob, bytes}]}].
nlohmann::ordered_json openai_token_logprobs(const std::vector<TokenLogprob>& lp);

}  // namespace mx8::server
