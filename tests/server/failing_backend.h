// A backend that forwards every op to another one until told to fail: then embedding (the first op of
// every step of a model loaded on it) throws, as a device error would. For the tests of what a server
// does when a step fails.
#pragma once

#include <atomic>

#include "mx8/error.h"
#include "server/forwarding_backend.h"

namespace mx8::testing {

class FailingBackend final : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  std::atomic<bool> fail{false};

  void embedding(const backend::WeightView& t, const int32_t* ids, int64_t n, float* out) override {
    if (fail) throw Error("injected device failure");
    b_.embedding(t, ids, n, out);
  }
};

}  // namespace mx8::testing
