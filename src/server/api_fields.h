// Typed, range-checked reads of request fields, shared by the API dialects. Each throws ApiError (400)
// naming the field; an absent field (or JSON null) reads as nullopt.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "mx8/server/api.h"

namespace mx8::server::fields {

// The body must be a JSON object.
void require_object(const nlohmann::ordered_json& body);
std::optional<double> number(const nlohmann::ordered_json& body, const char* name, double lo, double hi);
std::optional<int64_t> integer(const nlohmann::ordered_json& body, const char* name, int64_t lo, int64_t hi);
std::optional<bool> boolean(const nlohmann::ordered_json& body, const char* name);
// A string or an array of strings (`max` of them at most).
std::vector<std::string> strings(const nlohmann::ordered_json& body, const char* name, size_t max);
// Prompts as the completions' `prompt` and the embeddings' `input` take them: a string, token ids, or
// an array of those (one prompt each). Throws when the field is absent.
std::vector<PromptInput> prompts(const nlohmann::ordered_json& body, const char* name);
// Message content: a string, or an array of {"type": "text", "text": ...} parts, joined. `where`
// names it in errors ("messages[2].content").
std::string text_content(const nlohmann::ordered_json& content, const std::string& where);
// Fails with 400 "`name` is not supported by this server" when the field is present and not `allowed`.
void unsupported_unless(const nlohmann::ordered_json& body, const char* name,
                        const nlohmann::ordered_json& allowed);

// Fails with 400 "`name` is not supported by this server" when the field is present and not empty (an
// empty list of tools is no tool).
void refuse_nonempty(const nlohmann::ordered_json& body, const char* name);

// OpenAI's logit_bias: an object from token ids (decimal strings) to biases in [-100, 100] ({}: none);
// nullopt when absent or null (the server's default, `mx8 serve --logit-bias`, stays). Ids past the
// vocabulary are the generation service's to refuse (it knows the model).
std::optional<std::vector<std::pair<int32_t, float>>> logit_bias(const nlohmann::ordered_json& body);

// A required string member `name` of `obj`; `where` is obj's place in the body ("tools[0].function").
std::string string_member(const nlohmann::ordered_json& obj, const char* name, const std::string& where);
// A tool's name as both APIs allow it: 1 to 128 letters, digits, '_', '-' or '.'.
std::string tool_name(const nlohmann::ordered_json& obj, const std::string& where);
// A tool as chat templates take it: {"type": "function", "function": {"name", "description",
// "parameters"}}. `description` and `parameters` may be null (left out); parameters must be an object.
nlohmann::ordered_json template_tool(const std::string& name, const nlohmann::ordered_json& description,
                                     const nlohmann::ordered_json& parameters, const std::string& where);
// The request's `tools` (absent or null: none), each read into a template tool by `one(tool, where)`,
// `where` naming the entry as the API does ("tools.0" when `dotted`, else "tools[0]").
nlohmann::ordered_json tool_list(
    const nlohmann::ordered_json& body, bool dotted,
    const std::function<nlohmann::ordered_json(const nlohmann::ordered_json&, const std::string&)>& one);
// Checks a request's tools as a whole: names unique, a named choice among them, and a choice that
// needs a tool (required, named) only with tools. `choice_field` names the field in errors.
void check_tools(const ToolRequest& t, const char* choice_field);
// Fills t.strict_calls where any of `strict` (one per tool) is set; a strict tool's arguments schema
// that generation cannot hold is a 400 naming the tool.
void strict_tools(ToolRequest& t, const std::vector<bool>& strict);
// A tool's "strict" (absent or null: false); `where` names the tool.
bool strict_flag(const nlohmann::ordered_json& tool, const std::string& where);
// OpenAI's tools, tool_choice and parallel_tool_calls. Chat nests a function's fields ({"type":
// "function", "function": {"name", "description", "parameters", "strict"}}, tool_choice {"type":
// "function", "function": {"name"}}); responses writes them flat, as `nested` says. Tools of any other
// type (hosted tools) are refused.
ToolRequest openai_tools(const nlohmann::ordered_json& body, bool nested);
// OpenAI's reasoning effort at `field` ("none" and "minimal" switch a thinking model's reasoning off,
// "low" to "high" on) as the template variables Qwen3's and DeepSeek-V3.1's templates read
// (enable_thinking, thinking); an empty object where the effort is absent or null.
nlohmann::ordered_json reasoning_effort(const nlohmann::ordered_json* effort, const std::string& field);
// A JSON object given as text (OpenAI's tool call arguments).
nlohmann::ordered_json object_text(const nlohmann::ordered_json& v, const std::string& where);

// A JSON schema a reply must follow, compiled (runtime::JsonSchema); what it cannot hold is a 400 that
// names `param` and says why.
std::shared_ptr<const runtime::JsonSchema> output_schema(const nlohmann::ordered_json& schema,
                                                         const std::string& param);

// The sampling fields both APIs share: temperature (up to `max_temperature`), top_p, top_k, and mx8's
// extensions min_p and repetition_penalty; seed.
void read_sampling(const nlohmann::ordered_json& body, double max_temperature, ApiRequest& r);

}  // namespace mx8::server::fields
