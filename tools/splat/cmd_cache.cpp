// `splat cache info|clear`: the on-disk kernel cache ($SPLAT_CACHE_DIR, else $XDG_CACHE_HOME/splat,
// else ~/.cache/splat).
#include <cstdio>

#include "args.hpp"
#include "commands.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"

namespace splat::cli {
namespace {

const char* kUsage =
    "usage: splat cache info|clear\n"
    "  info: the kernel cache directory, its entries and bytes; clear: removes the cached kernels.\n";

int run_cache(const std::vector<std::string>& argv) {
  Args args("cache", argv, {}, 1);
  if (args.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
#ifndef SPLAT_WITH_CUDA
  fail(ErrorCode::Unsupported, "splat cache: this splat was built without the CUDA backend");
#else
  const std::string verb = args.require_positional("info|clear");
  if (verb == "info") {
    const CacheInfo c = kernel_cache_info();
    std::printf("directory %s\nentries %lld\nbytes %lld\n", c.directory.c_str(), static_cast<long long>(c.entries),
                static_cast<long long>(c.bytes));
    return 0;
  }
  if (verb == "clear") {
    const CacheInfo before = kernel_cache_info();
    kernel_cache_clear();
    std::printf("removed %lld entries (%lld bytes) from %s\n", static_cast<long long>(before.entries),
                static_cast<long long>(before.bytes), before.directory.c_str());
    return 0;
  }
  fail(ErrorCode::InvalidArgument, "splat cache: expected 'info' or 'clear', got '" + verb + "'");
#endif
}

const CommandRegistrar kRegister({"cache", "show or clear the CUDA kernel cache", run_cache});

}  // namespace
}  // namespace splat::cli
