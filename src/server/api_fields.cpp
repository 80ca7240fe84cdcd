// Request field readers: see api_fields.h.
#include "server/api_fields.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <random>
#include <set>
#include <sstream>

#include "mx8/util/json_parse.h"

namespace mx8::server::fields {

using json = nlohmann::ordered_json;

namespace {

const json* find(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::string range_text(double lo, double hi) {
  std::ostringstream s;
  s << lo << " to " << hi;
  return s.str();
}

[[noreturn]] void bad(const char* name, const std::string& what) {
  throw ApiError(400, std::string("'") + name + "' " + what, name);
}

}  // namespace

void require_object(const json& body) {
  if (!body.is_object())
    throw ApiError(400, "the request body must be a JSON object, not " + std::string(body.type_name()));
}

std::optional<double> number(const json& body, const char* name, double lo, double hi) {
  const json* v = find(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) bad(name, "must be a number, not " + std::string(v->type_name()));
  const double d = v->get<double>();
  if (!std::isfinite(d) || d < lo || d > hi)
    bad(name, "must be from " + range_text(lo, hi) + ", not " + v->dump());
  return d;
}

std::optional<int64_t> integer(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* v = find(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) bad(name, "must be an integer, not " + v->dump());
  // Unsigned values above INT64_MAX come back negative from get<int64_t>; range them as unsigned.
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(hi))
    bad(name, "must be at most " + std::to_string(hi));
  const int64_t i = v->get<int64_t>();
  if (i < lo || i > hi)
    bad(name, "must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", not " + v->dump());
  return i;
}

std::optional<bool> boolean(const json& body, const char* name) {
  const json* v = find(body, name);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) bad(name, "must be true or false, not " + v->dump());
  return v->get<bool>();
}

std::vector<std::string> strings(const json& body, const char* name, size_t max) {
  const json* v = find(body, name);
  if (!v) return {};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    for (const json& e : *v) {
      if (!e.is_string()) bad(name, "must hold strings only, not " + e.dump());
      out.push_back(e.get<std::string>());
    }
  } else {
    bad(name, "must be a string or an array of strings, not " + std::string(v->type_name()));
  }
  if (out.size() > max) bad(name, "may hold at most " + std::to_string(max) + " entries");
  for (const std::string& s : out)
    if (s.empty()) bad(name, "must not hold an empty string");
  return out;
}

std::vector<PromptInput> prompts(const json& body, const char* name) {
  const json* p = find(body, name);
  if (!p) throw ApiError(400, "'" + std::string(name) + "' is required", name);
  auto one = [&](const json& v) {
    PromptInput in;
    if (v.is_string()) {
      in.text = v.get<std::string>();
      return in;
    }
    std::vector<int32_t> ids;
    for (const json& t : v.is_array() ? v : json::array()) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) break;
      ids.push_back(t.get<int32_t>());
    }
    if (!v.is_array() || ids.empty() || ids.size() != v.size())
      bad(name, "must be a string or token ids, or an array of those");
    in.ids = std::move(ids);
    return in;
  };
  std::vector<PromptInput> out;
  if (p->is_array() && !p->empty() && ((*p)[0].is_string() || (*p)[0].is_array()))
    for (const json& each : *p) out.push_back(one(each));
  else
    out.push_back(one(*p));
  return out;
}

std::string text_content(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    throw ApiError(
        400, "'" + where + "' must be a string or an array of text parts, not " + content.type_name(), where);
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      throw ApiError(400, "'" + at + "' must be an object with a 'type'", at);
    const std::string type = part["type"];
    if (type != "text")
      throw ApiError(400, "'" + at + "' is of type '" + type + "'; this server takes text parts only", at);
    if (!part.contains("text") || !part["text"].is_string())
      throw ApiError(400, "'" + at + ".text' must be a string", at + ".text");
    text += part["text"].get<std::string>();
  }
  return text;
}

void unsupported_unless(const json& body, const char* name, const json& allowed) {
  const json* v = find(body, name);
  if (v && *v != allowed)
    throw ApiError(400, std::string("'") + name + "' " + v->dump() + " is not supported by this server",
                   name);
}

void refuse_nonempty(const json& body, const char* name) {
  const json* v = find(body, name);
  if (v && !v->empty())
    throw ApiError(400, std::string("'") + name + "' is not supported by this server", name);
}

