// Benchmarks print tables and also keep docs/PERF.md current. Each benchmark owns one section of
// that file, delimited by HTML comments, so benchmarks written by different people never clobber
// one another:  <!-- bench:ID -->  ...  <!-- /bench:ID -->
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace mx8::cli {

// printf-style formatting of one number, for table cells ("%.1f").
std::string fmt(const char* format, double v);
// One line naming the machine: CPU model, cores visible, and (when known) the GPU.
std::string machine_description();
// The 1-, 5- and 15-minute load averages of /proc/loadavg ("unknown" where there is none): benchmarks
// record it, since other work on the same cores lowers wall-clock figures.
std::string load_average();
// Today's date as YYYY-MM-DD (UTC).
std::string today_utc();
// Replaces (or appends) the section of `path` between <!-- ID --> and <!-- /ID --> with `markdown`,
// atomically; a file that does not exist yet starts with `heading`.
void update_doc_section(const std::string& path, const std::string& id, const std::string& markdown,
                        const std::string& heading);
// Replaces (or appends) section `id` of `perf_md_path` with `markdown`, atomically.
void update_perf_section(const std::string& perf_md_path, const std::string& id, const std::string& markdown);
// The default docs/PERF.md of the source tree this binary was built from.
std::string default_perf_md_path();

// Where a benchmark writes its section: --perf-md FILE (default: the source tree's docs/PERF.md), or
// nowhere with --no-perf-md. Every benchmark that keeps a section takes these two options.
struct PerfMdTarget {
  bool write = true;
  std::string file;
  void add_options(CLI::App& app);
  std::string path() const { return file.empty() ? default_perf_md_path() : file; }
};

}  // namespace mx8::cli
