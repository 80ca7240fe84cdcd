#include "mx8/backend/cpu/cpu_features.h"

#include <gtest/gtest.h>

#include "mx8/error.h"

namespace mx8::cpu {
namespace {

TEST(CpuFeatures, NamesRoundTrip) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::neon}) EXPECT_EQ(parse_isa(isa_name(isa)), isa);
  EXPECT_THROW(parse_isa("sse9"), Error);
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
