// Atomic file replacement: write a temporary file next to the target, then rename it over the target.
// rename() within one directory is atomic on POSIX, so readers see the old or the new file, never a
// partial one, and a failure at any step leaves an existing file untouched.
// Only regular files are replaced: renaming over a device, FIFO or socket would swap the node itself
// for a file (as root, /dev/full became one), so any existing target that is not a regular file is
// refused. A symlink is written through (its final target is replaced, the link stays) when it leads
// to a regular file, and refused otherwise. (Checked before writing; a target swapped for another kind
// of node between the check and the rename is replaced, as any rename would.)
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

namespace {

const char* kind_name(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR: return "a directory";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
  }
  return "not a plain file";
}

struct Target {
  std::string path;  // where the bytes go: `path` itself, or the final target of a symlink
  bool exists = false;
  mode_t mode = 0;  // permission bits of the existing file
};

Target resolve_target(const std::string& path) {
  const std::string cannot = path + ": cannot write: ";
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {path, false, 0};
    fail(ErrorCode::Io, cannot + std::strerror(errno));
  }
  Target t{path, true, 0};
  if (S_ISLNK(st.st_mode)) {
    char* real = realpath(path.c_str(), nullptr);
    if (!real)
      fail(ErrorCode::Io, cannot + "not a regular file (a symbolic link to a missing or unreachable file: " +
                              std::strerror(errno) + ")");
    t.path = real;
    std::free(real);
    if (stat(t.path.c_str(), &st) != 0) fail(ErrorCode::Io, cannot + t.path + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode))
      fail(ErrorCode::Io, cannot + "not a regular file (a symbolic link to " + kind_name(st.st_mode) + ", " + t.path +
                              "); splat writes regular files only");
  } else if (!S_ISREG(st.st_mode)) {
    fail(ErrorCode::Io, cannot + "not a regular file (" + kind_name(st.st_mode) + "); splat writes regular files only");
  }
  t.mode = st.st_mode & 0777;
  return t;
}

}  // namespace

void check_output_target(const std::string& path) {
  require(!path.empty(), "output path is empty");
  resolve_target(path);
}

void write_file_atomic(const std::string& user_path, const void* data, size_t size) {
  require(!user_path.empty(), "output path is empty");
  const Target target = resolve_target(user_path);
  const std::string& path = target.path;
  std::vector<char> tmp(path.begin(), path.end());
  const char suffix[] = ".tmp-XXXXXX";
  tmp.insert(tmp.end(), suffix, suffix + sizeof(suffix));  // includes the terminating NUL
  const int fd = mkstemp(tmp.data());
  if (fd < 0) fail(ErrorCode::Io, user_path + ": cannot write: " + std::strerror(errno));
  const auto give_up = [&](const char* what) {
    const int err = errno;
    close(fd);
    unlink(tmp.data());
    fail(ErrorCode::Io, user_path + ": cannot write (" + what + "): " + std::strerror(err));
  };
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  while (left > 0) {
    const ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) give_up("write");
    p += n, left -= size_t(n);
  }
  // mkstemp creates the file 0600: keep the replaced file's permissions, else the usual ones (as umask allows).
  const mode_t mask = umask(0);
  umask(mask);
  if (fchmod(fd, target.exists ? target.mode : 0666 & ~mask) != 0) give_up("chmod");
  if (close(fd) != 0) {
    const int err = errno;
    unlink(tmp.data());
    fail(ErrorCode::Io, user_path + ": cannot write (close): " + std::strerror(err));
  }
  if (std::rename(tmp.data(), path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.data());
    fail(ErrorCode::Io, user_path + ": cannot write (rename): " + std::strerror(err));
  }
}

}  // namespace splat
