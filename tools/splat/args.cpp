#include "args.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "splat/error.hpp"

namespace splat::cli {

Args::Args(std::string command, const std::vector<std::string>& argv, const std::vector<OptionSpec>& options,
           size_t positional_max)
    : command_(std::move(command)) {
  const std::string where = "splat " + command_ + ": ";
  for (size_t a = 0; a < argv.size(); ++a) {
    const std::string& arg = argv[a];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    if (arg.size() > 2 && arg.compare(0, 2, "--") == 0) {
      std::string name = arg.substr(2), value;
      const size_t eq = name.find('=');
      const bool inline_value = eq != std::string::npos;
      if (inline_value) value = name.substr(eq + 1), name = name.substr(0, eq);
      const OptionSpec* spec = nullptr;
      for (const auto& o : options)
        if (name == o.name) spec = &o;
      require(spec != nullptr, where + "unknown option '--" + name + "' (see splat " + command_ + " --help)");
      require(!values_.count(name), where + "option '--" + name + "' given twice");
      if (spec->takes_value && !inline_value) {
        require(a + 1 < argv.size(), where + "option '--" + name + "' needs a value");
        // `--out --check` is a forgotten value, not a file named --check: such values need --out=--check.
        require(argv[a + 1].compare(0, 2, "--") != 0,
                where + "option '--" + name + "' needs a value, got the option '" + argv[a + 1] +
                    "' (a value starting with '--' is written --" + name + "=VALUE)");
        value = argv[++a];
      }
      require(spec->takes_value || !inline_value, where + "option '--" + name + "' takes no value");
      require(!spec->takes_value || !value.empty(), where + "option '--" + name + "' needs a non-empty value");
      values_[name] = value;
      continue;
    }
    require(arg.size() < 2 || arg[0] != '-' || (arg[1] >= '0' && arg[1] <= '9'),
            where + "unknown option '" + arg + "' (see splat " + command_ + " --help)");
    require(positional_.size() < positional_max, where + "unexpected argument '" + arg + "'");
    positional_.push_back(arg);
  }
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

int64_t parse_int(const std::string& what, const std::string& text, int64_t min, int64_t max) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  const bool whole =
      !text.empty() && end == text.c_str() + text.size() && text.find_first_of(" \t") == std::string::npos;
  require(whole, what + " must be an integer, got '" + text + "'");
  require(errno != ERANGE && v >= min && v <= max,
          what + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + text);
  return v;
}

int64_t Args::get_int(const std::string& name, int64_t fallback, int64_t min, int64_t max) const {
  if (!has(name)) return fallback;
  return parse_int("splat " + command_ + ": --" + name, get(name), min, max);
}

int64_t Args::require_int(const std::string& name, int64_t min, int64_t max) const {
  require(has(name), "splat " + command_ + ": --" + name + " is required");
  return get_int(name, 0, min, max);
}

double Args::get_double(const std::string& name, double fallback, double min, double max) const {
  if (!has(name)) return fallback;
  const std::string text = get(name);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  require(!text.empty() && end == text.c_str() + text.size() && std::isfinite(v) && v >= min && v <= max,
          "splat " + command_ + ": --" + name + " must be a number in [" + std::to_string(min) + ", " +
              std::to_string(max) + "], got '" + text + "'");
  return v;
}

const std::string& Args::require_positional(const std::string& what) const {
  require(!positional_.empty(), "splat " + command_ + ": missing " + what + " (see splat " + command_ + " --help)");
  return positional_[0];
}

}  // namespace splat::cli
