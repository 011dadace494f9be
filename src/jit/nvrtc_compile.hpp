// NVRTC: compiles generated source (with the embedded device headers) to a cubin for one arch.
#pragma once
#include <string>
#include <vector>

namespace splat::jit {

struct NvrtcOutput {
  std::vector<char> cubin;
  std::string log;
};

// arch: "sm_80", "sm_90", ... (>= sm_80). Throws Error(InvalidArgument) for a malformed arch and
// Error(Jit) with the NVRTC log and the path of the saved source when compilation fails.
NvrtcOutput nvrtc_compile(const std::string& source, const std::string& arch);
std::vector<std::string> nvrtc_options(const std::string& arch);
std::string nvrtc_version();  // e.g. "13.0"
void check_arch(const std::string& arch);

}  // namespace splat::jit
