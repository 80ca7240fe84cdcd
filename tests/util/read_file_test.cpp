// read_file: a whole file's bytes, or an error that names the path and says what is wrong with it.
#include "mx8/util/read_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mx8/error.h"

namespace fs = std::filesystem;

namespace {

std::string error_of(const fs::path& p) {
  try {
    mx8::read_file(p);
  } catch (const mx8::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(ReadFile, BytesAsTheyAreAndClearErrors) {
  const fs::path dir = fs::temp_directory_path() / ("mx8_read_file_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string bytes("a\0b\r\n\xff", 6);
  std::ofstream(dir / "f.bin", std::ios::binary) << bytes;
  std::ofstream(dir / "empty.bin", std::ios::binary);
  EXPECT_EQ(mx8::read_file(dir / "f.bin"), bytes);
  EXPECT_EQ(mx8::read_file(dir / "empty.bin"), "");
  EXPECT_EQ(error_of(dir), dir.string() + ": is a folder, not a file");
  EXPECT_EQ(error_of(dir / "missing"), (dir / "missing").string() + ": cannot open for reading");
  fs::remove_all(dir);
}

}  // namespace
