// splat's one error type. Every library failure is reported by throwing splat::Error;
// the library never aborts. The CLI maps ErrorCode to exit codes (usage/input -> 2).
#pragma once
#include <stdexcept>
#include <string>

namespace splat {

enum class ErrorCode {
  InvalidArgument,  // bad pattern string, sizes, shapes, dtypes, options
  Io,               // missing/unreadable/unwritable file, corrupt .npy
  Unsupported,      // valid request this build or device cannot serve
  Cuda,             // CUDA driver/runtime failure (message carries the CUDA error string)
  Jit,              // NVRTC compilation failure (message carries the log and saved source path)
  Internal,         // a broken invariant: a bug in splat
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& what) : std::runtime_error(what), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& what) { throw Error(code, what); }
inline void require(bool ok, const std::string& what) {
  if (!ok) throw Error(ErrorCode::InvalidArgument, what);
}

}  // namespace splat
