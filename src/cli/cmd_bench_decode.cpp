// `mx8 bench decode`: decode tokens/s (batch 1, or --batch sequences at once) of a Llama-3-8B-shaped
// model with random weights on the CPU backend, through the real runtime (model forward + engine + KV
// cache + greedy sampler).
//
// The default model is the one llama.cpp's anchor used (../shared/research/cpu-anchor.md section 8):
// 4 layers of exact Llama-3-8B shape (dim 4096, ffn 14336, 32 heads, 8 kv heads, head_dim 128) and a
// 512-token vocabulary, so the layers' 874.5 M matmul weights are what a token reads. FP8 (E4M3 +
// UE8M0 per 128x128), MXFP8 and BF16 weights are measured in the same run, next to the recorded
// llama.cpp figures (Q8_0 22 tok/s, BF16 13.8 tok/s, 2 threads) and the machine's read-bandwidth floor
// (weight bytes per token / read GB/s measured here).
//
// --prompt N gives each sequence a prompt of N tokens and also reports prefill: N / the time until
// the first generated token (the prompt's chunks through the CPU GEMM), beside llama.cpp's recorded
// pp128 figures (PERF.md, decode-cpu-prefill).
//
// --model PATH times a model file instead (GGUF or Hugging Face folder, its own shape), so that mx8
// and another runtime can be timed on the same file (docs/PERF.md, decode-cpu-model).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/bench_cpu_util.h"
#include "cli/command.h"
#include "cli/perf_report.h"
#include "mx8/backend/backend.h"
#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/error.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace {

struct Options {
  std::string weights = "fp8,mxfp8,bf16";
  int threads = 2;
  int layers = 4;
  int vocab = 512;
  int tokens = 32;
  int warmup = 4;
  int batch = 1;   // sequences decoded together (> 1: PERF.md section decode-cpu-batch)
  int prompt = 1;  // prompt tokens per sequence (> 1: prefill is timed too, section decode-cpu-prefill)
  std::string kv = "bf16";
  std::string model;  // a model file to time instead of the random Llama-3-8B-shaped one
  mx8::cli::PerfMdTarget perf;
};

// llama.cpp on a machine of the same kind (cpu-anchor.md section 8, tg64, 2 threads, two runs).
struct Anchor {
  const char* weights;
  double tok_s_lo, tok_s_hi;
};
const Anchor kLlamaCpp[] = {{"Q8_0", 21.47, 23.25}, {"BF16", 13.78, 13.85}, {"F16", 13.21, 14.74}};
// Its prompt processing on the same model (pp128, two runs).
const Anchor kLlamaCppPrompt[] = {{"Q8_0", 62.4, 77.7}, {"BF16", 75.2, 76.4}, {"F16", 101.8, 105.6}};

struct Row {
  std::string weights;
  double tok_s = 0, ms = 0;
  size_t bytes_per_token = 0;
  double gbps = 0, floor_fraction = 0;
  double prefill_s = 0;  // until the first generated token (--prompt > 1)
  std::string formats;
  mx8::model::LlamaConfig shape;
};

Row measure(const Options& o, mx8::model::WeightMode mode, double read_gbps) {
  using namespace mx8;
  model::LlamaConfig c;
  c.arch = "llama";
  c.vocab = o.vocab;
  c.dim = 4096;
  c.n_layers = o.layers;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.ffn = 14336;
  c.norm_eps = 1e-5f;
  c.rope_theta = 500000;
  c.max_position = 8192;
  auto be = backend::make_cpu_backend(o.threads);
  // Prompts are read in chunks of up to 256 tokens a step, as `mx8 run` reads them (--chunk).
  const int per_step = o.prompt > 1 ? std::max(o.batch, 256) : o.batch;
  std::unique_ptr<model::LlamaModel> m;
  if (o.model.empty()) {
    std::fprintf(stderr, "bench decode: building %s model (random weights)...\n",
                 model::weight_mode_name(mode));
    m = model::make_random_llama(c, *be, mode, per_step, 1234);
  } else {
    std::fprintf(stderr, "bench decode: loading %s with %s weights...\n", o.model.c_str(),
                 model::weight_mode_name(mode));
    model::LoadOptions lo;
    lo.weights = mode;
    lo.max_tokens_per_step = per_step;
    m = model::load_llama(o.model, *be, lo);
  }
  runtime::EngineOptions eo;
  eo.kv_format = o.kv == "fp8"   ? backend::KvFormat::fp8
                 : o.kv == "f32" ? backend::KvFormat::f32
                                 : backend::KvFormat::bf16;
  eo.max_context = o.prompt + o.warmup + o.tokens + 2;
  eo.max_sequences = o.batch;
  runtime::Engine eng(*m, *be, eo);
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = o.warmup + o.tokens;
  for (int q = 0; q < o.batch; ++q) {
    std::vector<int32_t> prompt(size_t(o.prompt));
    for (int j = 0; j < o.prompt; ++j) prompt[size_t(j)] = 1 + (q + 7 * j) % (o.vocab - 1);
    eng.add(prompt, gp);
  }
  // The prompts take the steps until the first generated token (one step for one-token prompts);
  // then `warmup` decode steps untimed; then `tokens` timed decode steps of one token per sequence.
  int decode_steps = -1;  // -1 while prompts are read
  double prefill_s = 0;
  std::vector<double> times;
  while (!eng.idle()) {
    auto t0 = std::chrono::steady_clock::now();
    const bool produced = !eng.step().empty();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (decode_steps < 0) {
      prefill_s += dt;
      if (produced) decode_steps = 0;
    } else if (decode_steps++ >= o.warmup) {
      times.push_back(dt);
    }
  }
  std::sort(times.begin(), times.end());
  Row r;
  r.weights = model::weight_mode_name(mode);
  r.prefill_s = prefill_s;
  r.ms = times.empty() ? 0 : times[times.size() / 2] * 1e3;  // median: the machine is shared and noisy
  r.tok_s = r.ms > 0 ? 1e3 * o.batch / r.ms : 0;
  const model::WeightStats& ws = m->weight_stats();
  r.bytes_per_token = ws.linear_bytes;  // every matmul weight is read once per token
  r.gbps = r.ms > 0 ? double(r.bytes_per_token) / (r.ms * 1e-3) / 1e9 : 0;
  r.floor_fraction = read_gbps > 0 ? (double(r.bytes_per_token) / (read_gbps * 1e9)) / (r.ms * 1e-3) : 0;
  r.formats = ws.formats;
  r.shape = m->config();
  return r;
}

