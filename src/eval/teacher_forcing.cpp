#include "mx8/eval/teacher_forcing.h"

#include <algorithm>
#include <string>

#include "mx8/error.h"

namespace mx8::eval {
namespace {

constexpr int kPageSize = 16;

// One window: `tokens` at positions 0.., the logits of rows `rows` (ascending) wanted, in that order.
void run_window(model::LlamaModel& model, backend::KvCache& cache, int pages, int chunk,
                const std::vector<int32_t>& tokens, const std::vector<int32_t>& rows,
                std::vector<float>& logits) {
  const size_t vocab = size_t(model.config().vocab);
  logits.resize(rows.size() * vocab);
  size_t next_row = 0;
  for (int c0 = 0; c0 < int(tokens.size()); c0 += chunk) {
    const int c1 = std::min(int(tokens.size()), c0 + chunk);
    model::StepBatch b;
    b.max_pages_per_seq = pages;
    for (int p = 0; p < pages; ++p) b.block_tables.push_back(p);
    for (int i = c0; i < c1; ++i) {
      b.tokens.push_back(tokens[size_t(i)]);
      b.pos.push_back(i);
      b.seq.push_back(0);
      b.slot.push_back(i);
      b.kv_len.push_back(i + 1);
    }
    const size_t first = next_row;
    for (; next_row < rows.size() && rows[next_row] < c1; ++next_row)
      b.logit_rows.push_back(rows[next_row] - c0);
    // A chunk with no wanted row still runs: it fills the KV cache the later chunks attend to.
    model.forward(b, cache, logits.data() + first * vocab);
  }
}

}  // namespace

int64_t scored_positions(const std::vector<std::vector<int32_t>>& docs, int64_t max_scored) {
  int64_t n = 0;
  for (const auto& d : docs) n += std::max<int64_t>(0, int64_t(d.size()) - 1);
  return max_scored > 0 ? std::min(n, max_scored) : n;
}

int64_t score_documents(model::LlamaModel& model, backend::Backend& backend, backend::KvFormat kv,
                        const std::vector<std::vector<int32_t>>& docs, const Windowing& w, int64_t max_scored,
                        const ScoreFn& score) {
  if (w.ctx < 4)
    throw Error("eval: a window (--ctx) must hold at least 4 tokens, not " + std::to_string(w.ctx));
  if (w.stride < 1 || w.stride > w.ctx - 2)
    throw Error("eval: --stride " + std::to_string(w.stride) + " must be between 1 and ctx - 2 (" +
                std::to_string(w.ctx - 2) + ") so that every window scores a token with context");
  if (w.chunk < 1 || w.chunk > model.max_tokens_per_step())
    throw Error("eval: --chunk " + std::to_string(w.chunk) + " must be between 1 and the " +
                std::to_string(model.max_tokens_per_step()) + " tokens the model was loaded for");
  const int64_t vocab = model.config().vocab;
  for (const auto& d : docs)
    for (int32_t t : d)
      if (t < 0 || t >= vocab)
        throw Error("eval: token id " + std::to_string(t) + " is outside the model's vocabulary of " +
                    std::to_string(vocab));

  const model::LlamaConfig& c = model.config();
  const int pages = (w.ctx + kPageSize - 1) / kPageSize;
  backend::KvCacheDesc desc{kv, int(c.n_layers), int(c.n_kv_heads), int(c.head_dim), kPageSize, pages};
  auto cache = backend.create_kv_cache(desc);

  const int64_t budget = scored_positions(docs, max_scored);
  int64_t scored = 0;
  std::vector<int32_t> tokens, rows;
  std::vector<float> logits;
  for (const auto& d : docs) {
    const int64_t n = int64_t(d.size());
    int64_t next = 1;  // the next token of d to score
    for (int64_t begin = 0; next < n && scored < budget; begin += w.stride) {
      const bool bos = begin > 0 && w.bos >= 0 && d[size_t(begin)] != w.bos;
      const int64_t end = std::min(n, begin + w.ctx - (bos ? 1 : 0));
      tokens.assign(bos ? 1 : 0, w.bos);
      tokens.insert(tokens.end(), d.begin() + begin, d.begin() + end);
      // Token j of d is predicted by the window row holding token j - 1.
      const int64_t last = std::min(end, next + (budget - scored));
      rows.clear();
      for (int64_t j = next; j < last; ++j) rows.push_back(int32_t(j - 1 - begin + (bos ? 1 : 0)));
      if (last > next) {  // (a stride of 1 can give a window with nothing new to score)
        run_window(model, *cache, pages, w.chunk, tokens, rows, logits);
        for (int64_t j = next; j < last; ++j)
          score(logits.data() + size_t(j - next) * size_t(vocab), d[size_t(j)]);
        scored += last - next;
        next = last;
      }
      if (end == n) break;
    }
  }
  return scored;
}

}  // namespace mx8::eval
