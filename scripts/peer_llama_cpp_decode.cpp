// Greedy decode speed of llama.cpp on a GGUF file, timed as `mx8 bench decode --model` times mx8's:
// BOS, then one llama_decode per token, arg max on the host; the median of the steps after the first
// five (mx8: the prompt step and 4 warm-up steps). Built against a released llama.cpp by
// scripts/peer_llama_cpp.sh; llama.cpp is a peer to measure, not part of mx8.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc != 4 || atoi(argv[2]) <= 5) {
    fprintf(stderr, "usage: peer_decode MODEL.gguf STEPS THREADS  (STEPS > 5)\n");
    return 2;
  }
  const int n = atoi(argv[2]), threads = atoi(argv[3]);
  ggml_backend_load_all();
  llama_model_params mp = llama_model_default_params();
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (!model) {
    fprintf(stderr, "llama.cpp could not load %s\n", argv[1]);
    return 1;
  }
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = n + 8;
  cp.n_batch = 8;
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  llama_context* ctx = llama_init_from_model(model, cp);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int nv = llama_vocab_n_tokens(vocab);
  llama_token tok = llama_vocab_bos(vocab);
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    llama_batch b = llama_batch_get_one(&tok, 1);
    if (llama_decode(ctx, b)) {
      fprintf(stderr, "llama_decode failed at step %d\n", i);
      return 1;
    }
    const float* logits = llama_get_logits_ith(ctx, -1);
    int best = 0;
    for (int v = 1; v < nv; ++v)
      if (logits[v] > logits[best]) best = v;
    tok = best;
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::vector<double> t(ms.begin() + 5,
                        ms.end());  // 4 warm-up decode steps after the BOS step, as mx8's bench
  std::sort(t.begin(), t.end());
  const double med = t[t.size() / 2];
  printf("llama.cpp decode: median of %zu steps %.2f ms/token, %.2f tok/s (threads %d)\n", t.size(), med,
         1000.0 / med, threads);
  llama_free(ctx);
  llama_model_free(model);
}
