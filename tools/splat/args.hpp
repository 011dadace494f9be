// Command-line parsing for splat's subcommands: `--flag VALUE`, `--flag=VALUE`, boolean `--flag`, and
// positional arguments. Every problem is an Error(InvalidArgument) whose message names the option.
// A value is never empty, and `--flag VALUE` never takes a VALUE that starts with "--" (that is the
// next option: a forgotten value); such a value must be written `--flag=--VALUE`.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace splat::cli {

struct OptionSpec {
  const char* name;  // without the leading "--"
  bool takes_value;
};

class Args {
 public:
  // Parses argv (the arguments after the subcommand name). positional_max: how many positionals at most.
  Args(std::string command, const std::vector<std::string>& argv, const std::vector<OptionSpec>& options,
       size_t positional_max);

  bool help() const { return help_; }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const;
  // Integer in [min, max]; missing -> fallback (which need not be in range: e.g. 0 meaning "unset").
  int64_t get_int(const std::string& name, int64_t fallback, int64_t min, int64_t max) const;
  double get_double(const std::string& name, double fallback, double min, double max) const;
  // Like get_int but the option must be given.
  int64_t require_int(const std::string& name, int64_t min, int64_t max) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // The one positional argument `what` (e.g. "PATTERN"); error if missing.
  const std::string& require_positional(const std::string& what) const;
  const std::string& command() const { return command_; }

 private:
  std::string command_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// Parses a whole decimal integer (no trailing characters) or throws naming `what`.
int64_t parse_int(const std::string& what, const std::string& text, int64_t min, int64_t max);

}  // namespace splat::cli
