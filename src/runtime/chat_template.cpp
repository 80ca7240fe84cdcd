// ChatTemplate: finding a model's chat template and rendering conversations with it.
#include "mx8/runtime/chat_template.h"

#include <fstream>
#include <sstream>

#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "mx8/util/json_parse.h"
#include "mx8/util/read_file.h"
#include "runtime/chat_template_ast.h"

namespace mx8::runtime {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

std::string token_content(const ordered_json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return {};
}

std::optional<ChatTemplate> from_config(const fs::path& config, const fs::path& jinja_file) {
  ordered_json cfg = ordered_json::object();
  if (fs::exists(config)) {
    try {
      cfg = parse_json_bounded<ordered_json>(read_file(config), config.string());
    } catch (const ordered_json::exception& e) {
      throw Error(config.string() + ": not valid JSON: " + e.what());
    }
  }
  std::string bos = cfg.contains("bos_token") ? token_content(cfg["bos_token"]) : "";
  std::string eos = cfg.contains("eos_token") ? token_content(cfg["eos_token"]) : "";
  // A chat_template.jinja file beside the config takes precedence, as in transformers.
  if (!jinja_file.empty() && fs::exists(jinja_file)) return ChatTemplate(read_file(jinja_file), bos, eos);
  if (!cfg.contains("chat_template")) return std::nullopt;
  const ordered_json& t = cfg["chat_template"];
  if (t.is_string()) return ChatTemplate(t.get<std::string>(), bos, eos);
  if (t.is_array()) {  // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
    for (auto& e : t)
      if (e.value("name", "") == "default")
        return ChatTemplate(e.at("template").get<std::string>(), bos, eos);
  }
  throw Error(config.string() + ": chat_template has no default template");
}

std::optional<ChatTemplate> from_gguf(const fs::path& path) {
  io::GgufFile f = io::GgufFile::open(path.string());
  if (!f.has("tokenizer.chat_template")) return std::nullopt;
  std::string bos, eos;
  if (const auto* tokens = f.find("tokenizer.ggml.tokens")) {
    auto name_of = [&](const char* key) -> std::string {
      int64_t id = f.get_int(key, -1);
      return id >= 0 && static_cast<size_t>(id) < tokens->array_strings.size() ? tokens->array_strings[id]
                                                                               : "";
    };
    bos = name_of("tokenizer.ggml.bos_token_id");
    eos = name_of("tokenizer.ggml.eos_token_id");
  }
  return ChatTemplate(f.require_string("tokenizer.chat_template"), bos, eos);
}

bool is_gguf(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, std::string bos_token, std::string eos_token)
    : source_(source),
      bos_(std::move(bos_token)),
      eos_(std::move(eos_token)),
      program_(parse_chat_template(source)) {}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::optional<ChatTemplate> ChatTemplate::from_model(const fs::path& path) {
  if (!fs::exists(path)) throw Error(path.string() + ": no such file or folder");
  if (fs::is_directory(path)) {
    if (fs::exists(path / "tokenizer_config.json") || fs::exists(path / "chat_template.jinja"))
      return from_config(path / "tokenizer_config.json", path / "chat_template.jinja");
    for (auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && e.path().extension() == ".gguf") return from_gguf(e.path());
    return std::nullopt;
  }
  if (is_gguf(path)) return from_gguf(path);
  if (path.filename() == "tokenizer.json")
    return from_config(path.parent_path() / "tokenizer_config.json",
                       path.parent_path() / "chat_template.jinja");
  return from_config(path, {});
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  ordered_json msgs = ordered_json::array();
  for (auto& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  return render(msgs, {{"add_generation_prompt", add_generation_prompt}});
}

std::string ChatTemplate::render(const ordered_json& messages, const ordered_json& variables) const {
  if (!messages.is_array()) throw Error("chat template: messages must be a JSON array");
  jinja::Dict vars;
  vars.emplace_back("messages", jinja::Value::from_json(messages));
  vars.emplace_back("add_generation_prompt", jinja::Value::boolean(false));
  vars.emplace_back("bos_token", jinja::Value::string(bos_));
  vars.emplace_back("eos_token", jinja::Value::string(eos_));
  if (variables.is_object())
    for (auto& [k, v] : variables.items()) vars.emplace_back(k, jinja::Value::from_json(v));
  return run_chat_template(*program_, vars);
}

}  // namespace mx8::runtime