void run(const Options& o) {
  using namespace mx8;
  if (o.tokens <= 0 || o.layers <= 0 || o.vocab <= 1 || o.threads <= 0)
    throw Error("bench decode: --tokens, --layers, --threads must be positive and --vocab > 1");
  std::vector<model::WeightMode> modes;
  std::stringstream ss(o.weights);
  for (std::string w; std::getline(ss, w, ',');) modes.push_back(model::parse_weight_mode(w));
  mx8::cpu::ThreadPool pool(o.threads);
  const double read_gbps = cli::bench::measure_read_gbps(&pool, size_t(512) << 20);
  std::vector<Row> rows;
  for (auto m : modes) rows.push_back(measure(o, m, read_gbps));
  double bf16_tok_s = 0;
  for (auto& r : rows)
    if (r.weights == "bf16") bf16_tok_s = r.tok_s;

  std::ostringstream md;
  char line[512];
  const bool batched = o.batch > 1;
  md << (batched ? "Decode of " + std::to_string(o.batch) + " sequences at once"
                 : std::string("Batch-1 decode"))
     << " through the runtime (`mx8 run`'s path: model forward, paged " << o.kv
     << " KV cache, greedy sampling) of ";
  if (o.model.empty()) {
    md << "a " << o.layers
       << "-layer model with Llama-3-8B layer shapes (dim 4096, ffn 14336, 32/8 heads, head_dim 128), vocab "
       << o.vocab << ", random weights";
  } else {
    const model::LlamaConfig& c = rows.front().shape;
    md << "`" << o.model << "` (" << c.arch << ", " << c.n_layers << " layers, dim " << c.dim << ", ffn "
       << c.ffn << ", " << c.n_heads << "/" << c.n_kv_heads << " heads, vocab " << c.vocab
       << "; `--weights` converts at load)";
  }
  md << ", " << o.threads << " threads; median of " << o.tokens << " steps after " << o.warmup
     << " warm-up steps"
     << (batched ? " (tokens/s counts every sequence's tokens; ms and weight bytes are per step, which reads "
                   "the weights once)"
                 : "")
     << ". Floor: matmul weight bytes per step / read bandwidth measured in the same run (" << std::fixed;
  md.precision(1);
  md << read_gbps << " GB/s).\n\n";
  // llama.cpp's figure is batch 1: its column only beside batch 1.
  const std::string per = batched ? "step" : "token";
  const bool prefill = o.prompt > 1;
  md << "| weights | tokens/s | ms/" << per << " | weight MB/" << per
     << " | weight GB/s | fraction of floor | vs mx8 bf16 |" << (batched ? "" : " vs llama.cpp Q8_0 (22.4) |")
     << (prefill ? " prefill tokens/s | prefill GFLOP/s |" : "") << "\n|---|---:|---:|---:|---:|---:|---:|"
     << (batched ? "" : "---:|") << (prefill ? "---:|---:|" : "") << "\n";
  for (auto& r : rows) {
    std::snprintf(line, sizeof line, "| %s | %.2f | %.1f | %.0f | %.1f | %.2f |", r.weights.c_str(), r.tok_s,
                  r.ms, double(r.bytes_per_token) / 1e6, r.gbps, r.floor_fraction);
    md << line;
    if (bf16_tok_s > 0) {
      std::snprintf(line, sizeof line, " %.2fx |", r.tok_s / bf16_tok_s);
      md << line;
    } else {
      md << " - |";  // bf16 not measured in this run
    }
    if (!batched) {
      std::snprintf(line, sizeof line, " %.2fx |", r.tok_s / 22.36);
      md << line;
    }
    if (prefill) {
      // Matmul FLOPs of the prompt: 2 per weight per token (attention's are left out: small at this length).
      const mx8::model::LlamaConfig& c = r.shape;
      const double qd = double(c.n_heads) * c.head_dim, kvd = double(c.n_kv_heads) * c.head_dim;
      const double weights = double(c.n_layers) * (double(c.dim) * (2 * qd + 2 * kvd) + 3.0 * c.dim * c.ffn) +
                             double(c.vocab) * c.dim;
      const double tokens = double(o.prompt) * o.batch;
      std::snprintf(line, sizeof line, " %.1f | %.0f |", tokens / r.prefill_s,
                    2 * weights * tokens / r.prefill_s / 1e9);
      md << line;
    }
    md << "\n";
  }
  md << "\nllama.cpp on a machine of the same kind (recorded, cpu-anchor.md section 8, tg64, 2 threads): ";
  for (auto& a : kLlamaCpp) {
    std::snprintf(line, sizeof line, "%s %.1f-%.1f tok/s; ", a.weights, a.tok_s_lo, a.tok_s_hi);
    md << line;
  }
  if (prefill) {
    md << "prompt processing, pp128 on the same model: ";
    for (auto& a : kLlamaCppPrompt) {
      std::snprintf(line, sizeof line, "%s %.1f-%.1f tok/s; ", a.weights, a.tok_s_lo, a.tok_s_hi);
      md << line;
    }
  }
  md << "llama.cpp itself is not part of mx8.\n\nMachine: " << cli::machine_description()
     << ". Date: " << cli::today_utc() << ". Command: `mx8 bench decode --weights " << o.weights
     << " --threads " << o.threads
     << (o.model.empty() ? " --layers " + std::to_string(o.layers) + " --vocab " + std::to_string(o.vocab)
                         : " --model " + o.model)
     << (batched ? " --batch " + std::to_string(o.batch) : "")
     << (prefill ? " --prompt " + std::to_string(o.prompt) : "") << " --tokens " << o.tokens << " --kv "
     << o.kv << "`.\n";
  std::printf("%s", md.str().c_str());
  if (o.perf.write) {
    std::string path = o.perf.path();
    const std::string section = !o.model.empty() ? "decode-cpu-model"
                                : batched        ? "decode-cpu-batch"
                                : prefill        ? "decode-cpu-prefill"
                                                 : "decode-cpu";
    cli::update_perf_section(path, section,
                             std::string(prefill ? "### Prefill and decode, CPU" : "### Decode, CPU") +
                                 (batched ? ", batched" : "") +
                                 (prefill ? ", a " + std::to_string(o.prompt) + "-token prompt" : "") +
                                 (o.model.empty() ? "" : ", a model file") + " (`mx8 bench decode`)\n\n" +
                                 md.str());
    std::fprintf(stderr, "bench decode: updated section %s of %s\n", section.c_str(), path.c_str());
  }
}

