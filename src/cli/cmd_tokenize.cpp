// `mx8 tokenize -m PATH [TEXT | --file F]`: prints the token ids of a text, one per line.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "mx8/error.h"
#include "mx8/runtime/tokenizer.h"
#include "mx8/util/read_file.h"

namespace {

struct TokenizeArgs {
  std::string model;
  std::string text;
  std::string file;
  bool no_add_special = false;
  bool no_parse_special = false;
  bool pieces = false;
};

mx8::cli::CommandRegistration reg{
    "tokenize", "Print the token ids of a text, one per line", [](CLI::App& app) {
      auto a = std::make_shared<TokenizeArgs>();
      app.add_option("-m,--model", a->model,
                     "Model folder, GGUF file, tokenizer.json, or a folder holding only tokenizer files")
          ->required();
      app.add_option("text", a->text, "The text to tokenize (or use --file)");
      app.add_option("-f,--file", a->file,
                     "Read the text from this file (verbatim, trailing newline included)");
      app.add_flag("--no-add-special", a->no_add_special, "Do not add BOS/EOS framing tokens");
      app.add_flag("--no-parse-special", a->no_parse_special,
                   "Treat special-token text such as <|im_start|> as plain text");
      app.add_flag("--pieces", a->pieces, "Print each id followed by a tab and its vocabulary entry");
      return [a] {
        std::string text = a->text;
        if (!a->file.empty()) {
          if (!a->text.empty()) throw mx8::Error("tokenize: give either TEXT or --file, not both");
          text = mx8::read_file(a->file);
        }
        auto tok = mx8::runtime::load_tokenizer(a->model);
        mx8::runtime::EncodeOptions opts;
        opts.add_special = !a->no_add_special;
        opts.parse_special = !a->no_parse_special;
        std::string out;
        for (mx8::runtime::TokenId id : tok->encode(text, opts)) {
          out += std::to_string(id);
          if (a->pieces) out += "\t" + tok->token_text(id);
          out += '\n';
        }
        std::fwrite(out.data(), 1, out.size(), stdout);
      };
    }};

}  // namespace
