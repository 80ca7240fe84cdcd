// `mx8 bench decode-cuda`: decode (batch 1, or --batch sequences) of a Llama-3-8B-shaped model with random
// weights on the CUDA backend, FP8 (E4M3, 128x128 UE8M0 blocks; MXFP8 when asked) next to BF16 weights in the
// same run, with step recording (CUDA graphs) on and off, against the bandwidth roofline (weight bytes per
// token / measured device copy bandwidth); then one prompt step per format (--prefill tokens after each
// --prefill-at cached length), the prefill side of `mx8 run`; and, with --decode-at, batch-1 decode after
// that many cached positions with bf16 and fp8 KV caches (long contexts: the K/V bytes join the roofline).
//
// Each step is the model's own forward pass (src/model/llama.cpp, make_llama_with_weights): the
// per-step uploads of token, position, slot, length and block table, the layers, the head, the
// logits download - what `mx8 run` does per token. Weights are random bytes made on the GPU side
// from a host template per shape, copied into a separate allocation for every layer (so nothing is
// served from L2), which takes seconds where drawing and quantizing 8e9 values on the host would take
// minutes.
#if defined(MX8_HAVE_CUDA)

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/kernel_clock.h"
#include "cli/command.h"
#include "cli/perf_report.h"
#include "cli/random_cuda_weights.h"
#include "mx8/backend/backend.h"
#include "mx8/backend/host_buffer.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/model/llama.h"

namespace {

using namespace mx8::backend;

struct Options {
  int layers = 32;
  std::string batch = "1";   // sequences decoded together (a step has one row per sequence), comma-separated
  std::vector<int> batches;  // from `batch`
  int tokens = 128;
  int warmup = 8;
  int context = 0;    // position of the first decode step (attention reads that many cached positions)
  int prefill = 512;  // tokens of the timed prompt step (0: none)
  std::string prefill_at = "0,4096,16384";  // cached positions before the prompt step, one step each
  std::vector<int> prefill_starts;          // from prefill_at
  std::string decode_at;                    // cached positions of the long-context decode rows (batch 1)
  std::vector<int> decode_starts;           // from decode_at
  std::string weights = "fp8,bf16";
  std::string kv = "bf16";
  std::string graphs = "on,off";
  std::vector<bool> graph_modes;   // from `graphs`
  bool greedy = false;             // decode steps take the arg max on the GPU (only indices downloaded)
  bool rounded_attention = false;  // prompt steps also timed with AttentionArgs::round_operands
  mx8::cli::PerfMdTarget perf;
  int timeline = 0;  // decode steps traced kernel by kernel after each timed run (print_timeline)
};

// Llama-3-8B.
using mx8::cli::cuda_ok;
using mx8::cli::kDim;
using mx8::cli::kFfn;
using mx8::cli::kHeadDim;
using mx8::cli::kHeads;
using mx8::cli::kKvHeads;
using mx8::cli::kVocab;
using mx8::cli::llama3_8b;
using mx8::cli::WeightFactory;

using mx8::cli::fmt;

// Device copy bandwidth: cudaMemcpy device-to-device of 1 GiB, bytes read + bytes written per second.
double copy_bandwidth_gbps(Backend& be) {
  const size_t bytes = size_t(1) << 30;
  void* a = be.alloc(bytes);
  void* b = be.alloc(bytes);
  cuda_ok(cudaMemset(a, 1, bytes), "memset");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < 3; ++i) cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
  const int reps = 10;
  cudaEventRecord(e0);
  for (int i = 0; i < reps; ++i)
    cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e1);
  cuda_ok(cudaEventSynchronize(e1), "copy bandwidth");
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  be.free(a);
  be.free(b);
  return 2.0 * double(bytes) * reps / (ms * 1e-3) / 1e9;
}

