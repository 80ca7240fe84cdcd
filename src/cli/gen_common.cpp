#include "cli/gen_common.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "mx8/backend/backend_by_name.h"
#include "mx8/error.h"
#include "mx8/runtime/engine.h"
#include "mx8/util/json_parse.h"
#include "mx8/util/read_file.h"

namespace mx8::cli {
namespace {

int chunk_or_default(const GenOptions& o) {
  return o.chunk > 0 ? o.chunk : o.device == "cuda" ? kCudaChunk : kCpuChunk;
}

// --seed takes 0 .. 2^64 - 1 written in decimal. CLI11 reads an unsigned option with strtoull, which
// takes "-1" as 2^64 - 1 and saturates 2^64, so two different seeds would quietly be the same one.
CLI::Validator seed_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        uint64_t v = 0;
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || ec != std::errc() || end != s.data() + s.size())
          return "a seed is a whole number from 0 to 18446744073709551615, not " + s;
        return "";
      },
      "UINT64");
}

// --logit-bias ID=BIAS: a token id (0 .. 2^31 - 1) and a finite bias.
std::pair<int32_t, float> parse_logit_bias(const std::string& s) {
  const size_t eq = s.find('=');
  int32_t id = -1;
  float bias = 0;
  if (eq != std::string::npos) {
    const char* end = s.data() + s.size();
    const auto [ie, iec] = std::from_chars(s.data(), s.data() + eq, id);
    const char* b0 = s.data() + eq + 1 + (eq + 1 < s.size() && s[eq + 1] == '+');  // from_chars takes no '+'
    const auto [be, bec] = std::from_chars(b0, end, bias);
    if (iec == std::errc() && ie == s.data() + eq && id >= 0 && bec == std::errc() && be == end && b0 < end &&
        std::isfinite(bias))
      return {id, bias};
  }
  throw CLI::ValidationError("--logit-bias", "expected TOKEN_ID=BIAS (e.g. 13=-100), not '" + s + "'");
}

}  // namespace

std::string default_model_path() {
  std::string p = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";
  if (std::filesystem::exists(p)) return p;
  return "models/stories260K.gguf";
}

void add_model_options(CLI::App& app, GenOptions& o) {
  app.add_option("-m,--model", o.model,
                 "GGUF file or Hugging Face folder (default: the bundled stories260K)");
  app.add_option(
         "--weights", o.weights,
         "as-given | f32 | bf16 | fp8 (E4M3, UE8M0 per 128x128) | mxfp8 (UE8M0 per 1x32); fp8 and mxfp8 "
         "take a scale rule after a colon: ceil (default), floor, fp32 (fp8 only: float scales)")
      ->capture_default_str();
  app.add_option("--kv", o.kv, "KV cache: auto (f32 for f32 weights, else bf16) | f32 | bf16 | fp8")
      ->capture_default_str();
  app.add_option("--device", o.device, "cpu | cuda")->capture_default_str();
  app.add_option("--attention", o.attention,
                 "prompt steps' attention on cuda: exact (q and the probabilities in f32 precision, as on "
                 "the cpu) | rounded (both rounded to bf16, f16 with an fp8 cache, as FlashAttention "
                 "does: 1.5x faster at 64k positions)")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  app.add_option("--ctx", o.ctx,
                 "context positions per sequence (0: prompt + tokens to generate), up to 131072");
  app.add_option("--chunk", o.chunk,
                 "tokens per forward step (prefill chunk size; 0: 1024 for run and chat on cuda, else 256)")
      ->capture_default_str();
}

void add_gen_options(CLI::App& app, GenOptions& o) {
  add_model_options(app, o);
  app.add_option("--temperature,--temp", o.sampling.temperature, "0 = greedy")->capture_default_str();
  app.add_option("--top-k", o.sampling.top_k, "0 = off")->capture_default_str();
  app.add_option("--top-p", o.sampling.top_p, "1 = off")->capture_default_str();
  app.add_option("--min-p", o.sampling.min_p, "0 = off")->capture_default_str();
  app.add_option("--repeat-penalty", o.sampling.repetition_penalty, "1 = off")->capture_default_str();
  app.add_option("--frequency-penalty", o.sampling.frequency_penalty)->capture_default_str();
  app.add_option("--presence-penalty", o.sampling.presence_penalty)->capture_default_str();
  app.add_option("--penalty-last-n", o.sampling.penalty_last_n, "tokens the penalties look back (-1: all)")
      ->capture_default_str();
  app.add_option("--seed", o.sampling.seed, "random seed (same seed, same output)")
      ->capture_default_str()
      ->check(seed_validator());
  app.add_option("--stop", o.stop, "stop sequence (repeatable); generation ends before it");
  app.add_option_function<std::vector<std::string>>(
      "--logit-bias",
      [&o](const std::vector<std::string>& v) {
        o.sampling.logit_bias.clear();
        for (const std::string& s : v) o.sampling.logit_bias.push_back(parse_logit_bias(s));
      },
      "ID=BIAS (repeatable): add BIAS to token ID's logit before sampling (-100 bans it, +100 forces it)");
  auto* object =
      app.add_flag("--json", o.json_object, "hold the output to a JSON object (constrained decoding)");
  app.add_option("--json-schema", o.json_schema,
                 "hold the output to a value of the JSON schema in this file (the subset of docs/SERVER.md, "
                 "Structured output)")
      ->excludes(object);
}

