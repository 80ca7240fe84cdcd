#include "mx8/util/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "mx8/error.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using mx8::test::TempDir;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(AtomicFile, CommitReplacesOldContents) {
  TempDir tmp;
  const fs::path& dir = tmp.path;
  fs::path target = dir / "out.bin";
  mx8::write_file_atomically(target, "old");
  mx8::write_file_atomically(target, "new contents");
  EXPECT_EQ(read_all(target), "new contents");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1);
}

TEST(AtomicFile, AbandonedWriteLeavesOldFileAndNoTemporary) {
  TempDir tmp;
  const fs::path& dir = tmp.path;
  fs::path target = dir / "out.bin";
  mx8::write_file_atomically(target, "old");
  {
    mx8::AtomicFile file(target);
    file.write("half of the new");
    EXPECT_TRUE(fs::exists(file.temp_path()));
  }  // destroyed without commit, as when an exception unwinds
  EXPECT_EQ(read_all(target), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1);
}

TEST(AtomicFile, UnwritableFolderIsAClearError) {
  try {
    mx8::AtomicFile file("/nonexistent-folder-mx8/out.bin");
    FAIL() << "expected mx8::Error";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-folder-mx8/out.bin"), std::string::npos);
  }
}

TEST(AtomicFile, CountsWhatItWroteAndRefusesUseAfterCommit) {
  TempDir tmp;
  const fs::path& dir = tmp.path;
  mx8::AtomicFile file(dir / "out.bin");
  file.write("abc");
  file.write("", 0);
  file.write("defg");
  EXPECT_EQ(file.bytes_written(), 7u);
  file.commit();
  EXPECT_EQ(read_all(dir / "out.bin"), "abcdefg");
  try {
    file.write("more");
    FAIL() << "a write after commit was accepted";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("after commit"), std::string::npos) << e.what();
  }
  try {
    file.commit();
    FAIL() << "a second commit was accepted";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("twice"), std::string::npos) << e.what();
  }
}

// The rename is the step that can fail after all the bytes are written (here: a folder holds the name).
// The error names both paths, and neither the temporary nor a change to the folder is left behind.
TEST(AtomicFile, AFailedRenameRemovesTheTemporary) {
  TempDir tmp;
  const fs::path& dir = tmp.path;
  fs::create_directories(dir / "taken" / "inside");
  mx8::AtomicFile file(dir / "taken");
  file.write("contents");
  const std::string temp = file.temp_path();
  try {
    file.commit();
    FAIL() << "renamed a file over a folder";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename " + temp + " to " + (dir / "taken").string()),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_TRUE(fs::is_directory(dir / "taken" / "inside"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 1);
}

}  // namespace
