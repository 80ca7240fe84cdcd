#include "mx8/backend/cpu/cpu_features.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "mx8/error.h"

namespace mx8::cpu {
namespace {

TEST(CpuFeatures, NamesRoundTrip) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon}) EXPECT_EQ(parse_isa(isa_name(isa)), isa);
  EXPECT_THROW(parse_isa("sse9"), Error);
}

// The detection against the Linux kernel's own reading of CPUID: the "flags" of /proc/cpuinfo, from
// which the kernel drops the AVX and AVX-512 flags when the OS does not save those registers.
TEST(CpuFeatures, AgreesWithTheKernelsCpuFlags) {
#if defined(__x86_64__) && defined(__linux__)
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line) && line.rfind("flags", 0) != 0) {
  }
  if (line.empty()) GTEST_SKIP() << "no flags line in /proc/cpuinfo";
  std::set<std::string> flags;
  std::istringstream words(line.substr(line.find(':') + 1));
  for (std::string w; words >> w;) flags.insert(w);
  auto all = [&](std::initializer_list<const char*> names) {
    return std::all_of(names.begin(), names.end(), [&](const char* n) { return flags.count(n) > 0; });
  };
  const bool avx2 = all({"avx", "avx2", "fma", "f16c"});
  EXPECT_EQ(detected_cpu_features().avx2, avx2);
  EXPECT_EQ(detected_cpu_features().avx512, avx2 && all({"avx512f", "avx512dq", "avx512bw", "avx512vl"}));
  EXPECT_EQ(best_isa(), detected_cpu_features().avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::scalar);
#else
  GTEST_SKIP() << "x86-64 Linux only";
#endif
}

TEST(CpuFeatures, ScalarAlwaysSupportedAndBestIsSupported) {
  EXPECT_TRUE(isa_supported(Isa::scalar));
  EXPECT_TRUE(isa_supported(best_isa()));
#if defined(__x86_64__)
  EXPECT_FALSE(isa_supported(Isa::neon));
  // AVX-512 kernels are only chosen where the AVX2 ones can also run.
  if (isa_supported(Isa::avx512)) {
    EXPECT_TRUE(isa_supported(Isa::avx2));
  }
#elif defined(__aarch64__)
  // Advanced SIMD is part of every AArch64 core: NEON is what ARM machines run.
  EXPECT_EQ(best_isa(), Isa::neon);
  EXPECT_FALSE(isa_supported(Isa::avx2));
  EXPECT_FALSE(isa_supported(Isa::avx512));
#endif
}

TEST(CpuFeatures, ForcingAnIsaAndRestoringIt) {
  const Isa before = active_isa();
  {
    ScopedIsa scoped(Isa::scalar);
    EXPECT_EQ(active_isa(), Isa::scalar);
  }
  EXPECT_EQ(active_isa(), before);
#if defined(__x86_64__)
  EXPECT_THROW(set_active_isa(Isa::neon), Error);
  EXPECT_EQ(active_isa(), before);
#endif
}

}  // namespace
}  // namespace mx8::cpu