struct Result {
  std::string weights;
  bool graphs = false;
  int batch = 1;
  double tok_s = 0, ms_per_token = 0;  // tokens of all sequences per second; ms per step
  size_t bytes_per_token = 0;          // weight bytes a step reads (once, whatever the batch)
  double weight_gbps = 0;              // bytes per step / time per step
  double gemv_gbps = 0;                // the largest GEMV alone, cold weights
  std::vector<double> prefill_ms;      // one step of Options::prefill prompt tokens per prefill_starts entry
  std::vector<double> prefill_rounded_ms;  // the same with rounded attention operands (--attention-rounded)
  std::string prefill_path;                // what the backend does with the activations of such a step
  struct LongDecode {
    KvFormat kv;
    int cached;
    double tok_s, ms_per_token, kv_bytes;  // kv_bytes: K/V a step reads, on average over the timed steps
  };
  std::vector<LongDecode> long_decode;  // one per (KV format, decode_starts entry), graphs on
  std::string timeline_md;              // --timeline: the traced steps' table (print_timeline)
};

// `steps` more decode steps, each traced kernel by kernel (CUPTI), and where their time went: per kernel,
// its time on the GPU and its exposed time (what it adds to the step past the kernels before it;
// mx8/util/span_timeline.h), so that overlap under dependent launches is counted once.
void print_timeline(int steps, Result& res, const std::function<void(int)>& step) {
  std::string why;
  mx8::cuda::KernelClock* clock = mx8::cuda::KernelClock::get(&why);
  std::vector<std::vector<mx8::Span>> runs;
  for (int i = 0; clock && i < steps && why.empty(); ++i)
    runs.push_back(clock->spans([&] { step(i); }, &why));
  if (!why.empty() || runs.empty()) {
    std::printf("timeline: n/a (%s)\n", why.c_str());
    return;
  }
  const std::vector<mx8::SpanSummary> rows = mx8::summarize_spans(runs);
  double span_us = 0, kernels = 0;  // exposed times and gaps add up to the span (span_timeline.h)
  for (const mx8::SpanSummary& r : rows) {
    span_us += r.exposed_us + r.gap_us;
    kernels += r.count;
  }
  std::printf(
      "timeline, %s weights, batch %d, graphs %s: %d steps traced, %.0f kernels and %.1f us from the first "
      "kernel's start to the last one's end per step (untraced: %.1f us per step)\n",
      res.weights.c_str(), res.batch, res.graphs ? "on" : "off", steps, kernels, span_us,
      res.ms_per_token * 1e3);
  std::printf("  %-90s %8s %9s %10s %7s\n", "kernel", "per step", "busy us", "exposed us", "gap us");
  res.timeline_md =
      "\n" + res.weights + " weights, batch " + std::to_string(res.batch) + ", graphs " +
      (res.graphs ? "on" : "off") + ": " + std::to_string(steps) + " steps traced, " + fmt("%.0f", kernels) +
      " kernels and " + fmt("%.1f", span_us) +
      " us from the first kernel's start to the last one's end per step (" +
      fmt("%.1f", res.ms_per_token * 1e3) + " us per step untraced).\n\n" +
      "| kernel (blocks x threads, name) | per step | busy us | exposed us | exposed us per launch | "
      "gap us |\n|---|---:|---:|---:|---:|---:|\n";
  for (const mx8::SpanSummary& r : rows) {
    std::printf("  %-90.90s %8.1f %9.1f %10.1f %7.1f\n", r.name.c_str(), r.count, r.busy_us, r.exposed_us,
                r.gap_us);
    res.timeline_md += "| `" + r.name + "` | " + fmt("%.0f", r.count) + " | " + fmt("%.1f", r.busy_us) +
                       " | " + fmt("%.1f", r.exposed_us) + " | " + fmt("%.2f", r.exposed_us / r.count) +
                       " | " + fmt("%.1f", r.gap_us) + " |\n";
  }
}

