// The kernel cache: cubins keyed by content (generated source, embedded headers, NVRTC options and
// version, arch, format version). Level 1 is an in-process map; level 2 is a directory of files
// <key>.cubin written via temp file + atomic rename and validated on read (magic, length, checksum),
// so a corrupt or truncated entry is rebuilt and concurrent processes never see a partial file.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace splat::jit {

constexpr int kCacheFormatVersion = 1;

struct CachedCubin {
  std::vector<char> cubin;
  std::string key;     // 32 hex digits
  std::string source;  // "memory", "disk" or "compiled"
  std::string why;     // why it was compiled (miss, corrupt entry, ...)
  double ms = 0;       // time to obtain it
};

// Returns the cubin of source for arch, compiling with NVRTC on a miss. what: a description for logs.
CachedCubin cached_cubin(const std::string& source, const std::string& arch, const std::string& what);
std::string cache_key(const std::string& source, const std::string& arch);

std::string cache_directory();                  // $SPLAT_CACHE_DIR, else $XDG_CACHE_HOME/splat, else ~/.cache/splat
void ensure_directory(const std::string& dir);  // mkdir -p; throws Error(Io)
std::string entry_path(const std::string& key);
// Entry file encoding (exposed for tests): magic, payload length, checksum, payload.
std::vector<char> encode_entry(const std::vector<char>& payload);
bool decode_entry(const std::vector<char>& file, std::vector<char>& payload);
void clear_memory_cache();
// Whether a file in the cache directory is one splat wrote (name pattern and header both match):
// what `kernel_cache_clear` removes and `kernel_cache_info` counts; anything else is left alone.
bool is_own_cache_file(const std::filesystem::path& p);

bool jit_verbose();
void jit_log(const std::string& line);  // to stderr when SPLAT_JIT_VERBOSE=1

}  // namespace splat::jit
