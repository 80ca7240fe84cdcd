// The benchmarks' TMA streaming read (tma_read_once): the memory floor it stands for is only right if it
// loads every byte of the matrix once, whatever the box height, K split and ragged last box.
#include "backend/cuda/bench_util.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "mx8/error.h"

namespace mx8::cuda {
namespace {

using test::DeviceBuffer;
using test::fresh_seed;

// XOR of the 32-bit words of random bytes: a box skipped or loaded twice changes it except with
// probability 2^-32 per such box, so an exact comparison is the test.
TEST(CudaTmaRead, LoadsEveryByteOnce) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  struct Case {
    int rows, cols, box_rows, splits;
  };
  // One box; a ragged last box (333 = 5 x 64 + 13) over a K split of 3 with a remainder (16 K blocks);
  // 192-row boxes (the 64x192 tile's B) over 4 parts; more tiles than SMs (units dealt in rounds).
  for (const Case c :
       {Case{64, 128, 64, 1}, Case{333, 2048, 64, 3}, Case{1000, 1536, 192, 4}, Case{16640, 256, 16, 1}}) {
    SCOPED_TRACE(std::to_string(c.rows) + " x " + std::to_string(c.cols) + " boxes of " +
                 std::to_string(c.box_rows) + " over " + std::to_string(c.splits));
    std::vector<uint32_t> words(size_t(c.rows) * c.cols / 4);
    uint32_t expect = 0;
    for (uint32_t& w : words) expect ^= (w = rng());
    DeviceBuffer<uint32_t> m(words.size()), sum(1);
    m.upload(words);
    sum.upload({0});
    tma_read_once(m.get(), c.rows, c.cols, c.box_rows, c.splits, sum.get(), nullptr);
    EXPECT_EQ(sum.download()[0], expect);
  }
}

TEST(CudaTmaRead, RejectsWhatTmaBoxesCannotRead) {
  EXPECT_THROW(tma_read_once(nullptr, 64, 200, 64, 1, nullptr, nullptr), mx8::Error);   // cols % 128
  EXPECT_THROW(tma_read_once(nullptr, 64, 256, 300, 1, nullptr, nullptr), mx8::Error);  // box > 256 rows
  EXPECT_THROW(tma_read_once(nullptr, 64, 256, 64, 3, nullptr, nullptr),
               mx8::Error);  // 3 parts of 2 K blocks
}

}  // namespace
}  // namespace mx8::cuda