mx8::cli::CommandRegistration reg{
    "bench decode", "Decode tokens/s of a Llama-3-8B-shaped model on the CPU (fp8 vs bf16 weights; --batch)",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--weights", o->weights, "comma-separated: f32, bf16, fp8, mxfp8")
          ->capture_default_str();
      app.add_option("--threads", o->threads)->capture_default_str();
      app.add_option("--layers", o->layers, "layers of Llama-3-8B shape")->capture_default_str();
      app.add_option("--vocab", o->vocab, "vocabulary (llama.cpp's anchor model used 512)")
          ->capture_default_str();
      app.add_option("--tokens", o->tokens, "timed decode tokens")->capture_default_str();
      app.add_option("--warmup", o->warmup, "untimed decode tokens first")->capture_default_str();
      app.add_option("--batch", o->batch, "sequences decoded together")
          ->capture_default_str()
          ->check(CLI::Range(1, 256));
      app.add_option("--prompt", o->prompt, "prompt tokens per sequence (> 1 also times prefill)")
          ->capture_default_str()
          ->check(CLI::Range(1, 65536));
      app.add_option("--kv", o->kv, "KV cache format: bf16, fp8, f32")->capture_default_str();
      app.add_option("--model", o->model,
                     "time this model file (GGUF or Hugging Face folder) instead of the random one; "
                     "--layers and --vocab are then its own");
      o->perf.add_options(app);
      return [o] { run(*o); };
    }};

}  // namespace