std::shared_ptr<const runtime::JsonSchema> output_schema(const json& schema, const std::string& param) {
  try {
    // Through text: the schema's own order does not matter (the compiled properties are sorted).
    return std::make_shared<const runtime::JsonSchema>(
        runtime::JsonSchema::compile(nlohmann::json::parse(schema.dump())));
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    throw ApiError(400, "'" + param + "': " + e.what(), param);
  }
}

std::optional<std::vector<std::pair<int32_t, float>>> logit_bias(const json& body) {
  const char* name = "logit_bias";
  const json* v = find(body, name);
  if (!v) return std::nullopt;
  if (!v->is_object())
    bad(name, "must be an object from token ids to biases, not " + std::string(v->type_name()));
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, bias] : v->items()) {
    const std::string at = std::string(name) + "[\"" + key + "\"]";
    const bool digits = !key.empty() && key.size() <= 10 &&
                        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    const long long id = digits ? std::stoll(key) : -1;
    if (id < 0 || id > INT32_MAX)
      throw ApiError(400, "'" + std::string(name) + "' key \"" + key + "\" is not a token id", name);
    if (!bias.is_number() || !(bias.get<double>() >= -100 && bias.get<double>() <= 100))
      throw ApiError(400, "'" + at + "' must be a number from -100 to 100, not " + bias.dump(), name);
    out.emplace_back(int32_t(id), float(bias.get<double>()));
  }
  return out;
}

std::string string_member(const json& obj, const char* name, const std::string& where) {
  const std::string at = where + "." + name;
  if (!obj.is_object() || !obj.contains(name) || !obj[name].is_string())
    throw ApiError(400, "'" + at + "' must be a string", at);
  return obj[name].get<std::string>();
}

std::string tool_name(const json& obj, const std::string& where) {
  std::string name = string_member(obj, "name", where);
  const bool ok = !name.empty() && name.size() <= 128 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
  if (!ok)
    throw ApiError(
        400,
        "'" + where + ".name' must be 1 to 128 letters, digits, '_', '-' or '.', not " + json(name).dump(),
        where + ".name");
  return name;
}

json template_tool(const std::string& name, const json& description, const json& parameters,
                   const std::string& where) {
  json function = {{"name", name}};
  if (!description.is_null()) {
    if (!description.is_string())
      throw ApiError(400, "'" + where + ".description' must be a string", where + ".description");
    function["description"] = description;
  }
  if (!parameters.is_null()) {
    if (!parameters.is_object())
      throw ApiError(400, "'" + where + ".parameters' must be a JSON schema object", where + ".parameters");
    function["parameters"] = parameters;
  }
  return {{"type", "function"}, {"function", std::move(function)}};
}

json tool_list(const json& body, bool dotted,
               const std::function<json(const json&, const std::string&)>& one) {
  json out = json::array();
  const json* tools = find(body, "tools");
  if (!tools) return out;
  if (!tools->is_array()) throw ApiError(400, "'tools' must be an array", "tools");
  for (size_t i = 0; i < tools->size(); ++i) {
    const std::string at = dotted ? "tools." + std::to_string(i) : "tools[" + std::to_string(i) + "]";
    if (!(*tools)[i].is_object()) throw ApiError(400, "'" + at + "' must be an object", at);
    out.push_back(one((*tools)[i], at));
  }
  return out;
}

void check_tools(const ToolRequest& t, const char* choice_field) {
  std::set<std::string> names;
  for (size_t i = 0; i < t.tools.size(); ++i)
    if (!names.insert(t.tools[i]["function"]["name"].get<std::string>()).second)
      throw ApiError(400, "'tools' names " + t.tools[i]["function"]["name"].dump() + " twice", "tools");
  const bool needs_tool = t.choice == ToolRequest::Choice::required || t.choice == ToolRequest::Choice::named;
  if (needs_tool && t.tools.empty())
    throw ApiError(400, std::string("'") + choice_field + "' asks for a tool call, but 'tools' offers none",
                   choice_field);
  if (t.choice == ToolRequest::Choice::named && !names.count(t.name))
    throw ApiError(
        400, std::string("'") + choice_field + "' names \"" + t.name + "\", which 'tools' does not offer",
        choice_field);
}

bool strict_flag(const json& tool, const std::string& where) {
  const json s = tool.value("strict", json());
  if (!s.is_null() && !s.is_boolean())
    throw ApiError(400, "'" + where + ".strict' must be true or false", where + ".strict");
  return s == true;
}

