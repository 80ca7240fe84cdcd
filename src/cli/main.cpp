// The mx8 command: builds the CLI11 tree from the registered subcommands and runs the chosen one.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/command.h"
#include "mx8/error.h"

namespace mx8::cli {

std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> registry;
  return registry;
}

}  // namespace mx8::cli

namespace {

// Finds or creates the CLI11 node for a space-separated command path.
CLI::App* node_for(CLI::App& root, std::map<std::string, CLI::App*>& nodes, const std::string& path,
                   const std::string& summary) {
  if (auto it = nodes.find(path); it != nodes.end()) {
    if (!summary.empty()) it->second->description(summary);
    return it->second;
  }
  size_t space = path.rfind(' ');
  CLI::App* parent = space == std::string::npos ? &root : node_for(root, nodes, path.substr(0, space), "");
  std::string name = space == std::string::npos ? path : path.substr(space + 1);
  CLI::App* app = parent->add_subcommand(name, summary);
  nodes[path] = app;
  return app;
}

// `mx8 bench gemm|quantize|gemv|decode --device cuda` (the form the benchmarks are asked for) is the
// CUDA benchmark of that name: the arguments are rewritten to `mx8 bench cuda-gemm|cuda-quantize|
// gemv-cuda|decode-cuda`, whose options then apply. `--device cpu` is the CPU benchmark as it is (there
// is no CPU GEMM benchmark; `bench gemm` alone means the GPU's).
std::vector<std::string> route_bench_device(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  if (args.size() < 3 || args[1] != "bench") return args;
  static const std::map<std::string, std::string> kCuda = {
      {"gemm", "cuda-gemm"}, {"quantize", "cuda-quantize"}, {"gemv", "gemv-cuda"}, {"decode", "decode-cuda"}};
  const auto target = kCuda.find(args[2]);
  if (target == kCuda.end()) return args;
  std::string device = args[2] == "gemm" ? "cuda" : "cpu";
  for (size_t i = 3; i < args.size(); ++i) {
    if (args[i] == "--device" && i + 1 < args.size()) {
      device = args[i + 1];
      args.erase(args.begin() + std::ptrdiff_t(i), args.begin() + std::ptrdiff_t(i) + 2);
      break;
    }
    if (args[i].rfind("--device=", 0) == 0) {
      device = args[i].substr(9);
      args.erase(args.begin() + std::ptrdiff_t(i));
      break;
    }
  }
  if (device == "cuda") {
    const auto& reg = mx8::cli::command_registry();
    if (std::none_of(reg.begin(), reg.end(), [&](auto& c) { return c.path == "bench " + target->second; }))
      throw mx8::Error("bench " + args[2] +
                       " --device cuda: this build has no CUDA backend (configure with "
                       "-DMX8_CUDA=ON)");
    args[2] = target->second;
  } else if (device != "cpu" || args[2] == "gemm") {
    throw mx8::Error(
        "bench " + args[2] + ": no benchmark for --device " + device +
        (args[2] == "gemm" ? " (the GEMM benchmark is the GPU's: --device cuda)" : " (cpu or cuda)"));
  }
  return args;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App root{"mx8: FP8 with power-of-two (UE8M0) scales for LLMs, on CPUs and NVIDIA Hopper"};
  root.require_subcommand(1);
  root.set_version_flag("--version", "mx8 0.1.0");

  auto& registry = mx8::cli::command_registry();
  std::sort(registry.begin(), registry.end(), [](auto& a, auto& b) { return a.path < b.path; });
  std::map<std::string, CLI::App*> nodes;
  std::vector<std::pair<CLI::App*, mx8::cli::CommandRun>> runs;
  for (auto& spec : registry) {
    CLI::App* app = node_for(root, nodes, spec.path, spec.summary);
    if (spec.setup) runs.emplace_back(app, spec.setup(*app));
  }
  for (auto& [path, app] : nodes)
    if (!app->get_subcommands({}).empty()) app->require_subcommand(1);

  std::vector<std::string> args;
  try {
    args = route_bench_device(argc, argv);
  } catch (const mx8::Error& e) {
    std::fprintf(stderr, "mx8: error: %s\n", e.what());
    return 1;
  }
  std::vector<char*> argp;
  for (std::string& a : args) argp.push_back(a.data());
  try {
    root.parse(int(argp.size()), argp.data());
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a command line that does not parse exits 2, as usage errors do by
    // convention (CLI11's own codes, 105 and up, say nothing a script can use), other errors 1.
    return root.exit(e) == 0 ? 0 : 2;
  }
  try {
    for (auto& [app, run] : runs) {
      if (app->parsed() && app->get_subcommands().empty()) {
        run();
        return 0;
      }
    }
  } catch (const mx8::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "mx8: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "mx8: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