JsonOutput json_output_for(const GenOptions& o, const runtime::Tokenizer& tok) {
  JsonOutput out;
  if (o.json_object) {
    out.schema = std::make_shared<const runtime::JsonSchema>(runtime::JsonSchema::any_object());
  } else if (!o.json_schema.empty()) {
    try {
      const auto schema = parse_json_bounded<nlohmann::json>(read_file(o.json_schema), o.json_schema);
      out.schema = std::make_shared<const runtime::JsonSchema>(runtime::JsonSchema::compile(schema));
    } catch (const std::exception& e) {
      throw Error("--json-schema " + o.json_schema + ": " + e.what());
    }
  }
  if (out.schema) out.vocab = std::make_shared<const runtime::JsonVocabulary>(tok);
  return out;
}

std::optional<runtime::ChatTemplate> chat_template_for(const std::string& model,
                                                       const std::string& template_file,
                                                       const runtime::Tokenizer& tok) {
  if (template_file.empty()) return runtime::ChatTemplate::from_model(model);
  std::string source;
  try {
    source = read_file(template_file);
  } catch (const Error& e) {
    throw Error(std::string("--template ") + e.what());
  }
  auto text_of = [&](runtime::TokenId id) {
    return id == runtime::kNoToken ? std::string() : tok.token_text(id);
  };
  return runtime::ChatTemplate(source, text_of(tok.bos_id()), text_of(tok.eos_id()));
}

bool parse_attention(const std::string& s) {
  if (s != "exact" && s != "rounded") throw Error("--attention " + s + ": expected exact or rounded");
  return s == "rounded";
}

void check_kv_name(const std::string& s) {
  if (s != "auto" && s != "f32" && s != "bf16" && s != "fp8")
    throw Error("--kv " + s + ": expected auto, f32, bf16 or fp8");
}

backend::KvFormat parse_kv(const std::string& s, const model::LlamaModel& m) {
  check_kv_name(s);
  if (s == "f32") return backend::KvFormat::f32;
  if (s == "bf16") return backend::KvFormat::bf16;
  if (s == "fp8") return backend::KvFormat::fp8;
  return m.weight_stats().linear_all_f32 ? backend::KvFormat::f32 : backend::KvFormat::bf16;
}

std::string mib(size_t bytes) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f MiB", double(bytes) / 1048576.0);
  return buf;
}

