// Teacher-forced scoring of a text: the model reads the text's own tokens and, at every position, its
// logits for the next token are handed to the caller together with the token the text has there.
// This is what perplexity and the format comparisons of `mx8 eval` are computed from.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"

namespace mx8::eval {

// How a document is cut into forward passes. A document of at most `ctx` tokens is one window. A
// longer one is read in windows that start `stride` tokens apart; each window scores only the tokens
// that no earlier window scored, so every token is scored once and (past the first window) with at
// least ctx - stride - 1 tokens of context. A window that starts inside a document begins with `bos`
// where the model has one (as llama.cpp's perplexity does), since Llama-family models are trained on
// sequences that start with it.
struct Windowing {
  int ctx = 512;
  int stride = 256;
  int chunk = 256;   // tokens per forward step (at most the model's max_tokens_per_step)
  int32_t bos = -1;  // -1: the model has no BOS
};

// Called for every scored position: the model's logits ([vocab]) and the text's next token.
using ScoreFn = std::function<void(const float* logits, int32_t target)>;

// The positions score_documents scores for these documents: each document's tokens but its first,
// at most `max_scored` in all (0: no limit). Lets the caller size what it keeps before running.
int64_t scored_positions(const std::vector<std::vector<int32_t>>& docs, int64_t max_scored);

// Runs `model` over each document (token ids, the first normally BOS) with a fresh KV cache of format
// `kv`, and calls `score` for every token but each document's first, in document order, until
// `max_scored` positions (0: all). Throws mx8::Error on a bad windowing or a token outside the
// vocabulary. Returns the positions scored.
int64_t score_documents(model::LlamaModel& model, backend::Backend& backend, backend::KvFormat kv,
                        const std::vector<std::vector<int32_t>>& docs, const Windowing& w, int64_t max_scored,
                        const ScoreFn& score);

}  // namespace mx8::eval
