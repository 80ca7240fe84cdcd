// The converter's progress line: byte counts in decimal units, nothing drawn when disabled, at most
// one redraw per 100 ms, a full bar and a newline at the end, and a newline when an error unwinds
// past an unfinished bar (so the error starts on its own line).
#include "convert/progress.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

using mx8::convert::human_bytes;
using mx8::convert::Progress;

TEST(Progress, HumanBytesUseDecimalUnits) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(999), "999 B");
  EXPECT_EQ(human_bytes(1000), "1.00 KB");
  EXPECT_EQ(human_bytes(1500000), "1.50 MB");
  EXPECT_EQ(human_bytes(16.06e9), "16.06 GB");
  EXPECT_EQ(human_bytes(2e12), "2.00 TB");
  EXPECT_EQ(human_bytes(3e15), "3000.00 TB");  // TB is the largest unit
}

TEST(Progress, DisabledDrawsNothing) {
  testing::internal::CaptureStderr();
  {
    Progress p(false, 100, "convert");
    p.add(50);
    std::this_thread::sleep_for(std::chrono::milliseconds(110));
    p.add(50);
    p.finish();
  }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST(Progress, RedrawsAfter100MsAndEndsWithAFullBar) {
  testing::internal::CaptureStderr();
  {
    Progress p(true, 4000, "convert mxfp8");
    p.add(1000);  // within 100 ms of the start: not drawn
    std::this_thread::sleep_for(std::chrono::milliseconds(110));
    p.add(1000);  // drawn: half done
    p.finish();
    p.finish();  // once only (the final line shows the total, whatever was added)
  }
  const std::string out = testing::internal::GetCapturedStderr();
  const std::string half =
      "\rconvert mxfp8 [" + std::string(15, '#') + std::string(15, '.') + "]  50.0% 2.00 KB/4.00 KB  ";
  const std::string full = "\rconvert mxfp8 [" + std::string(30, '#') + "] 100.0% 4.00 KB/4.00 KB  ";
  const size_t at_half = out.find(half), at_full = out.find(full);
  ASSERT_NE(at_half, std::string::npos) << out;
  ASSERT_NE(at_full, std::string::npos) << out;
  EXPECT_EQ(at_half, 0u) << out;  // nothing drawn before it
  EXPECT_LT(at_half, at_full);
  EXPECT_EQ(out.find('\r', at_half + 1), at_full) << out;  // no draw between them
  // The half-way line has a rate, so an ETA ("--" is for no rate yet).
  EXPECT_EQ(out.find("ETA --"), std::string::npos) << out;
  EXPECT_EQ(out.substr(out.size() - 12), "ETA 0:00   \n");
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;  // one newline, at the end
}

TEST(Progress, AnUnfinishedBarEndsItsLineWhenDestroyed) {
  testing::internal::CaptureStderr();
  { Progress p(true, 10, "convert"); }
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "\n");
}

// An empty conversion (no bytes to move) shows a full bar, not a division by zero.
TEST(Progress, AnEmptyJobShowsAFullBar) {
  testing::internal::CaptureStderr();
  {
    Progress p(true, 0, "convert");
    p.finish();
  }
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("[" + std::string(30, '#') + "] 100.0% 0 B/0 B  0 B/s  ETA 0:00"), std::string::npos)
      << out;
}
