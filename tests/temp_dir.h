#pragma once
// A folder of the test's own under the system's temporary folder, removed with everything in it when
// the TempDir goes out of scope (also when the test fails), so that tests run at once do not collide
// and a run leaves nothing behind.

#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>

namespace mx8::test {

class TempDir {
 public:
  TempDir() : path(make()) {}
  ~TempDir() {
    std::error_code ignored;  // a destructor must not throw; a leftover folder is not a failure
    std::filesystem::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // The path of `name` inside the folder, as the string the APIs under test take.
  std::string operator/(const std::string& name) const { return (path / name).string(); }

  const std::filesystem::path path;

 private:
  static std::filesystem::path make() {
    // mkdtemp's template: it replaces the trailing six X's with a suffix no other folder has.
    std::string pattern = (std::filesystem::temp_directory_path() / "mx8_test_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
    return pattern;
  }
};

}  // namespace mx8::test
