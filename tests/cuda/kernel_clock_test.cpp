// KernelClock (the benchmarks' kernel times and decode-cuda's timeline) against kernels whose length the
// GPU's own timer sets.
#include "backend/cuda/kernel_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "cuda/cuda_test_util.h"
#include "cuda/late_copy.h"

namespace mx8::cuda {
namespace {

// A kernel that spins `us` microseconds of the GPU's global timer, then ends.
void spin(int us, cudaStream_t s = nullptr) {
  test::launch_late_copies({}, us, s);
}

// The spin waits until the global timer has advanced by its length (it polls with 1 us sleeps), so a
// kernel's duration is at least that and at most that plus its start and end on the GPU and the
// timer's update interval: 30 us leaves room for all three and still fails a clock that counts a
// 100 us neighbour or gap.
constexpr double kSlackUs = 30;

class KernelClockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MX8_REQUIRE_GPU();
    std::string why;
    clock = KernelClock::get(&why);
    // The benchmarks print n/a then; libcupti ships with the CUDA toolkit, not with the driver.
    if (!clock) GTEST_SKIP() << "no kernel clock here: " << why;
    // Nor while a profiler or compute-sanitizer holds CUPTI.
    if (std::isnan(clock->busy_us([] { spin(1); }, &why)) && !why.empty())
      GTEST_SKIP() << "no kernel tracing here: " << why;
  }
  KernelClock* clock = nullptr;
};

TEST_F(KernelClockTest, TimesOneKernel) {
  const double us = clock->busy_us([] { spin(200); });
  EXPECT_GE(us, 200.0);
  EXPECT_LE(us, 200.0 + kSlackUs);
}

TEST_F(KernelClockTest, SumsTheKernelsOfTheCallWithoutTheGapsBetweenThem) {
  const double serial = clock->busy_us([] {
    spin(100);
    spin(100);
  });
  EXPECT_GE(serial, 200.0);
  EXPECT_LE(serial, 200.0 + 2 * kSlackUs);
  // The host waits 300 us between the two launches: the GPU idles, and that is not kernel time.
  const double gap = clock->busy_us([] {
    spin(100);
    MX8_CUDA_CHECK(cudaDeviceSynchronize());
    std::this_thread::sleep_for(std::chrono::microseconds(300));
    spin(100);
  });
  EXPECT_GE(gap, 200.0);
  EXPECT_LE(gap, 200.0 + 2 * kSlackUs);
}

TEST_F(KernelClockTest, LeavesOutWhatRanBeforeTheCall) {
  spin(300);  // queued before: waited for, not counted
  const double us = clock->busy_us([] { spin(50); });
  EXPECT_GE(us, 50.0);
  EXPECT_LE(us, 50.0 + kSlackUs);
  // And nothing of one call leaks into the next.
  (void)clock->busy_us([] { spin(300); });
  const double next = clock->busy_us([] { spin(50); });
  EXPECT_LE(next, 50.0 + kSlackUs);
}

TEST_F(KernelClockTest, SpansNameEachKernelByLaunchShapeInOrderOfStart) {
  const std::vector<Span> spans = clock->spans([] {
    spin(100);
    spin(50);
  });
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].name, "1x256 late_copy_kernel");  // 1 block of 256 threads; no namespaces, no parameters
  EXPECT_EQ(spans[1].name, spans[0].name);
  EXPECT_LE(spans[0].end_ns, spans[1].start_ns);  // one stream, no dependent launch: one after the other
  const double first = double(spans[0].end_ns - spans[0].start_ns) * 1e-3,
               second = double(spans[1].end_ns - spans[1].start_ns) * 1e-3;
  EXPECT_GE(first, 100.0);
  EXPECT_LE(first, 100.0 + kSlackUs);
  EXPECT_GE(second, 50.0);
  EXPECT_LE(second, 50.0 + kSlackUs);
  // Nothing of one call is kept for the next.
  EXPECT_EQ(clock->spans([] { spin(10); }).size(), 1u);
}

TEST_F(KernelClockTest, NoKernelIsNaN) {
  EXPECT_TRUE(std::isnan(clock->busy_us([] {})));
}

}  // namespace
}  // namespace mx8::cuda
