// `mx8 bench serve`: what the HTTP server costs over the engine it drives. For each number of clients
// C, C streaming /v1/completions requests go to an in-process `mx8 serve` (port 0, --parallel C) at
// once, each from its own thread over a socket; then the same C requests (prompts, seeds, lengths) run
// straight through a runtime::Engine, the peer that bounds the server. Reported: generated tokens/s of
// both, their ratio, and per request the time to the first text and the streaming rate.
//
// The default model is the bundled stories260K, whose forward pass takes microseconds: the engine's
// rate is then high enough that the server's own work (HTTP, JSON, SSE, one thread per request) is
// what the ratio measures. With a real model on a GPU the forward pass dominates and the ratio tends
// to 1.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "cli/command.h"
#include "cli/gen_common.h"
#include "cli/perf_report.h"
#include "cli/random_cuda_weights.h"
#include "mx8/backend/backend_by_name.h"
#include "mx8/runtime/sampler.h"
#include "mx8/runtime/tokenizer.h"
#include "mx8/server/generation_service.h"
#include "mx8/server/http_server.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  mx8::cli::GenOptions gen;
  std::vector<int> clients = {1, 4, 16, 64};
  int tokens = 128;
  int random_layers = 0;  // > 0: a Llama-3-8B-shaped model with random weights on the GPU
  int shared_prefix = 0;  // tokens of text every prompt starts with (a system prompt)
  bool prefix_cache = false;
  int echo_logprobs = -1;  // >= 0: each request also scores its prompt (echo with this many alternatives)
  int logprobs = -1;  // >= 0: each request asks for its tokens' log-probabilities (this many alternatives)
  bool rows_on_host = false;  // EngineOptions::BackendDraw::never (the comparison for what the backend reads)
  mx8::cli::PerfMdTarget perf;
};

const char* kOpenings[] = {"Once upon a time", "One day", "Tom and Lily", "The little dog",
                           "A big bird",       "She saw", "Mom said",     "In the park"};

struct Request {
  std::string prompt;
  uint64_t seed;
};

std::vector<Request> requests(int n, const std::string& prefix) {
  std::vector<Request> r;
  for (int i = 0; i < n; ++i) r.push_back({prefix + kOpenings[i % 8], uint64_t(1000 + i)});
  return r;
}

// Text of at least `tokens` tokens, the same for every request.
std::string shared_text(const mx8::runtime::Tokenizer& tok, int tokens) {
  std::string text;
  for (int i = 0; tokens > 0 && tok.encode(text).size() < size_t(tokens); ++i)
    text += "Once upon a time, in a small house by the sea, there lived a girl named Lily (" +
            std::to_string(i) + "). ";
  return text;
}

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// What the requests run on: a loaded model, or (CUDA) a Llama-3-8B-shaped one with random weights.
struct Target {
  mx8::backend::Backend* be = nullptr;
  mx8::model::LlamaModel* model = nullptr;
  mx8::backend::KvFormat kv = mx8::backend::KvFormat::bf16;
  int context = 0;
  std::string what;  // for the report
};

struct Row {
  int clients = 0;
  int64_t tokens = 0, engine_tokens = 0, prompt_tokens = 0;
  double engine_prompt_tok_s = 0, server_prompt_tok_s = 0;  // prompt tokens scored, with --echo-logprobs
  int64_t preemptions = 0, recomputed = 0;                  // the engine run's, with --kv-positions
  double engine_tok_s = 0, server_tok_s = 0;
  double ttft_median_ms = 0, ttft_max_ms = 0, stream_tok_s_median = 0;
};

// Where the engines (the peer's and the server's) read logit rows: the backend where it can, or (the
// comparison) the host, every row downloaded.
mx8::runtime::EngineOptions::BackendDraw backend_draw(const Options& o) {
  return o.rows_on_host ? mx8::runtime::EngineOptions::BackendDraw::never
                        : mx8::runtime::EngineOptions::BackendDraw::auto_;
}