Loaded load_for_generation(GenOptions& o, int64_t positions_needed, int sequences) {
  if (o.model.empty()) o.model = default_model_path();
  if (o.chunk < 0) throw Error("--chunk must be positive (or 0: the device's default)");
  o.chunk = chunk_or_default(o);
  runtime::validate(o.sampling);  // before the model loads, not at the first token
  parse_attention(o.attention);
  check_kv_name(o.kv);
  if (o.ctx < 0 || o.ctx > kMaxContext)
    throw Error("--ctx " + std::to_string(o.ctx) + " is out of range (0..." + std::to_string(kMaxContext) +
                ")");
  Loaded l;
  const model::WeightSpec spec = model::parse_weight_spec(o.weights);
  const model::WeightMode mode = spec.mode;
  model::LlamaConfig cfg = model::read_llama_config(o.model);
  runtime::EngineOptions eo;
  // Dynamic RoPE scaling: mx8 runs it only where it leaves the frequencies as they are.
  const int64_t rope_limit = model::rope_position_limit(cfg);
  if (rope_limit > 0 && o.ctx > rope_limit)
    throw Error("--ctx " + std::to_string(o.ctx) + " is past the " + std::to_string(rope_limit) +
                " positions to which " + o.model +
                "'s dynamic RoPE scaling keeps its frequencies (mx8 does not recompute them)");
  eo.max_context =
      o.ctx > 0 ? o.ctx
                : int(std::clamp<int64_t>(positions_needed, 1,
                                          rope_limit > 0 ? std::min(rope_limit, kMaxContext) : kMaxContext));
  eo.max_sequences = sequences;
  l.context = eo.max_context;
  // A step never holds more tokens than all sequences' contexts: a larger --chunk would only size the
  // activations' working memory for tokens that cannot exist.
  o.chunk = int(std::min<int64_t>(o.chunk, int64_t(eo.max_context) * sequences));
  // --kv auto is decided after loading (f32 when every matrix is f32); plan with the larger format it
  // may pick, so that "fits" is never optimistic.
  const bool maybe_f32 =
      o.kv == "f32" ||
      (o.kv == "auto" && (mode == model::WeightMode::f32 || mode == model::WeightMode::as_given));
  eo.kv_format = o.kv == "fp8" ? backend::KvFormat::fp8
                 : maybe_f32   ? backend::KvFormat::f32
                               : backend::KvFormat::bf16;
  // The backend first (cheap): the plan compares against what *it* can hold (host RAM or GPU memory).
  l.backend = backend::make_backend(o.device, o.threads);
  if (o.kv_positions < 0) throw Error("--kv-positions must be 0 (automatic) or positive");
  eo.kv_positions = o.kv_positions;
  const size_t weight_bytes = runtime::estimate_weight_bytes(cfg, mode, 4);
  runtime::MemoryPlan plan =
      runtime::plan_memory(cfg, weight_bytes, eo, o.chunk, l.backend->available_memory());
  // Several sequences whose whole contexts do not fit share a pool that does (they wait when it is full).
  if (o.kv_positions == 0 && sequences > 1)
    if (int64_t fit = runtime::kv_positions_that_fit(plan, cfg, eo, o.chunk); fit > 0) {
      eo.kv_positions = fit;
      plan = runtime::plan_memory(cfg, weight_bytes, eo, o.chunk, l.backend->available_memory());
    }
  l.kv_positions = eo.kv_positions;
  std::fprintf(stderr, "mx8: %s (%s, %lld layers, dim %lld, heads %lld/%lld, vocab %lld)\n", o.model.c_str(),
               cfg.arch.c_str(), (long long)cfg.n_layers, (long long)cfg.dim, (long long)cfg.n_heads,
               (long long)cfg.n_kv_heads, (long long)cfg.vocab);
  std::fprintf(stderr, "mx8: %s (estimate before loading)\n", plan.text.c_str());
  if (!plan.fits) {
    const bool one_byte = mode == model::WeightMode::fp8 || mode == model::WeightMode::mxfp8;
    // Weights that alone do not fit (a 4-bit GGUF is f32 as given: 8x its file) need another format,
    // not a shorter context.
    if (!one_byte && plan.weight_bytes + plan.activation_bytes > plan.available_bytes)
      std::fprintf(stderr,
                   "mx8: warning: the weights alone exceed available memory %s; --weights fp8 keeps one "
                   "byte a weight (%s)\n",
                   mode == model::WeightMode::as_given
                       ? "as given (f32 where the file's type is not bf16 or FP8, as for GGUF's block types)"
                   : mode == model::WeightMode::bf16 ? "as bf16"
                                                     : "as f32",
                   mib(runtime::estimate_weight_bytes(cfg, model::WeightMode::fp8, 4)).c_str());
    else
      std::fprintf(stderr, "mx8: warning: the plan exceeds available memory; lower --ctx%s\n",
                   sequences > 1 ? " or --kv-positions" : "");
  }
  if (const int64_t made_for = model::supported_context(cfg); made_for > 0 && eo.max_context > made_for)
    std::fprintf(stderr,
                 "mx8: warning: a context of %d positions is past the %lld the model was made for (RoPE "
                 "scaling included); text past that point may degrade\n",
                 eo.max_context, (long long)made_for);
  model::LoadOptions lo;
  lo.weights = mode;
  lo.scale_rule = spec.rule;
  lo.max_tokens_per_step = o.chunk;
  l.model = model::load_llama(o.model, *l.backend, lo);
  l.model->set_round_attention_operands(parse_attention(o.attention));
  l.kv_format = parse_kv(o.kv, *l.model);
  return l;
}

}  // namespace mx8::cli
