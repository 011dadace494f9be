// Cost model of the CUDA kernels: tensor-core FLOPs and compulsory bytes per kernel, turned into a time by
// each kernel's roofline max(bytes / (eff_bw bandwidth), flops / (eff_mma gemm_flops)) plus launch latency.
// The efficiencies say how far mma.sync kernels of this shape get from the measured ceilings; they were
// fitted to bench/bench_flurka.py on the H100 (docs/BENCHMARKS-flurka.md).
#include <algorithm>

#include "splat/flurka.hpp"

namespace splat {

namespace {
// Fitted (least squares on log time) to the 42 rows of docs/BENCHMARKS-flurka.md measured at ad2ed5f on the H100
// (cp.async + ldmatrix + mma.sync kernels): the projection streams at up to 80% of the copy bandwidth, the
// GEMM-shaped loops at ~27% of the cuBLAS rate, and each call pays ~56 us of small kernels (prepare W and
// the accumulators, finalize) and launch gaps. Predicted / measured: median 1.07, range 0.72 - 1.21.
constexpr double kEffBw = 0.80;          // achieved / copy bandwidth for streaming kernels
constexpr double kEffMma = 0.27;         // achieved / cuBLAS bf16 rate for mma.sync (no wgmma) kernels
constexpr double kCallOverhead = 56e-6;  // seconds per call beyond the three main kernels
constexpr double kEffDense = 0.55;       // cuDNN flash attention vs the GEMM rate

struct Acc {
  FlurkaCost c;
  const DeviceCeilings& dev;
  void kernel(double flops, double bytes) {
    c.flops += flops, c.bytes += bytes;
    c.predicted_s += std::max(bytes / (kEffBw * dev.bandwidth), flops / (kEffMma * dev.gemm_flops)) + dev.launch;
  }
};
}  // namespace

FlurkaCost flurka_cost(FlurkaMethod m, int64_t B, int64_t H, int64_t N, int64_t D, int64_t k, int64_t mfeat, int elem,
                       bool shared_proj, const DeviceCeilings& dev) {
  const double BH = double(B * H), n = double(N), d = double(D), e = elem;
  const FeatureMap fm = feature_map_of(m);
  const double mm = fm == FeatureMap::Elu ? d : double(mfeat);
  Acc a{{}, dev};
  double L = n;  // keys feeding the state / softmax
  if (uses_projection(m)) {
    const double kk = double(k);
    const double ef = 2 * kk * n * e * (shared_proj ? 1.0 : double(H));
    a.kernel(BH * 4 * kk * n * d, BH * 2 * n * d * e + ef + BH * 2 * kk * d * 4);
    L = kk;
  }
  const double state_bytes = fm == FeatureMap::None ? 0 : BH * (mm * d + mm) * 4;
  if (fm != FeatureMap::None)
    a.kernel(BH * 4 * L * mm * d, (uses_projection(m) ? BH * 2 * L * d * 2 : BH * 2 * L * d * e) + state_bytes);
  // query kernel: Q in, out out, small per-head slot tensors from L2
  const double slots = fm == FeatureMap::None ? L : mm;
  a.kernel(BH * 4 * n * slots * d, BH * 2 * n * d * e + BH * slots * d * 2 * 2);
  a.c.predicted_s += kCallOverhead;  // small prep / finalize kernels, launch gaps
  a.c.floor_s = std::max(a.c.bytes / dev.bandwidth, a.c.flops / dev.gemm_flops);
  return a.c;
}

FlurkaCost dense_attention_cost(int64_t B, int64_t H, int64_t N, int64_t D, int elem, const DeviceCeilings& dev) {
  FlurkaCost c;
  const double BH = double(B * H), n = double(N), d = double(D);
  c.flops = BH * 4 * n * n * d;
  c.bytes = BH * 4 * n * d * elem;
  c.floor_s = std::max(c.bytes / dev.bandwidth, c.flops / dev.gemm_flops);
  c.predicted_s = std::max(c.bytes / (kEffBw * dev.bandwidth), c.flops / (kEffDense * dev.gemm_flops)) + dev.launch;
  return c;
}

}  // namespace splat
