// Fuzzes the .npy reader: any bytes either parse or throw splat::Error whose message is printable (no
// control bytes quoted from the file: a NUL would cut it). What parses must re-encode to an array that
// parses back identically, and the mask / tensor conversions must not crash.
#include <cstdint>
#include <cstdlib>

#include "splat/error.hpp"
#include "splat/npy.hpp"

namespace {
void check_printable(const splat::Error& e) {
  for (const char* p = e.what(); *p; ++p)
    if (static_cast<unsigned char>(*p) < 0x20 || *p == 0x7F) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  splat::NpyArray a;
  try {
    a = splat::parse_npy(data, size, "fuzz.npy");
  } catch (const splat::Error& e) {
    check_printable(e);
    return 0;
  }
  const std::vector<uint8_t> bytes = splat::encode_npy(a);
  const splat::NpyArray b = splat::parse_npy(bytes.data(), bytes.size(), "re-encoded");
  if (b.dtype != a.dtype || b.shape != a.shape || b.data != a.data) std::abort();
  try {
    (void)splat::mask_from_npy(a, "fuzz.npy");
  } catch (const splat::Error&) {
  }
  try {
    (void)splat::npy_tensor_view(a, "fuzz.npy");
  } catch (const splat::Error&) {
  }
  return 0;
}
