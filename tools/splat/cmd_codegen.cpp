// `splat codegen PATTERN --seq-len N --head-dim D [--dtype bf16|f16] [--arch sm_90] [--out FILE.cu]
// [--cubin FILE]`: prints or writes the CUDA source generated for the pattern's plan and, with --cubin,
// compiles it with NVRTC. Needs no GPU.
#include <cstdio>
#include <fstream>

#include "args.hpp"
#include "commands.hpp"
#include "splat/acsr.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace splat::cli {
namespace {

const char* kUsage =
    "usage: splat codegen PATTERN --seq-len N --head-dim D [--dtype bf16|f16] [--arch sm_90] [--out FILE.cu] "
    "[--cubin FILE]\n"
    "  Generates the CUDA attention kernels specialised for PATTERN's plan and, with --cubin, compiles them\n"
    "  with NVRTC (no GPU needed). Without --out the source goes to stdout.\n";

void write_file(const std::string& path, const char* data, size_t n) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data, std::streamsize(n));
  if (!f) fail(ErrorCode::Io, "cannot write " + path);
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
  const Pattern p = parse_pattern(spec);
  validate_pattern(p, n);
  const CodegenResult r = codegen_cuda(analyse(p, n), o, args.has("cubin"));
  if (args.has("out")) {
    write_file(args.get("out"), r.source.data(), r.source.size());
  } else {
    std::fputs(r.source.c_str(), stdout);
  }
  for (const auto& s : r.specs) std::fprintf(stderr, "kernel %s\n", s.c_str());
  if (args.has("cubin")) {
    write_file(args.get("cubin"), r.cubin.data(), r.cubin.size());
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
