// splat: the command-line front end. Dispatches to the registered subcommands and turns every
// failure into one line on stderr: exit 2 for usage/input errors (InvalidArgument, Io) and for out of
// memory, 1 otherwise.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "commands.hpp"
#include "splat/error.hpp"

namespace {

// Messages are printed on one line: a multi-line message (an NVRTC log, say) is joined with " | ".
// Other control bytes (a NUL from a file's header would end the C string early) are shown escaped.
std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::string out;
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += " | ";
    } else if (c == '\r') {
      continue;
    } else if (c == '\0') {
      out += "\\0";
    } else if ((u < 0x20 && c != '\t') || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(u));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

void print_help(FILE* to) {
  std::fprintf(to,
               "splat: sparse-regular (SPLAT) and low-rank + kernel (FLuRKA) attention\n\n"
               "usage: splat COMMAND [ARGS...]    (splat COMMAND --help for its options)\n\ncommands:\n");
  std::vector<splat::cli::Command> cmds = splat::cli::commands();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return std::string(a.name) < b.name; });
  for (const auto& c : cmds) std::fprintf(to, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(to,
               "\npatterns: dense, causal, window:w=W, causal_window:w=W, dilated:w=W,d=D, causal_dilated:w=W,d=D,\n"
               "  strided:s=S, fixed:l=L,c=C, blocked:b=B, global:g=G, sink:g=G, longformer:w=W,g=G,\n"
               "  bigbird:b=B,w=W,g=G,r=R,seed=S, mask:PATH.npy; A+B is the union, A&B the intersection.\n"
               "example: splat inspect 'causal_window:w=1024+sink:g=4' --seq-len 16384\n"
               "\nexit status: 0 ok; 1 a failed --check or an internal/GPU/compiler failure; 2 a usage or input\n"
               "  error, an unwritable output, or sizes that need more memory than there is (out of memory).\n"
               "  Sizes are >= 1: empty problems (N = 0, B = 0) are refused with exit 2.\n"
               "  An option's value is never empty; one that starts with '--' is written --option=--value.\n"
               "outputs (--out, --json, --png, --cubin) replace a regular file atomically or write through a\n"
               "  symlink to one; anything else (a directory, FIFO, socket, device such as /dev/null) is refused.\n");
}

// An allocation failed although the memory guard (runner.cpp) let the sizes through (other processes'
// memory, overcommit, a limit the guard cannot see). Exit 2, as for the guard's own refusal: the
// sizes asked for more memory than there is; smaller ones work.
int out_of_memory() {
  std::fprintf(stderr, "splat: error: out of memory (an allocation failed: use smaller sizes or fewer threads)\n");
  return 2;
}

int usage_error(const std::string& what) {
  std::fprintf(stderr, "splat: error: %s\n", one_line(what).c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Past a file size limit, write() should fail (and we report it) rather than kill the process.
  std::signal(SIGXFSZ, SIG_IGN);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_help(stdout);
    return 0;
  }
  if (args[0] == "--version") {
    std::printf("splat 0.1.0\n");
    return 0;
  }
  const splat::cli::Command* cmd = nullptr;
  for (const auto& c : splat::cli::commands())
    if (args[0] == c.name) cmd = &c;
  if (!cmd) return usage_error("unknown command '" + args[0] + "' (see splat --help)");
  try {
    return cmd->run(std::vector<std::string>(args.begin() + 1, args.end()));
  } catch (const splat::Error& e) {
    const bool usage = e.code() == splat::ErrorCode::InvalidArgument || e.code() == splat::ErrorCode::Io;
    std::fprintf(stderr, "splat: error: %s\n", one_line(e.what()).c_str());
    return usage ? 2 : 1;
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  } catch (const std::length_error&) {  // a container asked for more than it can hold: the same cause
    return out_of_memory();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "splat: internal error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
