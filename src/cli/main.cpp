// The mx8 command: builds the CLI11 tree from the registered subcommands and runs the chosen one.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>

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

  try {
    root.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return root.exit(e);
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