// Decode steps of res.batch sequences (all at the same position) through the model, graphs on or off;
// the KV cache is fresh.
void time_decode(Backend& be, mx8::model::LlamaModel& model, const Options& o, KvFormat kvf, Result& res) {
  mx8::backend::cuda_impl::set_graphs_enabled(res.graphs);
  const int total = o.context + o.warmup + o.tokens, seqs = res.batch;
  const int pages_per_seq = (total + o.timeline + 15) / 16 + 1;
  KvCacheDesc kd{kvf, o.layers, int(kKvHeads), int(kHeadDim), 16, seqs * pages_per_seq};
  auto kv = be.create_kv_cache(kd);
  mx8::model::StepBatch b;
  b.max_pages_per_seq = pages_per_seq;
  for (int i = 0; i < kd.n_pages; ++i) b.block_tables.push_back(i);  // sequence s: pages s * pages_per_seq..
  for (int q = 0; q < seqs; ++q) {
    b.seq.push_back(q);
    b.logit_rows.push_back(q);
  }
  if (o.greedy) b.argmax_rows = seqs;  // as the engine does for greedy sequences without penalties
  HostBuffer<float> logits(be);        // what the engine downloads into (page-locked)
  logits.reserve(static_cast<size_t>(kVocab) * seqs);
  HostBuffer<int32_t> ids(be);
  ids.reserve(size_t(seqs));
  auto step = [&](int pos) {
    b.tokens.clear();
    b.pos.assign(size_t(seqs), pos);
    b.slot.clear();
    b.kv_len.assign(size_t(seqs), pos + 1);
    for (int q = 0; q < seqs; ++q) {
      b.tokens.push_back((pos * 7919 + q * 104729) % int32_t(kVocab));
      b.slot.push_back(q * pages_per_seq * 16 + pos);
    }
    model.forward(b, *kv, mx8::model::StepOutput{logits.data(), nullptr, nullptr, ids.data()});
  };
  // Positions before `context` are never written: attention reads them as zeros, at full cost.
  for (int p = o.context; p < o.context + o.warmup; ++p) step(p);
  auto t0 = std::chrono::steady_clock::now();
  for (int p = o.context + o.warmup; p < total; ++p) step(p);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.ms_per_token = s * 1e3 / o.tokens;
  res.tok_s = double(o.tokens) * seqs / s;
  res.weight_gbps = double(res.bytes_per_token) / (res.ms_per_token * 1e-3) / 1e9;
  if (!o.greedy && !std::isfinite(logits.data()[0]))
    std::printf("  (note: logits are not finite with these random weights)\n");
  if (o.timeline > 0) print_timeline(o.timeline, res, [&](int i) { step(total + i); });
}

