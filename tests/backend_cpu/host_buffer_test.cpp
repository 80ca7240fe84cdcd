// HostBuffer over the default Backend::alloc_host (the CPU backend's): 64-byte aligned, grows only
// when asked for more, keeps its pointer otherwise (the engine downloads every step's logits into it).
#include <gtest/gtest.h>

#include <cstdint>

#include "mx8/backend/host_buffer.h"

namespace {

using namespace mx8::backend;

TEST(HostBuffer, GrowsOnlyWhenAskedForMoreAndStaysAligned) {
  auto be = make_cpu_backend(1);
  HostBuffer<float> buf(*be);
  EXPECT_EQ(buf.data(), nullptr);
  EXPECT_EQ(buf.capacity(), 0u);
  float* a = buf.reserve(1000);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  for (int i = 0; i < 1000; ++i) a[i] = float(i);  // the whole range is writable (ASan checks it)
  EXPECT_EQ(buf.reserve(10), a);
  EXPECT_EQ(buf.reserve(1000), a);
  EXPECT_EQ(buf.capacity(), 1000u);
  float* b = buf.reserve(5000);
  EXPECT_EQ(buf.capacity(), 5000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  b[4999] = 1.0f;
}

}  // namespace
