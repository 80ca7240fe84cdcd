// `mx8 eval`: what each weight and KV-cache format costs in accuracy and saves in memory, on a real
// model and a real text. Every variant reads the same text teacher-forced (eval/teacher_forcing.h);
// the first, the model as given, is the reference the others are compared with position by position
// (eval/comparison.h).
//
//   mx8 eval                                  # the bundled stories260K on its bundled TinyStories text
//   mx8 eval -m hf-folder --text book.txt --weights as-given,fp8,mxfp8 --kv auto,fp8 --device cuda
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/gen_common.h"
#include "cli/perf_report.h"
#include "mx8/backend/backend_by_name.h"
#include "mx8/error.h"
#include "mx8/eval/comparison.h"
#include "mx8/eval/teacher_forcing.h"
#include "mx8/util/read_file.h"

namespace {

using namespace mx8;

struct EvalOptions {
  std::string model, text, separator = "<|endoftext|>";
  std::string weights = "as-given,bf16,fp8,mxfp8", kv = "auto,fp8";
  std::string device = "cpu";
  int threads = 0, ctx = 0, stride = 0, chunk = 256;
  int64_t max_tokens = 0;
  std::string quality_md;
};

// The reference keeps one float per vocabulary entry and position; past this, ask for fewer positions.
constexpr double kMaxReferenceBytes = 16.0 * (1ull << 30);

std::string default_text_path() {
  std::string p = std::string(MX8_SOURCE_DIR) + "/models/tinystories_sample.txt";
  return std::filesystem::exists(p) ? p : "models/tinystories_sample.txt";
}

std::vector<std::string> split_list(const std::string& s, const char* option) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  if (out.empty()) throw Error(std::string(option) + " needs at least one value");
  return out;
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  return b == std::string::npos ? std::string() : s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The text's documents (split at `separator`, trimmed as llama2.c prepares TinyStories), tokenized with
// the model's framing (BOS); special-token text in them is read as plain text.
std::vector<std::vector<int32_t>> read_documents(const EvalOptions& o, const runtime::Tokenizer& tok) {
  std::string text;
  try {
    text = read_file(o.text);
  } catch (const Error& e) {
    throw Error(std::string("--text ") + e.what());
  }
  std::vector<std::string> parts;
  if (o.separator.empty()) {
    parts.push_back(text);
  } else {
    for (size_t at = 0;;) {
      const size_t next = text.find(o.separator, at);
      parts.push_back(text.substr(at, next == std::string::npos ? std::string::npos : next - at));
      if (next == std::string::npos) break;
      at = next + o.separator.size();
    }
  }
  runtime::EncodeOptions eo;
  eo.parse_special = false;
  std::vector<std::vector<int32_t>> docs;
  for (const std::string& p : parts) {
    const std::string t = trim(p);
    if (!t.empty()) docs.push_back(tok.encode(t, eo));
  }
  if (eval::scored_positions(docs, 0) == 0)
    throw Error("--text " + o.text + ": no document has two tokens or more, so there is nothing to score");
  return docs;
}

struct Variant {
  std::string weights;  // as the user named it
  backend::KvFormat kv = backend::KvFormat::bf16;
  std::string formats;  // the loaded weights' formats (WeightStats::formats)
  size_t weight_bytes = 0, kv_bytes_per_position = 0;
  eval::Summary s;
  double seconds = 0;
};

const char* kv_short_name(backend::KvFormat f) {
  return f == backend::KvFormat::f32 ? "f32" : f == backend::KvFormat::bf16 ? "bf16" : "fp8";
}

size_t kv_bytes_per_position(const model::LlamaConfig& c, backend::KvFormat f) {
  backend::KvCacheDesc d{f, int(c.n_layers), int(c.n_kv_heads), int(c.head_dim), 16, 1};
  return d.total_bytes() / 16;
}

using mx8::cli::fmt;

// 95% interval of exp(mean) from the mean's standard error, as "x (lo-hi)".
std::string ppl_cell(double nll, double se) {
  return fmt("%.4f", std::exp(nll)) + fmt(" (%.4f", std::exp(nll - 1.96 * se)) +
         fmt("-%.4f)", std::exp(nll + 1.96 * se));
}

std::string delta_cell(double d, double se) {
  auto pct = [](double x) { return 100.0 * std::expm1(x); };
  return fmt("%+.3f%%", pct(d)) + fmt(" (%+.3f", pct(d - 1.96 * se)) + fmt(" to %+.3f)", pct(d + 1.96 * se));
}

std::string table(const std::vector<Variant>& vs) {
  std::string t =
      "| weights | KV cache | perplexity (95% CI) | vs reference (95% CI) | mean KLD | KLD p99 | KLD max | "
      "top-1 same | weights MiB | KV bytes/position | tokens/s |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  const Variant& ref = vs.front();
  for (size_t i = 0; i < vs.size(); ++i) {
    const Variant& v = vs[i];
    t += "| " + v.weights + " | " + kv_short_name(v.kv) + " | " + ppl_cell(v.s.nll, v.s.nll_se) + " | ";
    if (i == 0) {
      t += "reference | | | | | ";
    } else {
      t += delta_cell(v.s.dnll, v.s.dnll_se) + " | " + fmt("%.6f", v.s.kld) +
           fmt(" ± %.6f", 1.96 * v.s.kld_se) + " | " + fmt("%.5f", v.s.kld_p99) + " | " +
           fmt("%.4f", v.s.kld_max) + " | " + fmt("%.2f%%", 100.0 * v.s.top1_same) + " | ";
    }
    t += fmt("%.2f", double(v.weight_bytes) / 1048576.0) +
         (i == 0 ? "" : fmt(" (%.0f%%)", 100.0 * double(v.weight_bytes) / double(ref.weight_bytes))) + " | " +
         std::to_string(v.kv_bytes_per_position) +
         (i == 0 ? ""
                 : fmt(" (%.0f%%)",
                       100.0 * double(v.kv_bytes_per_position) / double(ref.kv_bytes_per_position))) +
         " | " + fmt("%.0f", double(v.s.positions) / v.seconds) + " |\n";
  }
  return t;
}

// The command that reproduces a table, with paths inside the source tree written relative to it.
std::string command_line(const EvalOptions& o, const eval::Windowing& w) {
  auto rel = [](const std::string& p) {
    const std::string root = std::string(MX8_SOURCE_DIR) + "/";
    return p.starts_with(root) ? p.substr(root.size()) : p;
  };
  std::string c = "mx8 eval -m " + rel(o.model) + " --text " + rel(o.text) + " --weights " + o.weights +
                  " --kv " + o.kv + " --device " + o.device + " --ctx " + std::to_string(w.ctx) +
                  " --stride " + std::to_string(w.stride);
  if (o.separator != "<|endoftext|>") c += " --separator '" + o.separator + "'";
  if (o.max_tokens > 0) c += " --max-tokens " + std::to_string(o.max_tokens);
  return c;
}

void run_eval(EvalOptions& o) {
  if (o.model.empty()) o.model = cli::default_model_path();
  if (o.text.empty()) o.text = default_text_path();
  if (o.max_tokens < 0) throw Error("--max-tokens must be >= 0 (0: the whole text)");
  const std::vector<std::string> weights = split_list(o.weights, "--weights"), kvs = split_list(o.kv, "--kv");
  for (const std::string& w : weights) model::parse_weight_spec(w);  // a bad name fails before any load
  for (const std::string& k : kvs) cli::check_kv_name(k);

  const model::LlamaConfig cfg = model::read_llama_config(o.model);
  auto tok = runtime::load_tokenizer(o.model);
  const std::vector<std::vector<int32_t>> docs = read_documents(o, *tok);
  eval::Windowing w;
  const int64_t made_for = model::supported_context(cfg);
  w.ctx = o.ctx > 0 ? o.ctx : int(made_for > 0 ? std::min<int64_t>(512, made_for) : 512);
  if (const int64_t limit = model::rope_position_limit(cfg); limit > 0 && w.ctx > limit)
    throw Error("eval: --ctx " + std::to_string(w.ctx) + " is past the " + std::to_string(limit) +
                " positions to which " + o.model + "'s dynamic RoPE scaling keeps its frequencies");
  w.stride = o.stride > 0 ? o.stride : w.ctx / 2;
  w.chunk = std::min(o.chunk, w.ctx);
  w.bos = tok->bos_id() == runtime::kNoToken ? -1 : tok->bos_id();
  const int64_t positions = eval::scored_positions(docs, o.max_tokens);
  const double ref_bytes = double(positions) * double(cfg.vocab) * 4.0;
  if (ref_bytes > kMaxReferenceBytes)
    throw Error("eval: the reference's distributions would take " +
                fmt("%.1f GiB", ref_bytes / (1ull << 30)) +
                " (positions x vocabulary x 4 bytes); pass --max-tokens " +
                std::to_string(int64_t(kMaxReferenceBytes / (double(cfg.vocab) * 4.0))) + " or fewer");
  const std::string scope = std::to_string(docs.size()) +
                            (docs.size() == 1 ? " document, " : " documents, ") + std::to_string(positions) +
                            " positions scored (windows of " + std::to_string(w.ctx) + " tokens, stride " +
                            std::to_string(w.stride) + ")";
  std::fprintf(stderr, "mx8 eval: %s (%s, %lld layers, vocab %lld); %s: %s\n", o.model.c_str(),
               cfg.arch.c_str(), (long long)cfg.n_layers, (long long)cfg.vocab, o.text.c_str(),
               scope.c_str());

  auto be = backend::make_backend(o.device, o.threads);
  std::vector<Variant> done;
  std::unique_ptr<eval::Reference> ref;
  // The reference first (the model as given, KV auto), then every weights x KV pair but that one.
  std::vector<std::pair<std::string, std::string>> plan{{"as-given", "auto"}};
  for (const std::string& wm : weights)
    for (const std::string& k : kvs)
      if (!(wm == "as-given" && k == "auto")) plan.push_back({wm, k});
  for (const auto& [wm, k] : plan) {
    model::LoadOptions lo;
    const model::WeightSpec spec = model::parse_weight_spec(wm);
    lo.weights = spec.mode;
    lo.scale_rule = spec.rule;
    lo.max_tokens_per_step = w.chunk;
    auto m = model::load_llama(o.model, *be, lo);
    Variant v;
    v.weights = wm;
    v.kv = cli::parse_kv(k, *m);
    // What tells variants apart: the weights' formats and, for weights quantized here, the rule.
    v.formats = m->weight_stats().formats;
    if (spec.mode == model::WeightMode::fp8 || spec.mode == model::WeightMode::mxfp8)
      v.formats += std::string(", scale rule ") + format::scale_rule_name(spec.rule);
    v.weight_bytes = m->weight_stats().bytes;
    v.kv_bytes_per_position = kv_bytes_per_position(cfg, v.kv);
    bool same = false;  // e.g. bf16 weights of a bf16 model: the same numbers again
    for (const Variant& d : done) same |= d.formats == v.formats && d.kv == v.kv;
    if (same) {
      std::fprintf(stderr, "mx8 eval: weights %s with a %s KV cache is a variant already measured; skipped\n",
                   wm.c_str(), backend::kv_format_name(v.kv));
      continue;
    }
    if (!be->supports_kv(v.kv))
      throw Error("backend " + be->info().name + " does not support a " + backend::kv_format_name(v.kv) +
                  " KV cache");
    std::unique_ptr<eval::Comparison> cmp;
    if (ref)
      cmp = std::make_unique<eval::Comparison>(*ref);
    else
      ref = std::make_unique<eval::Reference>(cfg.vocab);
    const auto t0 = std::chrono::steady_clock::now();
    eval::score_documents(*m, *be, v.kv, docs, w, o.max_tokens, [&](const float* logits, int32_t target) {
      if (cmp)
        cmp->add(logits, target);
      else
        ref->add(logits, target);
    });
    v.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    v.s = cmp ? cmp->summary() : ref->summary();
    std::fprintf(stderr, "mx8 eval: weights %s, KV %s: perplexity %.4f (%.1f s)\n", wm.c_str(),
                 backend::kv_format_name(v.kv), std::exp(v.s.nll), v.seconds);
    done.push_back(std::move(v));
  }

  std::string legend;
  for (const Variant& v : done)
    if (legend.find("`" + v.weights + "`") == std::string::npos)
      legend += "- `" + v.weights + "`: " + v.formats + "\n";
  for (const Variant& v : done)
    if (v.kv == backend::KvFormat::fp8 && legend.find("KV cache fp8") == std::string::npos)
      legend += std::string("- KV cache fp8: ") + backend::kv_format_name(v.kv) + "\n";
  const std::string tbl = table(done);
  std::printf("\n%s\nweights:\n%s", tbl.c_str(), legend.c_str());
  if (o.quality_md.empty()) return;
  const std::string name = std::filesystem::path(o.model).filename().string(),
                    text_name = std::filesystem::path(o.text).filename().string();
  std::string md = "## " + name + " on " + text_name + ", " + be->info().name + "\n\n" + cli::today_utc() +
                   " - " + be->info().description + "\n\n`" + command_line(o, w) + "`\n\n" + scope +
                   ". The reference is the model as given with the KV cache it "
                   "selects by default.\n\n" +
                   tbl + "\nWeights:\n\n" + legend;
  // One section per comparison: a rerun of the same one replaces it, another one gets its own.
  cli::update_doc_section(
      o.quality_md, "eval:" + name + ":" + text_name + ":" + be->info().name + ":" + o.weights + ":" + o.kv,
      md, "# mx8 accuracy\n\nEvery section below is written by `mx8 eval --quality-md`.\n");
  std::fprintf(stderr, "mx8 eval: wrote %s\n", o.quality_md.c_str());
}

mx8::cli::CommandRegistration reg{
    "eval", "What each weight and KV-cache format costs in accuracy (perplexity, KL divergence) and memory",
    [](CLI::App& app) {
      auto o = std::make_shared<EvalOptions>();
      app.add_option("-m,--model", o->model,
                     "GGUF file or Hugging Face folder (default: the bundled stories260K)");
      app.add_option("--text", o->text, "UTF-8 text to score (default: the bundled TinyStories sample)");
      app.add_option("--separator", o->separator,
                     "string between documents; each is scored from its own BOS (empty: one document)")
          ->capture_default_str();
      app.add_option("--weights", o->weights,
                     "comma-separated: as-given, f32, bf16, fp8, mxfp8; fp8 and mxfp8 with an optional scale "
                     "rule (fp8:floor, fp8:fp32, mxfp8:floor; ceil by default)")
          ->capture_default_str();
      app.add_option("--kv", o->kv, "comma-separated KV caches: auto, f32, bf16, fp8")->capture_default_str();
      app.add_option("--device", o->device, "cpu | cuda")->capture_default_str();
      app.add_option("--threads", o->threads, "CPU threads (0: all)")->check(CLI::Range(0, 4096));
      app.add_option("--ctx", o->ctx,
                     "tokens per window (default: 512, or less if the model was made for less)")
          ->check(CLI::Range(0, 1048576));
      app.add_option("--stride", o->stride,
                     "tokens between window starts in long documents (default: ctx / 2)")
          ->check(CLI::Range(0, 1048576));
      app.add_option("--chunk", o->chunk, "tokens per forward step")
          ->check(CLI::Range(1, 1048576))
          ->capture_default_str();
      app.add_option("--max-tokens", o->max_tokens, "positions to score at most (0: the whole text)");
      app.add_option(
          "--quality-md", o->quality_md,
          "also write the table into this markdown file (e.g. docs/QUALITY.md), in the section for "
          "the model, text and device");
      return [o] { run_eval(*o); };
    }};

}  // namespace
