// CPU feature detection and the choice of kernel ISA for the CPU backend.
//
// Every kernel exists as a portable scalar version; SIMD versions (AVX2+FMA+F16C today; AVX-512 and
// NEON slot in as new enum values and new *_avx512.cpp / *_neon.cpp files) are picked at run time.
// The choice is made once per process from what the CPU and OS support, and can be forced:
//   - the environment variable MX8_CPU_ISA=scalar|avx2|avx512|neon (read at first use), or
//   - set_active_isa() (tests use it to run every compiled path on the same inputs).
// Forcing an ISA the machine lacks is an mx8::Error, never a silent fallback.
#pragma once

#include <string_view>

namespace mx8::cpu {

// Ordered from least to most capable on each architecture family.
enum class Isa : int {
  scalar = 0,
  avx2 = 1,    // x86-64: AVX2 + FMA + F16C, with the OS saving ymm state
  avx512 = 2,  // x86-64: AVX-512 F+BW+VL+DQ, with the OS saving zmm state (kernels may fall back to avx2)
  neon = 3,    // aarch64: Advanced SIMD (always present)
};

struct CpuFeatures {
  bool avx2 = false;    // AVX2 and FMA and F16C and OS ymm support
  bool avx512 = false;  // AVX-512 F, BW, VL, DQ and OS zmm support
  bool neon = false;
};

// What this CPU supports (detected once, cached).
const CpuFeatures& detected_cpu_features();
bool isa_supported(Isa isa);
// The most capable ISA this machine supports.
Isa best_isa();
// The ISA kernels dispatch on: best_isa(), unless MX8_CPU_ISA or set_active_isa() says otherwise.
Isa active_isa();
// Forces the ISA for the whole process (tests, benchmarks). Throws mx8::Error if unsupported.
void set_active_isa(Isa isa);
const char* isa_name(Isa isa);
// "scalar", "avx2", "avx512", "neon"; throws mx8::Error naming the value otherwise.
Isa parse_isa(std::string_view name);

// RAII helper for tests and benchmarks: forces `isa` for its lifetime, then restores the previous one.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : saved_(active_isa()) { set_active_isa(isa); }
  ~ScopedIsa() { set_active_isa(saved_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  Isa saved_;
};

}  // namespace mx8::cpu
