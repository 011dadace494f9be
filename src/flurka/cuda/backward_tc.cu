// When the tensor-core FLuRKA backward applies, and the dispatch over the head dim (the launch sequences live in
// backward_tc_launch.cuh, instantiated per D in backward_tc_d32.cu, backward_tc_d64.cu, backward_tc_d128.cu).
#include <cstdlib>
#include <cstring>

#include "flurka/cuda/backward_tc.hpp"

namespace splat::fk {

bool tc_backward_applies(FlurkaMethod m, const FlurkaShape& s, const FlurkaInputs& in) {
  const char* env = std::getenv("SPLAT_FLURKA_BWD");
  if (env && std::strcmp(env, "simt") == 0) return false;
  if (in.q.dtype != DType::BF16 || (s.D != 32 && s.D != 64 && s.D != 128)) return false;
  if (uses_projection(m) && (s.k > kTcSlotMax || in.e.heads != in.f.heads)) return false;
  if (feature_map_of(m) != FeatureMap::None && s.m > kTcSlotMax) return false;
  return true;
}

void tc_backward(FlurkaMethod m, const FlurkaShape& s, const FlurkaInputs& in, const FlurkaGrads& g, cudaStream_t st) {
  switch (s.D) {
    case 32: return tcrun::run<32>(m, s, in, g, st);
    case 64: return tcrun::run<64>(m, s, in, g, st);
    case 128: return tcrun::run<128>(m, s, in, g, st);
  }
}

}  // namespace splat::fk
