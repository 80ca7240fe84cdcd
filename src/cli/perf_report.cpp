#include "cli/perf_report.h"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "mx8/util/atomic_file.h"

namespace mx8::cli {

std::string machine_description() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0 || line.rfind("Model", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " hardware threads";
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  double one = 0, five = 0, fifteen = 0;
  if (!(in >> one >> five >> fifteen)) return "unknown";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", one, five, fifteen);
  return buf;
}

std::string today_utc() {
  std::time_t now = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&now));
  return buf;
}

std::string fmt(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

void update_doc_section(const std::string& path, const std::string& id, const std::string& markdown,
                        const std::string& heading) {
  std::string text;
  {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  if (text.empty()) text = heading;
  const std::string open = "<!-- " + id + " -->", close = "<!-- /" + id + " -->";
  std::string section = open + "\n" + markdown + (markdown.ends_with('\n') ? "" : "\n") + close;
  size_t begin = text.find(open), end = text.find(close);
  if (begin != std::string::npos && end != std::string::npos && end > begin) {
    text.replace(begin, end + close.size() - begin, section);
  } else {
    if (!text.ends_with('\n')) text += '\n';
    text += "\n" + section + "\n";
  }
  write_file_atomically(path, text);
}

void update_perf_section(const std::string& perf_md_path, const std::string& id,
                         const std::string& markdown) {
  update_doc_section(perf_md_path, "bench:" + id, markdown,
                     "# mx8 performance\n\nEvery section below is written by the benchmark it names.\n");
}

std::string default_perf_md_path() {
  return std::string(MX8_SOURCE_DIR) + "/docs/PERF.md";
}

void PerfMdTarget::add_options(CLI::App& app) {
  app.add_option("--perf-md", file, "the PERF.md to update (default: the source tree's docs/PERF.md)");
  app.add_flag("!--no-perf-md", write, "print only; leave PERF.md alone");
}

}  // namespace mx8::cli
