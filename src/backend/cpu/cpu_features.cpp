// CPU feature detection (cpuid + xgetbv on x86-64, compile-time on aarch64) and the active-ISA switch.
#include "mx8/backend/cpu/cpu_features.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mx8/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace mx8::cpu {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0 says which register states the OS saves on a context switch; a CPU flag alone is not enough.
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;    // SSE and AVX state
  const bool zmm_saved = (xcr0 & 0xE6) == 0xE6;  // plus opmask, ZMM_Hi256, Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31);
  f.avx2 = ymm_saved && avx2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_saved && avx512f && avx512dq && avx512bw && avx512vl;
  return f;
}
#else
CpuFeatures detect() {
  CpuFeatures f;
#if defined(__aarch64__)
  f.neon = true;
#endif
  return f;
}
#endif

// -1 = not decided yet. Relaxed atomics suffice: every decider computes the same value, except
// set_active_isa(), which tests call from one thread.
std::atomic<int> g_active{-1};

}  // namespace

const CpuFeatures& detected_cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = detected_cpu_features();
  switch (isa) {
    case Isa::scalar:
      return true;
    case Isa::avx2:
      return f.avx2;
    case Isa::avx512:
      return f.avx512;
    case Isa::neon:
      return f.neon;
  }
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  if (isa_supported(Isa::neon)) return Isa::neon;
  return Isa::scalar;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return "scalar";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    case Isa::neon:
      return "neon";
  }
  return "unknown";
}

Isa parse_isa(std::string_view name) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon})
    if (name == isa_name(isa)) return isa;
  throw Error("unknown CPU ISA '" + std::string(name) + "' (expected scalar, avx2, avx512 or neon)");
}

void set_active_isa(Isa isa) {
  if (!isa_supported(isa))
    throw Error(std::string("CPU ISA '") + isa_name(isa) + "' is not supported by this machine");
  g_active.store(int(isa), std::memory_order_relaxed);
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v >= 0) return Isa(v);
  Isa isa = best_isa();
  if (const char* env = std::getenv("MX8_CPU_ISA"); env && *env) {
    isa = parse_isa(env);
    if (!isa_supported(isa))
      throw Error(std::string("MX8_CPU_ISA=") + env + ", but this CPU does not support it");
  }
  g_active.store(int(isa), std::memory_order_relaxed);
  return isa;
}

}  // namespace mx8::cpu
