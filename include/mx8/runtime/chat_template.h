// Chat templates: turns a conversation into the prompt text a chat model was trained on, by running
// the model's own Jinja template (tokenizer_config.json "chat_template", a chat_template.jinja file,
// or GGUF tokenizer.chat_template) in a small Jinja interpreter.
//
// The interpreter covers the Jinja subset real chat templates use, with the settings Hugging Face
// transformers renders them with (trim_blocks, lstrip_blocks, loop controls, a tojson that keeps
// non-ASCII text, raise_exception, strftime_now): text, {{ }}, {% if/elif/else %}, {% for %} with
// loop.* and else, {% set %} (plain, namespace attributes, block form), {% break/continue %},
// {% macro %}, whitespace control, comments; literals, lists, dicts, tuples, attribute/index/slice,
// arithmetic, comparisons, and/or/not, in, is-tests, conditional expressions, ~ concatenation;
// filters (trim, tojson, length, default, join, upper/lower, first/last, items, list, map,
// selectattr/rejectattr, replace, string/int/float, ...) and the Python string/dict methods
// templates call (strip, startswith, split, get, items, ...). Output matches Jinja2 byte for byte
// on the tested templates (tests/data/chat). Anything outside the subset is an mx8::Error naming it.
//
//   auto tmpl = mx8::runtime::ChatTemplate::from_model(path);   // nullopt: the model has none
//   std::string prompt = tmpl->apply({{"system", "Be brief."}, {"user", "Hi"}}, true);
//   auto ids = tokenizer->encode(prompt, {.add_special = false});  // the template wrote BOS
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace mx8::runtime {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool"
  std::string content;
};

class ChatTemplate {
 public:
  // Parses `source` (throws mx8::Error with the line of a syntax error). bos/eos_token are the
  // values the template sees as bos_token / eos_token.
  explicit ChatTemplate(const std::string& source, std::string bos_token = "", std::string eos_token = "");
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // The template of a model folder / tokenizer-only folder / tokenizer_config.json / GGUF file,
  // with its BOS and EOS strings; nullopt when it has no chat template.
  static std::optional<ChatTemplate> from_model(const std::filesystem::path& path);

  // Renders `messages`. add_generation_prompt: end with the header of an assistant turn.
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // The general form: `messages` is a JSON array of message objects (extra fields such as
  // tool_calls or reasoning_content pass through); `variables` (a JSON object) adds or overrides
  // template variables (tools, enable_thinking, add_generation_prompt, bos_token, ...).
  std::string render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& variables) const;

  const std::string& source() const { return source_; }
  const std::string& bos_token() const { return bos_; }
  const std::string& eos_token() const { return eos_; }

  struct Program;

 private:
  std::string source_, bos_, eos_;
  std::shared_ptr<const Program> program_;
};

}  // namespace mx8::runtime