// One step of o.prefill prompt tokens at positions start.. of one sequence (causal attention over the
// cached positions and the step, logits of its last row), as the engine runs a prompt chunk: one
// untimed step, then the median of three. Positions before `start` are never written: attention
// reads them as zeros, at full cost.
double time_prefill(Backend& be, mx8::model::LlamaModel& model, const Options& o, KvFormat kvf, int start) {
  const int T = o.prefill;
  KvCacheDesc kd{kvf, o.layers, int(kKvHeads), int(kHeadDim), 16, (start + T + 15) / 16 + 1};
  auto kv = be.create_kv_cache(kd);
  mx8::model::StepBatch b;
  b.max_pages_per_seq = kd.n_pages;
  for (int i = 0; i < kd.n_pages; ++i) b.block_tables.push_back(i);
  for (int i = 0; i < T; ++i) {
    b.tokens.push_back((i * 7919) % int32_t(kVocab));
    b.pos.push_back(start + i);
    b.seq.push_back(0);
    b.slot.push_back(start + i);
    b.kv_len.push_back(start + i + 1);
  }
  b.logit_rows = {T - 1};
  HostBuffer<float> logits(be);
  logits.reserve(static_cast<size_t>(kVocab));
  std::vector<double> ms;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    model.forward(b, *kv, logits.data());  // returns after the logits are downloaded
    if (rep > 0)
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// One weight format: the model once, then decode with graphs on and off (as asked), then a prompt step.
std::vector<Result> run_format(Backend& be, WeightFormat f, const Options& o, KvFormat kvf) {
  WeightFactory wf(be, f);
  // The embedding table stays bf16 (as the model keeps it); a lookup reads one row.
  WeightFactory ef(be, WeightFormat::bf16);
  std::vector<WeightView> gates;
  auto model = mx8::model::make_llama_with_weights(
      llama3_8b(o.layers), be,
      std::max({1, o.prefill, *std::max_element(o.batches.begin(), o.batches.end())}),
      [&](const std::string& name, int64_t n, int64_t k) {
        if (name == "token_embd") return ef.make(n, k);
        WeightView w = wf.make(n, k);
        if (name.size() > 8 && name.compare(name.size() - 8, 8, "ffn_gate") == 0) gates.push_back(w);
        return w;
      });
  // The weight copies above ran on the legacy stream (device-to-device cudaMemcpy does not block the
  // host); the backend's stream does not wait for it.
  cuda_ok(cudaDeviceSynchronize(), "weight set-up");
  Result base;
  base.weights = f == WeightFormat::bf16 ? "bf16" : weight_format_name(f);
  // What a prompt step's matmuls run (Backend::activation_quantization has the long form).
  const bool tc = mx8::backend::cuda_impl::wgmma_gemm_enabled();
  base.prefill_path = !tc                        ? "f32, SIMT GEMM"
                      : f == WeightFormat::bf16  ? "f32 as three bf16 parts, cuBLASLt bf16 GEMMs"
                      : f == WeightFormat::mxfp8 ? "E4M3 1x32 UE8M0, wgmma MXFP8 GEMM"
                                                 : "E4M3 1x128 UE8M0, wgmma FP8 GEMM";
  // All linear weights with scales, the norms (2 per layer + the final one), one embedding row.
  base.bytes_per_token = wf.bytes() + size_t(2 * o.layers + 1) * kDim * 4 + size_t(kDim) * 2;

  // The gate GEMV alone (14336 x 4096), rotating over the layers' copies so weights come from DRAM.
  {
    float* x = static_cast<float*>(wf.scratch(size_t(kDim) * 4));
    float* y = static_cast<float*>(wf.scratch(size_t(kFfn) * 4));
    cuda_ok(cudaMemset(x, 0, size_t(kDim) * 4), "memset");
    cuda_ok(cudaDeviceSynchronize(), "memset");
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    // One untimed call first: the kernel's first launch loads its module (lazy loading) and sets it
    // up, milliseconds that would otherwise be charged to the timed ~3 ms below.
    be.matmul(gates[0], x, 1, y);
    be.synchronize();
    const int reps = 4 * o.layers;
    cudaEventRecord(e0);  // legacy stream: waits for the backend's stream work, which is done
    for (int r = 0; r < reps; ++r) be.matmul(gates[size_t(r % o.layers)], x, 1, y);
    be.synchronize();
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    const size_t gbytes =
        weight_data_bytes(f, kFfn, kDim) + weight_scale_bytes(f, ScaleType::ue8m0, kFfn, kDim);
    base.gemv_gbps = double(gbytes) * reps / (ms * 1e-3) / 1e9;
  }

  std::vector<Result> out;
  for (int batch : o.batches)
    for (bool graphs : o.graph_modes) {
      Result r = base;
      r.graphs = graphs;
      r.batch = batch;
      time_decode(be, *model, o, kvf, r);
      out.push_back(r);
    }
  if (o.prefill > 0 && o.batches == std::vector<int>{1} && !out.empty())
    for (int start : o.prefill_starts) {
      out.front().prefill_ms.push_back(time_prefill(be, *model, o, kvf, start));
      if (!o.rounded_attention) continue;
      model->set_round_attention_operands(true);
      out.front().prefill_rounded_ms.push_back(time_prefill(be, *model, o, kvf, start));
      model->set_round_attention_operands(false);
    }
  if (o.batches == std::vector<int>{1} && !out.empty())
    for (KvFormat lkv : {KvFormat::bf16, KvFormat::fp8})
      for (int cached : o.decode_starts) {
        Options oc = o;
        oc.context = cached;
        Result r = base;
        r.graphs = true;
        time_decode(be, *model, oc, lkv, r);
        // Every layer reads K and V of each attended position: head_dim values per kv head, and for fp8
        // one scale byte per 128 of them. Step p attends p + 1 positions.
        const double per_pos = double(o.layers) * kKvHeads * 2 *
                               (lkv == KvFormat::fp8 ? kHeadDim + kHeadDim / 128 : 2 * kHeadDim);
        const double mean_len = cached + o.warmup + (o.tokens + 1) / 2.0;
        out.front().long_decode.push_back({lkv, cached, r.tok_s, r.ms_per_token, per_pos * mean_len});
      }
  return out;
}

// A comma-separated list of integers in [lo, hi] (--batch, --prefill-at).
std::vector<int> parse_counts(const std::string& list, const char* option, int lo, int hi) {
  std::vector<int> out;
  for (size_t i = 0; i <= list.size();) {
    const size_t j = std::min(list.find(',', i), list.size());
    const std::string item = list.substr(i, j - i);
    size_t used = 0;
    int v = lo - 1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
    }
    if (item.empty() || used != item.size() || v < lo || v > hi)
      throw mx8::Error(std::string(option) + ": '" + item + "' is not a number in [" + std::to_string(lo) +
                       ", " + std::to_string(hi) + "]");
    out.push_back(v);
    i = j + 1;
  }
  return out;
}

