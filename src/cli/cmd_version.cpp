// `mx8 version`: the version and what this binary was built with.
#include <cstdio>

#include "cli/command.h"
#include "cli/perf_report.h"

namespace {

void print_version() {
#ifdef MX8_HAVE_CUDA
  const char* cuda = "yes (sm_90a)";
#else
  const char* cuda = "no";
#endif
  std::printf("mx8 0.1.0\nCUDA backend: %s\nmachine: %s\n", cuda, mx8::cli::machine_description().c_str());
}

mx8::cli::CommandRegistration reg{"version", "Print the version, build options and this machine",
                                  [](CLI::App&) { return print_version; }};

}  // namespace
