#include "jit/kernel_cache.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>

#include "jit/embedded.hpp"
#include "jit/hash.hpp"
#include "jit/nvrtc_compile.hpp"
#include "splat/cuda.hpp"
#include "splat/error.hpp"
#include "splat/npy.hpp"  // write_file_atomic

namespace splat::jit {

namespace fs = std::filesystem;

namespace {
constexpr char kMagic[8] = {'S', 'P', 'L', 'A', 'T', 'K', 'C', '1'};
constexpr size_t kHeader = 8 + 8 + 8;

std::mutex g_mutex;
std::map<std::string, std::vector<char>>& memory_cache() {
  static std::map<std::string, std::vector<char>> m;
  return m;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool read_file(const std::string& path, std::vector<char>& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  return !f.bad();
}
}  // namespace

bool jit_verbose() {
  const char* v = std::getenv("SPLAT_JIT_VERBOSE");
  return v && *v && std::strcmp(v, "0") != 0;
}

void jit_log(const std::string& line) {
  if (jit_verbose()) std::fprintf(stderr, "[splat jit] %s\n", line.c_str());
}

std::string cache_directory() {
  if (const char* d = std::getenv("SPLAT_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/splat";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/splat";
  return (fs::temp_directory_path() / "splat-cache").string();
}

void ensure_directory(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec && !fs::is_directory(dir))
    fail(ErrorCode::Io, "cannot create kernel cache directory " + dir + ": " + ec.message());
}

std::string entry_path(const std::string& key) {
  return cache_directory() + "/" + key + ".cubin";
}

std::string cache_key(const std::string& source, const std::string& arch) {
  Hasher h;
  h.field("splat-kernel-cache");
  h.field(std::to_string(kCacheFormatVersion));
  h.field(nvrtc_version());
  h.field(arch);
  for (const auto& o : nvrtc_options(arch)) h.field(o);
  h.field(source);
  // The source includes the embedded headers: they are part of its content (hashed once per process).
  static const std::string headers = [] {
    Hasher hh;
    for (int i = 0; i < kEmbeddedHeaderCount; ++i) {
      hh.field(kEmbeddedHeaders[i].name);
      hh.field(kEmbeddedHeaders[i].text);
    }
    return hh.hex();
  }();
  h.field(headers);
  return h.hex();
}

std::vector<char> encode_entry(const std::vector<char>& payload) {
  std::vector<char> out(kHeader + payload.size());
  const uint64_t n = payload.size(), sum = checksum64(payload.data(), payload.size());
  std::memcpy(out.data(), kMagic, 8);
  std::memcpy(out.data() + 8, &n, 8);
  std::memcpy(out.data() + 16, &sum, 8);
  if (!payload.empty()) std::memcpy(out.data() + kHeader, payload.data(), payload.size());
  return out;
}

bool decode_entry(const std::vector<char>& file, std::vector<char>& payload) {
  if (file.size() < kHeader || std::memcmp(file.data(), kMagic, 8) != 0) return false;
  uint64_t n = 0, sum = 0;
  std::memcpy(&n, file.data() + 8, 8);
  std::memcpy(&sum, file.data() + 16, 8);
  if (n == 0 || n != file.size() - kHeader) return false;
  if (checksum64(file.data() + kHeader, n) != sum) return false;
  payload.assign(file.begin() + kHeader, file.end());
  return true;
}

void clear_memory_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  memory_cache().clear();
}

CachedCubin cached_cubin(const std::string& source, const std::string& arch, const std::string& what) {
  const auto t0 = std::chrono::steady_clock::now();
  CachedCubin r;
  r.key = cache_key(source, arch);
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = memory_cache().find(r.key);
    if (it != memory_cache().end()) {
      r.cubin = it->second;
      r.source = "memory";
      r.ms = ms_since(t0);
      return r;
    }
  }
  const std::string path = entry_path(r.key);
  std::vector<char> file;
  if (read_file(path, file)) {
    if (decode_entry(file, r.cubin)) {
      r.source = "disk";
      r.ms = ms_since(t0);
      jit_log("load " + what + " from " + path + " (" + std::to_string(r.ms) + " ms)");
    } else {
      r.why = "corrupt or truncated cache entry " + path + " (rebuilding)";
    }
  } else {
    r.why = "not in cache (" + path + ")";
  }
  if (r.source.empty()) {
    jit_log("compile " + what + " for " + arch + ": " + r.why);
    NvrtcOutput out = nvrtc_compile(source, arch);
    r.cubin = std::move(out.cubin);
    r.source = "compiled";
    r.ms = ms_since(t0);
    jit_log("compiled " + std::to_string(r.cubin.size()) + " bytes in " + std::to_string(r.ms) + " ms -> " + path);
    try {  // a read-only or full cache directory only costs the next process a compile
      ensure_directory(cache_directory());
      const std::vector<char> entry = encode_entry(r.cubin);
      splat::write_file_atomic(path, entry.data(), entry.size());  // mkstemp + rename: safe across processes
    } catch (const Error& e) {
      jit_log(std::string("could not store cache entry: ") + e.what());
    }
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  memory_cache()[r.key] = r.cubin;
  return r;
}

}  // namespace splat::jit

namespace splat {

namespace fs = std::filesystem;

CacheInfo kernel_cache_info() {
  CacheInfo info;
  info.directory = jit::cache_directory();
  std::error_code ec;
  if (!fs::is_directory(info.directory, ec)) return info;
  for (const auto& e : fs::directory_iterator(info.directory, ec)) {
    if (e.path().extension() != ".cubin" || !e.is_regular_file(ec)) continue;
    ++info.entries;
    info.bytes += int64_t(e.file_size(ec));
  }
  return info;
}

void kernel_cache_clear() {
  jit::clear_memory_cache();
  const std::string dir = jit::cache_directory();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = e.path().extension() == ".cubin" || name.find(".cubin.tmp-") != std::string::npos ||
                      (name.rfind("failed-", 0) == 0 && e.path().extension() == ".cu");
    if (ours && !fs::remove(e.path(), ec))
      fail(ErrorCode::Io, "cannot remove " + e.path().string() + (ec ? ": " + ec.message() : ""));
  }
}

}  // namespace splat
