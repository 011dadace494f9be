#include "jit/nvrtc_compile.hpp"

#include <nvrtc.h>

#include <cctype>

#include "jit/embedded.hpp"
#include "jit/hash.hpp"
#include "jit/kernel_cache.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"  // write_file_atomic

namespace splat::jit {

void check_arch(const std::string& arch) {
  bool ok = arch.size() >= 5 && arch.compare(0, 3, "sm_") == 0;
  for (size_t i = 3; ok && i < arch.size(); ++i)
    ok = std::isdigit(static_cast<unsigned char>(arch[i])) || (i + 1 == arch.size() && arch[i] == 'a');
  if (!ok) fail(ErrorCode::InvalidArgument, "invalid CUDA arch '" + arch + "' (expected e.g. sm_80, sm_90)");
  if (std::stoi(arch.substr(3)) < 80)
    fail(ErrorCode::Unsupported, "CUDA arch " + arch + " is not supported: the kernels need sm_80 or newer");
}

std::vector<std::string> nvrtc_options(const std::string& arch) {
  return {"--gpu-architecture=" + arch, "-std=c++17", "-DNDEBUG"};
}

std::string nvrtc_version() {
  int major = 0, minor = 0;
  if (nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return "unknown";
  return std::to_string(major) + "." + std::to_string(minor);
}

namespace {
std::string save_failed_source(const std::string& source) {
  Hasher h;
  h.field(source);
  const std::string path = cache_directory() + "/failed-" + h.hex() + ".cu";
  try {
    ensure_directory(cache_directory());
    write_file_atomic(path, source.data(), source.size());  // checked writes, never a half file, regular files only
    return path;
  } catch (const Error&) {
  }
  return "(could not save source)";
}
}  // namespace

NvrtcOutput nvrtc_compile(const std::string& source, const std::string& arch) {
  check_arch(arch);
  std::vector<const char*> names, texts;
  for (int i = 0; i < kEmbeddedHeaderCount; ++i) {
    names.push_back(kEmbeddedHeaders[i].name);
    texts.push_back(kEmbeddedHeaders[i].text);
  }
  nvrtcProgram prog = nullptr;
  nvrtcResult rc =
      nvrtcCreateProgram(&prog, source.c_str(), "splat_generated.cu", int(names.size()), texts.data(), names.data());
  if (rc != NVRTC_SUCCESS) fail(ErrorCode::Jit, std::string("nvrtcCreateProgram: ") + nvrtcGetErrorString(rc));
  const std::vector<std::string> opts = nvrtc_options(arch);
  std::vector<const char*> copts;
  for (const auto& o : opts) copts.push_back(o.c_str());
  rc = nvrtcCompileProgram(prog, int(copts.size()), copts.data());
  NvrtcOutput out;
  size_t log_size = 0;
  if (nvrtcGetProgramLogSize(prog, &log_size) == NVRTC_SUCCESS && log_size > 1) {
    out.log.resize(log_size);
    nvrtcGetProgramLog(prog, out.log.data());
    out.log.resize(log_size - 1);
  }
  if (rc != NVRTC_SUCCESS) {
    nvrtcDestroyProgram(&prog);
    fail(ErrorCode::Jit, std::string("NVRTC failed to compile the generated kernel for ") + arch + " (" +
                             nvrtcGetErrorString(rc) + "); source saved to " + save_failed_source(source) + "\n" +
                             out.log);
  }
  size_t size = 0;
  rc = nvrtcGetCUBINSize(prog, &size);
  if (rc == NVRTC_SUCCESS && size > 0) {
    out.cubin.resize(size);
    rc = nvrtcGetCUBIN(prog, out.cubin.data());
  }
  nvrtcDestroyProgram(&prog);
  if (rc != NVRTC_SUCCESS || out.cubin.empty())
    fail(ErrorCode::Jit, "NVRTC produced no cubin for " + arch + ": " + nvrtcGetErrorString(rc));
  return out;
}

}  // namespace splat::jit