// The --weights list ("fp8,mxfp8,bf16" in any order and subset), in that order.
std::vector<WeightFormat> weight_formats(const std::string& list) {
  std::vector<WeightFormat> out;
  size_t i = 0;
  while (i <= list.size()) {
    const size_t j = std::min(list.find(',', i), list.size());
    const std::string name = list.substr(i, j - i);
    if (name == "fp8")
      out.push_back(WeightFormat::fp8_block);
    else if (name == "mxfp8")
      out.push_back(WeightFormat::mxfp8);
    else if (name == "bf16")
      out.push_back(WeightFormat::bf16);
    else
      throw mx8::Error("bench decode-cuda: --weights: '" + name + "' is not fp8, mxfp8 or bf16");
    i = j + 1;
  }
  return out;
}

void run(const Options& o) {
  const std::vector<WeightFormat> formats = weight_formats(o.weights);  // bad names fail before the GPU
  auto be = make_cuda_backend(0);
  const KvFormat kvf = o.kv == "fp8" ? KvFormat::fp8 : o.kv == "f32" ? KvFormat::f32 : KvFormat::bf16;
  const double bw = copy_bandwidth_gbps(*be);
  std::printf(
      "mx8 bench decode-cuda: Llama-3-8B shapes (%d layers), batch %s, %s KV, %d steps after %d warm-up, "
      "from position %d\n",
      o.layers, o.batch.c_str(), kv_format_name(kvf), o.tokens, o.warmup, o.context);
  std::printf("device: %s; copy bandwidth %.0f GB/s (read + write)\n", be->info().description.c_str(), bw);
  std::vector<Result> results;
  for (const WeightFormat f : formats) {
    for (const Result& r : run_format(*be, f, o, kvf)) {
      std::printf(
          "%-28s batch %2d graphs %-3s %8.1f tok/s  %7.3f ms/step  %6.2f GB/step  %6.0f GB/s (%.0f%% of copy "
          "bw)  gate GEMV alone %6.0f GB/s (%.0f%%)\n",
          r.weights.c_str(), r.batch, r.graphs ? "on" : "off", r.tok_s, r.ms_per_token,
          r.bytes_per_token / 1e9, r.weight_gbps, 100 * r.weight_gbps / bw, r.gemv_gbps,
          100 * r.gemv_gbps / bw);
      for (size_t i = 0; i < r.prefill_ms.size(); ++i) {
        std::printf("%-28s prefill of %d tokens after %6d: %8.1f ms  %8.0f tok/s", r.weights.c_str(),
                    o.prefill, o.prefill_starts[i], r.prefill_ms[i], o.prefill / (r.prefill_ms[i] * 1e-3));
        if (i < r.prefill_rounded_ms.size())
          std::printf("  (rounded attention operands: %.1f ms)", r.prefill_rounded_ms[i]);
        std::printf("\n");
      }
      for (const auto& d : r.long_decode)
        std::printf("%-28s decode after %6d cached, %s KV: %8.1f tok/s  %7.3f ms/token  %.0f%% of roofline\n",
                    r.weights.c_str(), d.cached, kv_format_name(d.kv), d.tok_s, d.ms_per_token,
                    100 * (double(r.bytes_per_token) + d.kv_bytes) / (d.ms_per_token * 1e-3) / 1e9 / bw);
      std::fflush(stdout);
      results.push_back(r);
    }
  }
  // vs BF16: against the BF16 run with the same graphs setting.
  auto bf16_tok_s = [&](const Result& of) {
    for (auto& r : results)
      if (r.weights == "bf16" && r.graphs == of.graphs && r.batch == of.batch) return r.tok_s;
    return 0.0;
  };
  for (auto& r : results)
    if (r.weights != "bf16" && bf16_tok_s(r) > 0)
      std::printf("%s / BF16 tokens/s, batch %d, graphs %s: %.2fx\n", r.weights.c_str(), r.batch,
                  r.graphs ? "on" : "off", r.tok_s / bf16_tok_s(r));

  const bool batched = o.batches != std::vector<int>{1};
  std::string md = std::string("## CUDA decode, Llama-3-8B shapes, ") +
                   (batched ? "batches " + o.batch : std::string("batch 1")) +
                   (o.greedy ? ", greedy" : ", logits downloaded") + " (`mx8 bench decode-cuda`)\n\n";
  const std::string machine = "Machine: " + mx8::cli::machine_description() + "; GPU " +
                              be->info().description + ". Date: " + mx8::cli::today_utc() +
                              ". Command: `mx8 bench decode-cuda";
  const std::string command =
      " --layers " + std::to_string(o.layers) + (batched ? " --batch " + o.batch : "") + " --tokens " +
      std::to_string(o.tokens) + " --kv " + o.kv +
      (o.context ? " --context " + std::to_string(o.context) : "") +
      (o.prefill != Options{}.prefill ? " --prefill " + std::to_string(o.prefill) : "") +
      (o.prefill_at != Options{}.prefill_at ? " --prefill-at " + o.prefill_at : "") +
      (!o.decode_at.empty() && !batched ? " --decode-at " + o.decode_at : "") +
      (o.weights != Options{}.weights ? " --weights " + o.weights : "") + (o.greedy ? " --greedy" : "") +
      (o.rounded_attention ? " --attention-rounded" : "") +
      (o.graphs != Options{}.graphs ? " --graphs " + o.graphs : "") +
      (o.timeline ? " --timeline " + std::to_string(o.timeline) : "");
  md += machine + command + "`.\n\n";
  const std::string per = batched ? "step" : "token";
  md += "Random weights; each " + per +
        " is the model's forward pass (src/model/llama.cpp) as `mx8 run` does it: uploads of the step's "
        "indices, the layers, the head, " +
        (o.greedy
             ? std::string("the arg max of each row taken on the GPU and only the indices downloaded (greedy "
                           "decoding without penalties: `mx8 run --temperature 0`)")
             : std::string("logits downloaded")) +
        ". graphs on = the step recorded once as a CUDA graph "
        "and replayed (MX8_CUDA_GRAPHS=0 turns it off). Roofline = weight bytes per " +
        per + " / device copy bandwidth measured in the same run (" + fmt("%.0f", bw) +
        " GB/s, read + write). Weight bytes = all linear weights with scales, lm_head, norms, one embedding "
        "row. 'gate GEMV alone' = the 14336x4096 matmul timed on its own over the layers' cold copies. vs "
        "BF16 = against BF16 with the same graphs setting" +
        (batched ? " and batch" : "") + ".\n\n";
  if (batched) {
    md +=
        "A step of batch B decodes one token for each of B sequences (all at the same position, each with "
        "its own KV pages) and downloads their " +
        std::string(o.greedy ? "tokens' indices" : "logits") +
        "; tokens/s counts every sequence's tokens, and the "
        "weights are read once per step. A matmul has B rows, and its activations are, with ";
    for (size_t i = 0; i < formats.size(); ++i)
      md += std::string(i ? "; with " : "") +
            (formats[i] == WeightFormat::fp8_block ? "FP8" : weight_format_name(formats[i])) +
            " weights: " + be->activation_quantization(formats[i]);
    md += ".\n\n";
  }
  md += std::string("| weights | ") + (batched ? "batch | " : "") + "graphs | tokens/s | ms/" + per +
        " | GB/" + per + " | weight GB/s | % of roofline | gate GEMV alone GB/s | vs BF16 |\n";
  md += std::string("|---|") + (batched ? "---:|" : "") + "---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (auto& r : results) {
    const double ref = bf16_tok_s(r);
    md += "| " + r.weights + " | " + (batched ? std::to_string(r.batch) + " | " : "") +
          (r.graphs ? "on" : "off") + " | " + fmt("%.1f", r.tok_s) + " | " + fmt("%.3f", r.ms_per_token) +
          " | " + fmt("%.2f", r.bytes_per_token / 1e9) + " | " + fmt("%.0f", r.weight_gbps) + " | " +
          fmt("%.0f%%", 100 * r.weight_gbps / bw) + " | " + fmt("%.0f", r.gemv_gbps) + " | " +
          (ref > 0 ? fmt("%.2fx", r.tok_s / ref) : std::string("")) + " |\n";
  }
  if (!batched)
    md += "\nTargets (issue 5): >= 80% of the roofline with FP8 weights and >= 1.8x the BF16 tokens/s.\n";
  if (o.prefill > 0 && !batched) {
    // 2 FLOPs per weight of the layers' matmuls per token (attention and the one lm_head row aside).
    const double flops =
        2.0 * o.prefill * double(o.layers) *
        double(kDim * (kHeads + 2 * kKvHeads) * kHeadDim + kHeads * kHeadDim * kDim + 3 * kDim * kFfn);
    md +=
        "\nPrompt step: one forward of " + std::to_string(o.prefill) +
        " tokens after `cached` positions of a sequence (causal attention over the cached positions and "
        "the step, the last row's logits downloaded), the median of 3 after one untimed step. matmul "
        "TFLOP/s counts the layers' matmuls only (2 FLOPs per weight per token), over the whole step's "
        "time. `activations` is what the backend does with a prompt step's matmul inputs." +
        (o.rounded_attention
             ? std::string(" `rounded ms`: the same step with the attention's q and probabilities rounded to "
                           "the cache's operand type (`mx8 run --attention rounded`), `x` the speed-up.")
             : std::string()) +
        "\n\n";
    md += o.rounded_attention
              ? "| weights | prompt tokens | cached | ms | tokens/s | matmul TFLOP/s | activations "
                "| rounded ms | x |\n|---|---:|---:|---:|---:|---:|---|---:|---:|\n"
              : "| weights | prompt tokens | cached | ms | tokens/s | matmul TFLOP/s | activations "
                "|\n|---|---:|---:|---:|---:|---:|---|\n";
    for (auto& r : results)
      for (size_t i = 0; i < r.prefill_ms.size(); ++i) {
        md += "| " + r.weights + " | " + std::to_string(o.prefill) + " | " +
              std::to_string(o.prefill_starts[i]) + " | " + fmt("%.1f", r.prefill_ms[i]) + " | " +
              fmt("%.0f", o.prefill / (r.prefill_ms[i] * 1e-3)) + " | " +
              fmt("%.0f", flops / (r.prefill_ms[i] * 1e-3) / 1e12) + " | " + r.prefill_path + " |";
        if (i < r.prefill_rounded_ms.size())
          md += " " + fmt("%.1f", r.prefill_rounded_ms[i]) + " | " +
                fmt("%.2fx", r.prefill_ms[i] / r.prefill_rounded_ms[i]) + " |";
        md += "\n";
      }
  }
  if (!o.decode_starts.empty() && !batched) {
    md += "\nDecode at long contexts: batch 1, graphs on, " + std::to_string(o.tokens) + " steps after " +
          std::to_string(o.warmup) +
          " from `cached` positions (never written: attention reads them as zeros, at full cost), with a "
          "bf16 and an fp8 KV cache. KV GB/token = the K/V bytes a step reads on average (fp8: one UE8M0 "
          "scale byte per 128 values); roofline = (weight bytes + KV bytes) per token / copy bandwidth.\n\n";
    md +=
        "| weights | KV | cached | tokens/s | ms/token | KV GB/token | GB/s | % of roofline |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n";
    for (auto& r : results)
      for (const auto& d : r.long_decode) {
        const double gbps = (double(r.bytes_per_token) + d.kv_bytes) / (d.ms_per_token * 1e-3) / 1e9;
        md += "| " + r.weights + " | " + kv_format_name(d.kv) + " | " + std::to_string(d.cached) + " | " +
              fmt("%.1f", d.tok_s) + " | " + fmt("%.3f", d.ms_per_token) + " | " +
              fmt("%.2f", d.kv_bytes / 1e9) + " | " + fmt("%.0f", gbps) + " | " +
              fmt("%.0f%%", 100 * gbps / bw) + " |\n";
      }
  }
  if (o.perf.write) {
    std::string path = o.perf.path();
    const std::string section =
        std::string(batched ? "decode-cuda-batch" : "decode-cuda") + (o.greedy ? "-greedy" : "");
    mx8::cli::update_perf_section(path, section, md);
    std::printf("updated %s (section %s)\n", path.c_str(), section.c_str());
    std::string tl;
    for (const Result& r : results) tl += r.timeline_md;
    if (!tl.empty()) {
      tl =
          "## CUDA decode, one step kernel by kernel (`mx8 bench decode-cuda --timeline`)\n\n" + machine +
          command +
          "`.\n\nAfter each timed run, --timeline more steps, each traced by CUPTI's "
          "record of every kernel (start and end on the GPU). Kernels overlap where one is launched as a "
          "programmatic dependent of the one before, so a kernel's busy time (its first block's start to its "
          "last block's end, summed over its launches) counts the time it waits too. Exposed time is what it "
          "adds to the step past every kernel that started before it: the exposed times and the gaps "
          "(nothing running) add up to the step's span (mx8/util/span_timeline.h). Rows are kernels by "
          "launch shape and name, in order of first launch (projections that share both share a row: per "
          "step "
          "counts the launches).\n" +
          tl;
      mx8::cli::update_perf_section(path, "decode-cuda-timeline", tl);
      std::printf("updated %s (section decode-cuda-timeline)\n", path.c_str());
    }
  }
}

