#include "mx8/util/span_timeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace {

using mx8::Span;
using mx8::summarize_spans;

// Times are whole microseconds in ns, so every expected value below is exact in double.
Span span(const char* name, uint64_t start_us, uint64_t end_us) {
  return {name, start_us * 1000, end_us * 1000};
}

TEST(SpanTimeline, SequentialSpansAreExposedWholeAndIdleTimeIsTheNextOnesGap) {
  const auto rows = summarize_spans({{span("a", 0, 10), span("b", 15, 20)}});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].name, "a");
  EXPECT_DOUBLE_EQ(rows[0].exposed_us, 10);
  EXPECT_DOUBLE_EQ(rows[0].gap_us, 0);
  EXPECT_DOUBLE_EQ(rows[1].exposed_us, 5);
  EXPECT_DOUBLE_EQ(rows[1].gap_us, 5);
  EXPECT_DOUBLE_EQ(rows[1].busy_us, 5);
}

TEST(SpanTimeline, AnOverlappingSpanIsCreditedOnlyWithWhatItAddsPastTheLatestEnd) {
  // b starts while a runs (a dependent launch) and ends 2 us after it; c lies inside b.
  const auto rows =
      summarize_spans({{span("a", 0, 10), span("b", 5, 12), span("c", 6, 8), span("d", 9, 13)}});
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_DOUBLE_EQ(rows[1].exposed_us, 2);
  EXPECT_DOUBLE_EQ(rows[1].busy_us, 7);
  EXPECT_DOUBLE_EQ(rows[2].exposed_us, 0);
  EXPECT_DOUBLE_EQ(rows[2].gap_us, 0);
  EXPECT_DOUBLE_EQ(rows[3].exposed_us, 1);  // past b's end, not c's
}

TEST(SpanTimeline, RowsAreMeansPerRunInOrderOfFirstAppearance) {
  // Run 1 has two "g" spans; run 2 starts at another clock value and has "x" first.
  const auto rows = summarize_spans({{span("n", 0, 1), span("g", 1, 4), span("g", 4, 6)},
                                     {span("x", 100, 101), span("n", 101, 102), span("g", 102, 105)}});
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].name, "n");  // first index 0 (run 1)
  EXPECT_EQ(rows[1].name, "x");  // first index 0 (run 2), seen after n
  EXPECT_EQ(rows[2].name, "g");
  EXPECT_DOUBLE_EQ(rows[2].count, 1.5);
  EXPECT_DOUBLE_EQ(rows[2].busy_us, 4);  // (3 + 2 + 3) / 2
  EXPECT_DOUBLE_EQ(rows[1].count, 0.5);
}

TEST(SpanTimeline, GapsAndExposedTimesAreMeansPerRunToo) {
  // b starts 2 us after a ends in run 1 and 4 us after in run 2.
  const auto rows =
      summarize_spans({{span("a", 0, 1), span("b", 3, 4)}, {span("a", 10, 11), span("b", 15, 17)}});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_DOUBLE_EQ(rows[1].gap_us, 3);
  EXPECT_DOUBLE_EQ(rows[1].exposed_us, 1.5);
  EXPECT_DOUBLE_EQ(rows[0].gap_us, 0);
}

TEST(SpanTimeline, ExposedTimesAndGapsAddUpToEachRunsSpan) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<Span> run;
    uint64_t t = rng() % 1000;
    uint64_t first = UINT64_MAX, last = 0;
    const int n = 1 + int(rng() % 20);
    for (int i = 0; i < n; ++i) {
      t += rng() % 7;  // starts in order, some at the same time
      const uint64_t end = t + rng() % 30;
      run.push_back(span(rng() % 2 ? "p" : "q", t, end));
      first = std::min(first, t * 1000);
      last = std::max(last, end * 1000);
    }
    double total = 0;
    for (const auto& r : summarize_spans({run})) total += r.exposed_us + r.gap_us;
    EXPECT_DOUBLE_EQ(total, double(last - first) * 1e-3) << "trial " << trial;
  }
}

TEST(KernelDisplayName, KeepsTheKernelAndItsTemplateArgumentsOnly) {
  // Symbols as CUPTI reports them (mx8's own kernels, from the CUDA build's objects).
  EXPECT_EQ(mx8::kernel_display_name("_ZN3mx87backend9cuda_impl48_GLOBAL__N__85c81ae9_15_gemv_fp8_mma_cu_"
                                     "102cec9219gemv_fp8_mma_kernelILi1ELi16ELb0ELb0ELb0ELb1EEEvNS2_"
                                     "9MmaParamsEi"),
            "gemv_fp8_mma_kernel<1, 16, false, false, false, true>");
  // A namespace inside the template arguments stays; the parameters' parentheses do not.
  EXPECT_EQ(mx8::kernel_display_name("_ZN3mx87backend9cuda_impl53_GLOBAL__N__a0215f22_20_attention_cluster_"
                                     "cu_9a47efcb24attention_cluster_kernelILNS0_8KvFormatE1ELi1EEEvPKhS6_"
                                     "NS1_6KvGeomENS1_10AttnParamsEPjNS1_5NewKvENS1_9CluParamsENS1_"
                                     "11ActQuantOutE"),
            "attention_cluster_kernel<(mx8::backend::KvFormat)1, 1>");
  EXPECT_EQ(mx8::kernel_display_name("_ZN3mx84cuda4test12_GLOBAL__N_116late_copy_kernelENS2_6CopiesEm"),
            "late_copy_kernel");
  // A name that does not demangle (cuBLASLt's are plain C names) is kept as it is.
  EXPECT_EQ(mx8::kernel_display_name("nvjet_sm90_tss_64x16_64x16_2x1_v_bz_TNT"),
            "nvjet_sm90_tss_64x16_64x16_2x1_v_bz_TNT");
  // A template kernel outside any namespace demangles with its return type, which goes too.
  EXPECT_EQ(mx8::kernel_display_name("_Z6kernelILi4EEvPf"), "kernel<4>");
  EXPECT_EQ(mx8::kernel_display_name(nullptr), "?");
}

}  // namespace
