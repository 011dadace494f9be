// The CLI's command registry. Each cmd_*.cpp registers its subcommand with a static
// CommandRegistrar, so areas (core, cuda, flurka) add commands without touching main.cpp.
#pragma once
#include <string>
#include <vector>

namespace splat::cli {

// Return value is the process exit code. Usage/input errors: throw splat::Error(InvalidArgument/Io)
// (main prints one line on stderr and exits 2) or return 2 after printing the message yourself.
using CommandFn = int (*)(const std::vector<std::string>& args);

struct Command {
  const char* name;
  const char* summary;  // one line for `splat --help`
  CommandFn run;
};

void register_command(const Command& c);
const std::vector<Command>& commands();

struct CommandRegistrar {
  explicit CommandRegistrar(const Command& c) { register_command(c); }
};

}  // namespace splat::cli
