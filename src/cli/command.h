// Subcommand registry for the mx8 executable. Each subcommand lives in its own cmd_*.cpp and
// registers itself with a static CommandRegistration, so adding one edits no shared file:
//
//   static mx8::cli::CommandRegistration reg{"bench quantize", "CPU quantize throughput",
//       [](CLI::App& app) { /* add options */ return [=] { /* run; throw mx8::Error on bad input */ }; }};
//
// A path with a space ("bench quantize") nests under its parent; the parent needs no registration
// of its own, but may register one to set its summary.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace mx8::cli {

using CommandRun = std::function<void()>;
// Adds options to `app` (already created with the command's name and summary) and returns what
// to run when the command is chosen. Options bound to variables must outlive the call: capture
// shared_ptrs or static storage in the returned function.
using CommandSetup = std::function<CommandRun(CLI::App& app)>;

struct CommandSpec {
  std::string path;
  std::string summary;
  CommandSetup setup;
};

std::vector<CommandSpec>& command_registry();

struct CommandRegistration {
  CommandRegistration(std::string path, std::string summary, CommandSetup setup) {
    command_registry().push_back({std::move(path), std::move(summary), std::move(setup)});
  }
};

}  // namespace mx8::cli
