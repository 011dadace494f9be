// Device headers (include/splat/device/*.cuh) embedded at build time, handed to NVRTC by name.
#pragma once

namespace splat::jit {

struct EmbeddedFile {
  const char* name;  // include name, e.g. "splat/device/attention_fwd.cuh"
  const char* text;
};
extern const EmbeddedFile kEmbeddedHeaders[];
extern const int kEmbeddedHeaderCount;

}  // namespace splat::jit
