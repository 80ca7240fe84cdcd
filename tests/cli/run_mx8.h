// Runs the mx8 executable built beside a CLI test (tests skip without it).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace mx8::test {

inline std::string mx8_exe() {
  char self[4096] = {};
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "";
  return (std::filesystem::path(std::string(self, size_t(n))).parent_path() / "mx8").string();
}

// The shell words that start it: the quoted path, behind the emulator of a cross build (CMake's
// CMAKE_CROSSCOMPILING_EMULATOR, e.g. qemu-aarch64), which the kernel may not know how to start.
inline std::string mx8_command() {
#ifdef MX8_TEST_EMULATOR
  return std::string(MX8_TEST_EMULATOR) + " '" + mx8_exe() + "'";
#else
  return "'" + mx8_exe() + "'";
#endif
}

// The standard output of the shell command `command`, and its exit status.
inline std::string run_shell(const std::string& command, int* status) {
  FILE* p = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = p ? pclose(p) : -1;
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

// stdout and stderr of `mx8 args`, and its exit status.
inline std::string run(const std::string& args, int* status) {
  return run_shell(mx8_command() + " " + args + " 2>&1", status);
}

// Standard output alone of `mx8 args` (standard error dropped), and its exit status.
inline std::string run_stdout(const std::string& args, int* status) {
  return run_shell(mx8_command() + " " + args + " 2>/dev/null", status);
}

}  // namespace mx8::test
