// The CPU ISAs this machine can run, so that every test runs each compiled kernel path.
#pragma once

#include <vector>

#include "mx8/backend/cpu/cpu_features.h"

namespace mx8::cpu::testing {

inline std::vector<Isa> runnable_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

}  // namespace mx8::cpu::testing
