// `splat codegen PATTERN --seq-len N --head-dim D [--dtype bf16|f16] [--arch sm_90] [--out FILE.cu]
// [--cubin FILE]`: prints or writes the CUDA source generated for the pattern's plan and, with --cubin,
// compiles it with NVRTC. Needs no GPU.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "args.hpp"
#include "commands.hpp"
#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "splat/pattern.hpp"

namespace splat::cli {
namespace {

const char* kUsage =
    "usage: splat codegen PATTERN --seq-len N --head-dim D [--dtype bf16|f16] [--arch sm_90] [--out FILE.cu] "
    "[--cubin FILE]\n"
    "  Generates the CUDA attention kernels specialised for PATTERN's plan and, with --cubin, compiles them\n"
    "  with NVRTC (no GPU needed). Without --out the source goes to stdout. --out and --cubin replace a\n"
    "  regular file atomically (a failed write leaves it untouched; exit 2). A head dim, dtype or arch the\n"
    "  generator does not support is a usage error (exit 2).\n";

// stdout is checked like a file: `splat codegen ... > /dev/full` is an error, not a silent loss.
void write_stdout(const std::string& text) {
  const bool ok = std::fwrite(text.data(), 1, text.size(), stdout) == text.size() && std::fflush(stdout) == 0;
  if (!ok || std::ferror(stdout)) fail(ErrorCode::Io, std::string("cannot write to stdout: ") + std::strerror(errno));
}
int run_codegen(const std::vector<std::string>& argv) {
  Args args("codegen", argv,
            {{"seq-len", true}, {"head-dim", true}, {"dtype", true}, {"arch", true}, {"out", true}, {"cubin", true}},
            1);
  if (args.help()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
#ifndef SPLAT_WITH_CUDA
  fail(ErrorCode::Unsupported, "splat codegen: this splat was built without the CUDA backend (NVRTC)");
#else
  const std::string spec = args.require_positional("PATTERN");
  const int64_t n = args.require_int("seq-len", 1, (int64_t(1) << 31) - 1);
  CudaPlanOptions o;
  o.head_dim = int(args.require_int("head-dim", 1, 4096));
  o.dtype = parse_dtype(args.get("dtype", "bf16"));
  o.arch = args.get("arch", "sm_90");
  // Outputs are refused up front (not a regular file, ...), written atomically (an existing file is
  // replaced only by a complete new one) and every write and the close are checked (ENOSPC, EFBIG).
  if (args.has("out")) check_output_target(args.get("out"));
  if (args.has("cubin")) check_output_target(args.get("cubin"));
  const Pattern p = parse_pattern(spec);
  validate_pattern(p, n);
  CodegenResult r;
  try {
    r = codegen_cuda(analyse(p, n), o, args.has("cubin"));
  } catch (const Error& e) {
    // The head dim, dtype and arch come from the command line: one the generator cannot serve is a
    // usage error here (exit 2), not a failure of splat.
    if (e.code() == ErrorCode::Unsupported) fail(ErrorCode::InvalidArgument, std::string("splat codegen: ") + e.what());
    throw;
  }
  if (args.has("out")) {
    write_file_atomic(args.get("out"), r.source.data(), r.source.size());
  } else {
    write_stdout(r.source);
  }
  for (const auto& s : r.specs) std::fprintf(stderr, "kernel %s\n", s.c_str());
  if (args.has("cubin")) {
    write_file_atomic(args.get("cubin"), r.cubin.data(), r.cubin.size());
    std::fprintf(stderr, "cubin %s: %zu bytes for %s (%s)\n", args.get("cubin").c_str(), r.cubin.size(), o.arch.c_str(),
                 r.log.c_str());
  }
  return 0;
#endif
}

const CommandRegistrar kRegister({"codegen", "generate (and compile with NVRTC) the CUDA kernels of a pattern",
                                  run_codegen});

}  // namespace
}  // namespace splat::cli
