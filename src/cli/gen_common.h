// Options and set-up shared by the commands that load a model and generate (run, chat, serve, embed,
// eval and their benchmarks): model, weights, KV format, device, threads, sampling.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.h"
#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/chat_template.h"
#include "mx8/runtime/json_constraint.h"
#include "mx8/runtime/sampler.h"
#include "mx8/runtime/tokenizer.h"

namespace mx8::cli {

struct GenOptions {
  std::string model;
  std::string weights = "as-given";
  std::string kv = "auto";
  std::string device = "cpu";
  int threads = 0;
  int ctx = 0;                      // 0: what the request needs
  int chunk = 0;                    // tokens per forward step (prefill chunk); 0: the device's default
  int64_t kv_positions = 0;         // of all sequences together; 0: each its whole context, or what fits
  std::string attention = "exact";  // prompt steps' attention operands: exact | rounded
  runtime::SamplingParams sampling;
  std::vector<std::string> stop;
  bool json_object = false;  // --json: the output is a JSON object
  std::string json_schema;   // --json-schema FILE: the output is a value of this schema
};

// The prefill chunk when --chunk is not given. On CUDA a step of 1024 tokens makes the most prompt
// tokens per second (H200, Llama-3-8B shape, FP8, from position 0: 256 tokens 33.1k tok/s, 512 37.2k,
// 1024 40.7k, 2048 38.0k, 4096 31.9k; docs/RUNTIME.md); the CPU keeps 256. A server keeps 256 on every
// device (kServerChunk): its steps also carry the decode tokens of the users already answered, and many
// prompts arriving together are then answered in turn rather than all after one long step (H200, 64
// clients of `mx8 bench serve`: first text 28 ms median with 256, 48 with 1024).
constexpr int kCpuChunk = 256, kCudaChunk = 1024, kServerChunk = 256;

// The bundled model: next to the source tree this binary was built from, or ./models.
std::string default_model_path();

// The model and how it runs: the options of every command that loads one.
void add_model_options(CLI::App& app, GenOptions& o);

// add_model_options, and how text is generated.
void add_gen_options(CLI::App& app, GenOptions& o);

// --json / --json-schema: the schema generated text is held to, and the tokenizer's vocabulary for
// the masks (made once); both null without either option.
struct JsonOutput {
  std::shared_ptr<const runtime::JsonSchema> schema;
  std::shared_ptr<const runtime::JsonVocabulary> vocab;
  // The rule for one reply (null without a schema); `may_think`: a <think> block may come first,
  // `opened`: the prompt opened it.
  std::shared_ptr<const runtime::TokenConstraint> constraint(bool may_think, bool opened) const {
    if (!schema) return nullptr;
    return std::make_shared<runtime::JsonConstraint>(
        vocab, runtime::JsonMatcher(schema, {may_think, opened, {}, "", ""}));
  }
};

// Throws mx8::Error naming the file and what in it cannot be read or held.
JsonOutput json_output_for(const GenOptions& o, const runtime::Tokenizer& tok);

// The chat template for `model`: the Jinja file `template_file` when one is given (with the
// tokenizer's BOS and EOS text as bos_token / eos_token), else the model's own; nullopt if it has none.
std::optional<runtime::ChatTemplate> chat_template_for(const std::string& model,
                                                       const std::string& template_file,
                                                       const runtime::Tokenizer& tok);

// --attention: whether prompt steps round the attention's operands
// (LlamaModel::set_round_attention_operands).
bool parse_attention(const std::string& s);

// --kv's names, checked before a model loads: a misspelt cache format should not cost a large model's
// load first.
void check_kv_name(const std::string& s);

// The cache format; auto is f32 when every matrix of the loaded model is f32, else bf16.
backend::KvFormat parse_kv(const std::string& s, const model::LlamaModel& m);

std::string mib(size_t bytes);

// Backend and model, with the memory plan printed to stderr before loading.
struct Loaded {
  std::unique_ptr<backend::Backend> backend;
  std::unique_ptr<model::LlamaModel> model;
  backend::KvFormat kv_format = backend::KvFormat::bf16;
  int context = 0;           // positions per sequence: --ctx, or what was asked for, within a sliding window
  int64_t kv_positions = 0;  // EngineOptions::kv_positions: --kv-positions, or a pool that fits
};

// The longest context a sequence may have: what the runtime is built and tested for (Llama-3.1's
// 131072 positions, docs/RUNTIME.md).
constexpr int64_t kMaxContext = 131072;

// `sequences`: how many sequences the engine will hold at once (the plan counts their KV cache).
// `positions_needed`: what the request asks for (prompt + tokens to generate) when --ctx is not given;
// capped at kMaxContext, where generation ends as it does at any full context.
Loaded load_for_generation(GenOptions& o, int64_t positions_needed, int sequences = 1);

}  // namespace mx8::cli