void strict_tools(ToolRequest& t, const std::vector<bool>& strict) {
  if (std::find(strict.begin(), strict.end(), true) == strict.end()) return;
  for (size_t i = 0; i < t.tools.size(); ++i) {
    const json& f = t.tools[i]["function"];
    runtime::JsonTool tool{f["name"].get<std::string>(), std::nullopt};
    // Through text, as output_schema does; a strict tool without parameters takes any object.
    if (strict[i]) tool.arguments = nlohmann::json::parse(f.value("parameters", json::object()).dump());
    t.strict_calls.push_back(std::move(tool));
  }
  try {
    (void)runtime::JsonSchema::text().with_calls(t.strict_calls);
  } catch (const Error& e) {
    throw ApiError(400, std::string("'tools': ") + e.what(), "tools");
  }
}

json object_text(const json& v, const std::string& where) {
  if (v.is_string()) {
    try {
      json j = parse_json_bounded<json>(v.get<std::string>(), where);
      if (j.is_object()) return j;
    } catch (const std::exception&) {
    }
  }
  throw ApiError(400, "'" + where + "' must be a JSON object written as a string", where);
}

ToolRequest openai_tools(const json& body, bool nested) {
  ToolRequest t;
  std::vector<bool> strict;
  t.tools = tool_list(body, false, [&](const json& tool, const std::string& at) {
    if (const json type = tool.value("type", json()); type != "function")
      throw ApiError(400, "'" + at + "' is of type " + type.dump() + "; this server runs function tools only",
                     at + ".type");
    if (nested && (!tool.contains("function") || !tool["function"].is_object()))
      throw ApiError(400, "'" + at + ".function' must be an object", at + ".function");
    const json& f = nested ? tool["function"] : tool;
    const std::string where = nested ? at + ".function" : at;
    strict.push_back(strict_flag(f, where));
    return template_tool(tool_name(f, where), f.value("description", json()), f.value("parameters", json()),
                         where);
  });
  if (const json* c = find(body, "tool_choice")) {
    if (*c == "none") {
      t.choice = ToolRequest::Choice::none;
    } else if (*c == "required") {
      t.choice = ToolRequest::Choice::required;
    } else if (c->is_object() && c->value("type", json()) == "function" &&
               (!nested || c->contains("function"))) {
      t.choice = ToolRequest::Choice::named;
      t.name = nested ? tool_name((*c)["function"], "tool_choice.function") : tool_name(*c, "tool_choice");
    } else if (*c != "auto") {
      throw ApiError(400,
                     std::string("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": "
                                 "\"function\", ") +
                         (nested ? "\"function\": {\"name\": ...}}" : "\"name\": ...}"),
                     "tool_choice");
    }
  }
  t.parallel = boolean(body, "parallel_tool_calls").value_or(true);
  check_tools(t, "tool_choice");
  strict_tools(t, strict);
  return t;
}

json reasoning_effort(const json* effort, const std::string& field) {
  if (!effort || effort->is_null()) return json::object();
  const bool off = *effort == "none" || *effort == "minimal";
  if (!off && *effort != "low" && *effort != "medium" && *effort != "high")
    throw ApiError(400, "'" + field + "' must be \"none\", \"minimal\", \"low\", \"medium\" or \"high\"",
                   field);
  return {{"enable_thinking", !off}, {"thinking", !off}};
}

void read_sampling(const json& body, double max_temperature, ApiRequest& r) {
  if (auto t = number(body, "temperature", 0, max_temperature)) r.sampling.temperature = float(*t);
  if (auto p = number(body, "top_p", 0, 1)) r.sampling.top_p = float(*p);
  if (auto k = integer(body, "top_k", 0, 1 << 30)) r.sampling.top_k = int(*k);
  if (auto m = number(body, "min_p", 0, 1)) r.sampling.min_p = float(*m);
  if (auto p = number(body, "repetition_penalty", 0.01, 100)) r.sampling.repetition_penalty = float(*p);
  if (auto s = integer(body, "seed", INT64_MIN, INT64_MAX)) {
    r.sampling.seed = uint64_t(*s);
    r.seeded = true;
  } else {
    // No seed: every request draws its own, so two identical requests can differ (as both APIs do).
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    r.sampling.seed = rng();
  }
}

}  // namespace mx8::server::fields