mx8::cli::CommandRegistration reg{
    "bench decode-cuda",
    "decode of a Llama-3-8B-shaped model on the GPU (batch 1 unless --batch): FP8 (and MXFP8) vs BF16 "
    "weights",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--layers", o->layers, "transformer layers (32 for Llama-3-8B)")
          ->capture_default_str()
          ->check(CLI::Range(1, 128));
      app.add_option("--batch", o->batch,
                     "sequences decoded together, comma-separated (other than 1: no prompt step; PERF.md "
                     "section decode-cuda-batch)")
          ->capture_default_str();
      app.add_option("--tokens", o->tokens, "decode steps timed")
          ->capture_default_str()
          ->check(CLI::Range(1, 100000));
      app.add_option("--warmup", o->warmup, "decode steps before timing")
          ->capture_default_str()
          ->check(CLI::Range(0, 1000));
      app.add_option("--context", o->context,
                     "position of the first decode step (cached positions attended to)")
          ->capture_default_str()
          ->check(CLI::Range(0, 1000000));
      app.add_option("--prefill-at", o->prefill_at,
                     "cached positions before the prompt step (comma-separated; one step each)")
          ->capture_default_str();
      app.add_option("--decode-at", o->decode_at,
                     "cached positions of extra batch-1 decode rows with bf16 and fp8 KV caches, graphs on "
                     "(comma-separated; long contexts)");
      app.add_option("--prefill", o->prefill, "tokens of one timed prompt step per weight format (0: none)")
          ->capture_default_str()
          ->check(CLI::Range(0, 16384));
      app.add_option("--weights", o->weights, "fp8, mxfp8, bf16 (comma-separated)")->capture_default_str();
      app.add_option("--kv", o->kv, "KV cache format: bf16, fp8 or f32")
          ->capture_default_str()
          ->check(CLI::IsMember({"bf16", "fp8", "f32"}));
      app.add_flag("--greedy", o->greedy,
                   "take each row's arg max on the GPU and download only the indices, as greedy decoding "
                   "does (PERF.md section decode-cuda-greedy or decode-cuda-batch-greedy)");
      app.add_flag(
          "--attention-rounded", o->rounded_attention,
          "also time each prompt step with rounded attention operands (mx8 run --attention rounded)");
      o->perf.add_options(app);
      app.add_option(
             "--timeline", o->timeline,
             "after each decode run, trace this many more steps kernel by kernel and print where their "
             "time went (CUPTI)")
          ->check(CLI::Range(0, 1000));
      app.add_option("--graphs", o->graphs, "CUDA graphs: on, off or both (comma-separated, in that order)")
          ->capture_default_str();
      return [o] {
        o->graph_modes.clear();
        if (o->graphs.find("on") != std::string::npos) o->graph_modes.push_back(true);
        if (o->graphs.find("off") != std::string::npos) o->graph_modes.push_back(false);
        if (o->graph_modes.empty())
          throw mx8::Error("--graphs " + o->graphs + ": expected on, off or on,off");
        o->batches = parse_counts(o->batch, "--batch", 1, 256);
        o->prefill_starts = parse_counts(o->prefill_at, "--prefill-at", 0, 1000000);
        o->decode_starts.clear();
        if (!o->decode_at.empty()) o->decode_starts = parse_counts(o->decode_at, "--decode-at", 0, 1000000);
        run(*o);
      };
    }};

}  // namespace

#endif  // MX8_HAVE_CUDA