// The peer: the same requests through an Engine of C sequences, stepped until idle.
double engine_rate(const Target& t, const mx8::runtime::Tokenizer& tok, const std::vector<Request>& reqs,
                   const Options& o, Row* row) {
  using namespace mx8;
  runtime::EngineOptions eo;
  eo.kv_format = t.kv;
  eo.max_context = t.context;
  eo.max_sequences = int(reqs.size());
  eo.kv_positions = o.gen.kv_positions;
  eo.prefix_reuse = o.prefix_cache;
  eo.backend_draw = backend_draw(o);
  runtime::Engine eng(*t.model, *t.be, eo);
  int64_t prompt_tokens = 0;
  const auto t0 = Clock::now();
  for (const Request& r : reqs) {
    runtime::GenerationParams gp;
    gp.sampling = o.gen.sampling;
    gp.sampling.seed = r.seed;
    gp.max_new_tokens = o.tokens;
    gp.logprobs = std::max(o.echo_logprobs, o.logprobs);
    gp.prompt_logprobs = o.echo_logprobs >= 0;
    gp.stop_tokens = tok.stop_ids();  // and EOS and BOS, as the server (generation_service.cpp)
    for (int32_t e : t.model->config().eos) gp.stop_tokens.push_back(e);
    if (tok.bos_id() != runtime::kNoToken) gp.stop_tokens.push_back(tok.bos_id());
    const std::vector<int32_t> ids = tok.encode(r.prompt);
    prompt_tokens += int64_t(ids.size());
    eng.add(ids, gp);
  }
  row->engine_tokens = 0;
  while (!eng.idle())
    for (const runtime::TokenEvent& e : eng.step()) row->engine_tokens += e.token >= 0;
  row->preemptions = eng.stats().preemptions;
  row->recomputed = eng.stats().recomputed_tokens;
  const double wall = seconds(t0, Clock::now());
  row->engine_prompt_tok_s = double(prompt_tokens) / wall;
  return double(row->engine_tokens) / wall;
}

Row measure(const Target& t, const mx8::runtime::Tokenizer& tok, const Options& o, int c,
            const std::string& prefix) {
  using namespace mx8;
  using json = nlohmann::json;
  const std::vector<Request> reqs = requests(c, prefix);
  Row row;
  row.clients = c;
  engine_rate(t, tok, reqs, o, &row);  // untimed: first-use costs (graph capture, caches)
  row.engine_tok_s = engine_rate(t, tok, reqs, o, &row);

  server::ServiceOptions so;
  so.engine.kv_format = t.kv;
  so.engine.max_context = t.context;
  so.engine.max_sequences = c;
  so.engine.kv_positions = o.gen.kv_positions;
  so.engine.prefix_reuse = o.prefix_cache;  // as the peer
  so.engine.backend_draw = backend_draw(o);
  server::GenerationService service(*t.model, *t.be, tok, so);
  server::ServerOptions ho;
  ho.port = 0;
  ho.model_name = "bench";
  ho.sampling = o.gen.sampling;
  server::HttpServer http(service, tok, nullptr, ho);
  const int port = http.bind();
  std::thread listener([&] { http.listen(); });

  std::vector<double> ttft(size_t(c), 0), rate(size_t(c), 0);
  std::vector<int64_t> got(size_t(c), 0), prompt(size_t(c), 0);
  std::vector<std::thread> clients;
  const auto t0 = Clock::now();
  for (int i = 0; i < c; ++i)
    clients.emplace_back([&, i] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_read_timeout(600, 0);
      httplib::Request rq;
      rq.method = "POST";
      rq.path = "/v1/completions";
      rq.set_header("Content-Type", "application/json");
      json body_json{{"prompt", reqs[size_t(i)].prompt},
                     {"max_tokens", o.tokens},
                     {"seed", reqs[size_t(i)].seed},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
      if (o.echo_logprobs >= 0) body_json["echo"] = true, body_json["logprobs"] = o.echo_logprobs;
      if (o.logprobs >= 0) body_json["logprobs"] = o.logprobs;
      rq.body = body_json.dump();
      std::string body;
      Clock::time_point first{};
      rq.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
        if (first == Clock::time_point{}) first = Clock::now();
        body.append(d, n);
        return true;
      };
      const Clock::time_point start = Clock::now();
      auto res = cli.send(rq);
      const Clock::time_point end = Clock::now();
      if (!res || res->status != 200) return;
      // The usage chunk: the last event before [DONE].
      const size_t u = body.rfind("\"usage\"");
      if (u == std::string::npos) return;
      const size_t line = body.rfind("data: ", u);
      const json usage = json::parse(body.substr(line + 6, body.find('\n', u) - line - 6))["usage"];
      got[size_t(i)] = usage["completion_tokens"];
      prompt[size_t(i)] = usage["prompt_tokens"];
      ttft[size_t(i)] = seconds(start, first) * 1e3;
      rate[size_t(i)] = got[size_t(i)] > 1 ? double(got[size_t(i)] - 1) / seconds(first, end) : 0;
    });
  for (auto& th : clients) th.join();
  const double wall = seconds(t0, Clock::now());
  service.stop();
  http.stop();
  listener.join();

  for (int64_t g : got) row.tokens += g;
  for (int64_t p : prompt) row.prompt_tokens += p;
  row.server_prompt_tok_s = double(row.prompt_tokens) / wall;
  const auto failed = std::count(got.begin(), got.end(), 0);
  if (failed)
    throw Error("bench serve: " + std::to_string(failed) + " of " + std::to_string(c) +
                " requests failed or generated nothing");
  row.server_tok_s = double(row.tokens) / wall;
  row.ttft_median_ms = median(ttft);
  row.ttft_max_ms = *std::max_element(ttft.begin(), ttft.end());
  row.stream_tok_s_median = median(rate);
  return row;
}

