// A backend by name. Whether "cuda" exists is known only where MX8_HAVE_CUDA is defined (the CLI and
// the tests of a build that links mx8_cuda), not in the CPU-only library, so the choice is inline. It
// has its own header so that the many files that include backend.h compile to the same thing in the
// CPU and CUDA builds (CI's compiler cache then compiles them once).
#pragma once

#include <memory>
#include <string>

#include "mx8/backend/backend.h"

namespace mx8::backend {

[[noreturn]] void throw_unknown_backend(const std::string& name, bool cuda_built);

// "cpu" (threads <= 0: all hardware threads), or "cuda" (GPU 0) in builds that link mx8_cuda.
inline std::unique_ptr<Backend> make_backend(const std::string& name, int threads) {
  if (name == "cpu") return make_cpu_backend(threads);
#if defined(MX8_HAVE_CUDA)
  if (name == "cuda") return make_cuda_backend(0);
  throw_unknown_backend(name, true);
#else
  throw_unknown_backend(name, false);
#endif
}

}  // namespace mx8::backend
