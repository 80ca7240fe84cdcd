// A backend whose arg max answers from a script: greedy draws on it give the scripted tokens, one per
// draw, and the model's own choices after the script ends. For the tests of replies that stories260K
// would never write (tool calls); the engine must draw greedy tokens on the backend
// (EngineOptions::backend_draw = always).
#pragma once

#include <mutex>
#include <vector>

#include "server/forwarding_backend.h"

namespace mx8::testing {

class ScriptedBackend final : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;

  // The tokens the next draws give, in order; with `repeat`, over and over (each of a series of
  // requests, one at a time, gets the same reply).
  void script(std::vector<int32_t> tokens, bool repeat = false) {
    std::lock_guard lk(mu_);
    tokens_ = std::move(tokens);
    next_ = 0;
    repeat_ = repeat;
  }
  void argmax(const float* x, int64_t rows, int64_t cols, int32_t* out) override {
    b_.argmax(x, rows, cols, out);
    std::lock_guard lk(mu_);
    for (int64_t r = 0; r < rows && !tokens_.empty(); ++r) {
      if (next_ == tokens_.size() && repeat_) next_ = 0;
      if (next_ == tokens_.size()) break;
      out[r] = tokens_[next_++];
    }
  }

 private:
  std::mutex mu_;
  std::vector<int32_t> tokens_;
  size_t next_ = 0;
  bool repeat_ = false;
};

}  // namespace mx8::testing