void run(Options& o) {
  using namespace mx8;
  if (o.tokens < 1) throw Error("--tokens must be at least 1");
  if (o.gen.chunk == 0) o.gen.chunk = cli::kServerChunk;  // as mx8 serve
  for (auto [name, v] : {std::pair{"--echo-logprobs", o.echo_logprobs}, std::pair{"--logprobs", o.logprobs}})
    if (v < -1 || v > runtime::kMaxTopLogprobs)
      throw Error(std::string(name) + " " + std::to_string(v) + " outside 0.." +
                  std::to_string(runtime::kMaxTopLogprobs));
  if (o.echo_logprobs >= 0 && o.logprobs >= 0)
    throw Error(
        "--echo-logprobs and --logprobs: give one (an echoed request's tokens have --echo-logprobs's)");
  int max_clients = 0;
  for (int c : o.clients) {
    if (c < 1 || c > 1024) throw Error("--clients: each count must be from 1 to 1024");
    max_clients = std::max(max_clients, c);
  }
  if (o.gen.model.empty()) o.gen.model = cli::default_model_path();
  auto tok = runtime::load_tokenizer(o.gen.model);
  const std::string prefix = shared_text(*tok, o.shared_prefix);
  const int prefix_tokens = int(tok->encode(prefix).size());
  const int context = o.gen.ctx > 0 ? o.gen.ctx : o.tokens + 32 + prefix_tokens;
  Target t;
  cli::Loaded l;
#if defined(MX8_HAVE_CUDA)
  std::unique_ptr<backend::Backend> rbe;
  std::unique_ptr<cli::WeightFactory> wf, ef;
  std::unique_ptr<model::LlamaModel> rmodel;
#endif
  if (o.random_layers > 0) {
#if defined(MX8_HAVE_CUDA)
    if (o.gen.device != "cuda") throw Error("--random-layers needs --device cuda");
    if (tok->vocab_size() > size_t(cli::kVocab))
      throw Error("--random-layers: the tokenizer of " + o.gen.model + " has " +
                  std::to_string(tok->vocab_size()) + " tokens, more than the model's " +
                  std::to_string(cli::kVocab));
    const backend::WeightFormat f =
        o.gen.weights == "mxfp8"  ? backend::WeightFormat::mxfp8
        : o.gen.weights == "bf16" ? backend::WeightFormat::bf16
        : o.gen.weights == "fp8" || o.gen.weights == "as-given"
            ? backend::WeightFormat::fp8_block
            : throw Error("--random-layers: --weights must be fp8, mxfp8 or bf16");
    rbe = backend::make_backend("cuda", 0);
    wf = std::make_unique<cli::WeightFactory>(*rbe, f);
    ef = std::make_unique<cli::WeightFactory>(*rbe, backend::WeightFormat::bf16);  // the table stays bf16
    rmodel = model::make_llama_with_weights(cli::llama3_8b(o.random_layers), *rbe,
                                            std::max(o.gen.chunk, max_clients),
                                            [&](const std::string& name, int64_t n, int64_t k) {
                                              return name == "token_embd" ? ef->make(n, k) : wf->make(n, k);
                                            });
    cli::cuda_ok(cudaDeviceSynchronize(), "weight set-up");
    rmodel->set_round_attention_operands(cli::parse_attention(o.gen.attention));
    t = {rbe.get(), rmodel.get(), o.gen.kv == "fp8" ? backend::KvFormat::fp8 : backend::KvFormat::bf16,
         context,
         "Llama-3-8B shape with " + std::to_string(o.random_layers) + " layers, random " +
             (f == backend::WeightFormat::fp8_block ? std::string("fp8") : backend::weight_format_name(f)) +
             " weights (" + tok->kind() + " tokenizer of " + o.gen.model.substr(o.gen.model.rfind('/') + 1) +
             ")"};
#else
    throw Error("--random-layers needs a CUDA build (cmake --preset cuda)");
#endif
  } else {
    l = cli::load_for_generation(o.gen, context, max_clients);
    t = {l.backend.get(), l.model.get(), l.kv_format, l.context,
         o.gen.model.substr(o.gen.model.rfind('/') + 1) + ", weights " + o.gen.weights};
  }

  std::vector<Row> rows;
  for (int c : o.clients) {
    rows.push_back(measure(t, *tok, o, c, prefix));
    const Row& r = rows.back();
    std::printf(
        "%4d clients: engine %9.0f tok/s, server %9.0f tok/s (%.2fx), first text %.1f ms median / %.1f "
        "max, %.0f tok/s per stream, %lld preemptions\n",
        r.clients, r.engine_tok_s, r.server_tok_s, r.server_tok_s / r.engine_tok_s, r.ttft_median_ms,
        r.ttft_max_ms, r.stream_tok_s_median, (long long)r.preemptions);
    if (o.echo_logprobs >= 0)
      std::printf("%4d clients: prompt tokens scored: engine %9.0f tok/s, server %9.0f tok/s\n", r.clients,
                  r.engine_prompt_tok_s, r.server_prompt_tok_s);
  }

  std::string clients;
  for (int c : o.clients) clients += (clients.empty() ? "" : ",") + std::to_string(c);
  std::string command = "mx8 bench serve --device " + o.gen.device + " --clients " + clients + " --tokens " +
                        std::to_string(o.tokens);
  if (o.random_layers > 0)
    command += " --random-layers " + std::to_string(o.random_layers) + " --weights " + o.gen.weights +
               " --kv " + o.gen.kv + " -m " + o.gen.model.substr(o.gen.model.rfind('/') + 1);
  const runtime::SamplingParams& sp = o.gen.sampling;
  const bool greedy = sp.temperature <= 0.0f;
  if (greedy) command += " --temperature 0";
  const bool penalized = runtime::Sampler(sp).penalizes();
  auto number = [](float v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  if (sp.repetition_penalty != 1.0f) command += " --repeat-penalty " + number(sp.repetition_penalty);
  if (sp.frequency_penalty != 0.0f) command += " --frequency-penalty " + number(sp.frequency_penalty);
  if (sp.presence_penalty != 0.0f) command += " --presence-penalty " + number(sp.presence_penalty);
  if (penalized && sp.penalty_last_n != runtime::SamplingParams{}.penalty_last_n)
    command += " --penalty-last-n " + std::to_string(sp.penalty_last_n);
  const bool pool = o.gen.kv_positions > 0;
  if (pool) command += " --kv-positions " + std::to_string(o.gen.kv_positions);
  if (o.shared_prefix > 0) command += " --shared-prefix " + std::to_string(o.shared_prefix);
  if (o.prefix_cache) command += " --prefix-cache";
  const bool echo = o.echo_logprobs >= 0;
  if (echo) command += " --echo-logprobs " + std::to_string(o.echo_logprobs);
  if (o.logprobs >= 0) command += " --logprobs " + std::to_string(o.logprobs);
  if (o.rows_on_host) command += " --rows-on-host";
  const std::string section = "serve-" + o.gen.device + (o.random_layers > 0 ? "-llama3-8b" : "") +
                              (greedy ? "-greedy" : "") + (penalized ? "-penalized" : "") +
                              (pool ? "-pool" : "") + (o.shared_prefix > 0 ? "-prefix" : "") +
                              (o.prefix_cache ? "-cached" : "") + (echo ? "-echo" : "") +
                              (o.logprobs >= 0 ? "-logprobs" : "") + (o.rows_on_host ? "-host-rows" : "");

  // The heading names the variant too, so that the sections of one model and device differ.
  std::string variant;
  const std::pair<bool, const char*> variants[] = {{greedy, "greedy"},
                                                   {penalized, "penalized"},
                                                   {pool, "one KV pool"},
                                                   {o.shared_prefix > 0, "shared prefix"},
                                                   {o.prefix_cache, "prefix cache"},
                                                   {echo, "prompt scored"},
                                                   {o.logprobs >= 0, "logprobs"},
                                                   {o.rows_on_host, "rows on the host"}};
  for (const auto& [on, word] : variants)
    if (on) variant += (variant.empty() ? ": " : ", ") + std::string(word);

  std::ostringstream md;
  md << "## Server (`mx8 bench serve`), " << (o.random_layers > 0 ? "Llama-3-8B shape" : "stories260K")
     << ", " << o.gen.device << variant << "\n\nCommand: `" << command
     << "`. Machine: " << cli::machine_description() << "; backend " << t.be->info().description
     << " (load average " << cli::load_average() << "). Date: " << cli::today_utc() << ". Model: " << t.what
     << ", device " << o.gen.device << ", KV " << backend::kv_format_name(t.kv) << ", " << o.tokens
     << " tokens per request, " << t.context << " positions per request, ";
  if (o.shared_prefix > 0) md << "every prompt starting with the same " << prefix_tokens << " tokens, ";
  md << "prefix caching " << (o.prefix_cache ? "on" : "off (every prompt prefilled)") << ", ";
  if (pool)
    md << "one KV pool of " << o.gen.kv_positions << " positions for all (the newest requests are preempted "
       << "and prefill again when it is full; docs/RUNTIME.md), ";
  if (greedy)
    md << "greedy (the arg max taken on the backend, only the token's index downloaded)";
  else
    md << "sampled (temperature " << o.gen.sampling.temperature << ", top-k " << o.gen.sampling.top_k
       << ", top-p " << o.gen.sampling.top_p << ", min-p " << o.gen.sampling.min_p << ", a seed per request)";
  if (penalized)
    md << ", penalized (repetition " << sp.repetition_penalty << ", frequency " << sp.frequency_penalty
       << ", presence " << sp.presence_penalty << " over "
       << (sp.penalty_last_n < 0 ? std::string("all") : "the last " + std::to_string(sp.penalty_last_n))
       << " tokens; on the backend where it selects: docs/RUNTIME.md)";
  if (echo)
    md << ", each request scoring its prompt (`echo` with `logprobs` " << o.echo_logprobs
       << ": a log-probability for every prompt token but the first)";
  if (o.logprobs >= 0)
    md << ", each request asking for its tokens' log-probabilities (`logprobs` " << o.logprobs << ")";
  if (o.rows_on_host) md << ", every logit row downloaded (selection and log-probabilities on the host)";
  md << ".\n\n"
     << "C clients send one streaming /v1/completions request each, at once, to an in-process `mx8 serve` "
        "(--parallel C), each over its own socket. The peer is the same C requests (prompts, seeds, lengths) "
        "straight through a runtime::Engine of C sequences. `server / engine` is the fraction of the "
        "engine's rate the server delivers; `first text` is the time from sending a request to its first "
        "text; `per stream` is one request's rate after its first text.\n\n"
     << "| clients | tokens | engine tok/s | server tok/s | server / engine | first text, median ms | first "
        "text, max ms | per stream tok/s |"
     << (pool ? " engine preemptions | positions prefilled again |" : "")
     << (echo ? " engine prompt tok/s scored | server prompt tok/s scored |" : "")
     << "\n|---:|---:|---:|---:|---:|---:|---:|---:|" << (pool ? "---:|---:|" : "")
     << (echo ? "---:|---:|" : "") << "\n";
  char buf[256];
  for (const Row& r : rows) {
    std::snprintf(buf, sizeof buf, "| %d | %lld | %.0f | %.0f | %.2f | %.1f | %.1f | %.0f |", r.clients,
                  (long long)r.tokens, r.engine_tok_s, r.server_tok_s, r.server_tok_s / r.engine_tok_s,
                  r.ttft_median_ms, r.ttft_max_ms, r.stream_tok_s_median);
    md << buf;
    if (pool) md << " " << r.preemptions << " | " << r.recomputed << " |";
    if (echo) md << " " << int64_t(r.engine_prompt_tok_s) << " | " << int64_t(r.server_prompt_tok_s) << " |";
    md << "\n";
  }
  if (o.perf.write) {
    const std::string path = o.perf.path();
    cli::update_perf_section(path, section, md.str());
    std::fprintf(stderr, "bench serve: updated %s (section %s)\n", path.c_str(), section.c_str());
  }
}

mx8::cli::CommandRegistration reg{
    "bench serve", "HTTP server throughput against the engine it drives", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      mx8::cli::add_gen_options(app, o->gen);
      app.add_option("--clients", o->clients, "numbers of concurrent clients to measure")->delimiter(',');
      app.add_option("--tokens", o->tokens, "tokens generated per request")->capture_default_str();
      app.add_option(
          "--random-layers", o->random_layers,
          "CUDA: a Llama-3-8B-shaped model of this many layers with random weights (--weights fp8, "
          "mxfp8 or bf16); -m then only gives the tokenizer");
      app.add_option("--kv-positions", o->gen.kv_positions,
                     "one KV pool of this many positions for all requests (0: each its whole context)");
      app.add_option("--shared-prefix", o->shared_prefix,
                     "every prompt starts with the same text of about this many tokens (a system prompt)");
      app.add_flag("--prefix-cache", o->prefix_cache,
                   "prefix caching on, as in mx8 serve (off by default: every prompt is prefilled)");
      app.add_option(
          "--echo-logprobs", o->echo_logprobs,
          "each request also scores its prompt: echo with this many alternatives per token (0..20)");
      app.add_option(
          "--logprobs", o->logprobs,
          "each request asks for its generated tokens' log-probabilities with this many alternatives "
          "(0..20)");
      app.add_flag("--rows-on-host", o->rows_on_host,
                   "download every logit row (greedy, top-k and prompt log-probabilities on the host): the "
                   "comparison for what the backend reads where it can");
      o->perf.add_options(app);
      return [o] { run(*o); };
    }};

}  // namespace
