// The command registry (see commands.hpp). A function-local static, so registrars in other
// translation units may run in any static-initialisation order.
#include "commands.hpp"

namespace splat::cli {

static std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}

void register_command(const Command& c) {
  registry().push_back(c);
}
const std::vector<Command>& commands() {
  return registry();
}

}  // namespace splat::cli
