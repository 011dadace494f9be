// Atomic file replacement: write a temporary file next to the target, then rename it over the target.
// rename() within one directory is atomic on POSIX, so readers see the old or the new file, never a
// partial one, and a failure at any step leaves an existing file untouched.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "splat/error.hpp"
#include "splat/npy.hpp"

namespace splat {

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  require(!path.empty(), "output path is empty");
  std::vector<char> tmp(path.begin(), path.end());
  const char suffix[] = ".tmp-XXXXXX";
  tmp.insert(tmp.end(), suffix, suffix + sizeof(suffix));  // includes the terminating NUL
  const int fd = mkstemp(tmp.data());
  if (fd < 0) fail(ErrorCode::Io, path + ": cannot write: " + std::strerror(errno));
  const auto give_up = [&](const char* what) {
    const int err = errno;
    close(fd);
    unlink(tmp.data());
    fail(ErrorCode::Io, path + ": cannot write (" + what + "): " + std::strerror(err));
  };
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    const ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) give_up("write");
    p += n, left -= size_t(n);
  }
  // mkstemp creates the file 0600; give it the usual permissions (as umask allows).
  const mode_t mask = umask(0);
  umask(mask);
  if (fchmod(fd, 0666 & ~mask) != 0) give_up("chmod");
  if (close(fd) != 0) {
    const int err = errno;
    unlink(tmp.data());
    fail(ErrorCode::Io, path + ": cannot write (close): " + std::strerror(err));
  }
  if (std::rename(tmp.data(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.data());
    fail(ErrorCode::Io, path + ": cannot write (rename): " + std::strerror(err));
  }
}

}  // namespace splat
