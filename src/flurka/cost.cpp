// Cost model of the CUDA kernels: tensor-core FLOPs and compulsory bytes per kernel, turned into a time by
// each kernel's roofline max(bytes / (eff_bw bandwidth), flops / (eff_mma gemm_flops)) plus launch latency.
// The efficiencies say how far the kernels get from the measured ceilings (DeviceCeilings: the H200's).
#include <algorithm>
#include <cmath>
#include <string>

#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {

namespace {
// Non-causal forward: fitted (grid search, least squares on log(predicted / measured)) to the 21 "fwd splat ms"
// rows of docs/BENCHMARKS-flurka.md's fair H200 table (v5 kernels, bindings, bf16, k = m = 256, per-head E, F,
// W; B,H,N,D in {4,16,4096,64}, {1,16,16384,64}, {4,16,4096,128}). The GEMM-shaped loops reach ~26.5% of the
// bf16 GEMM rate and each call pays ~144 us of small kernels, autograd bookkeeping and launch gaps; no row is
// bandwidth-bound at these shapes, so the streaming efficiency is not identified (the fit ran into its bound,
// 0.99). Predicted / measured: median 1.01, range 0.75 (performer-favor D=128) - 1.23 (flurka-favor D=64).
constexpr double kEffBw = 0.99;           // achieved / copy bandwidth for streaming kernels
constexpr double kEffMma = 0.265;         // achieved / bf16 GEMM rate for the mma.sync kernels
constexpr double kCallOverhead = 144e-6;  // seconds per call beyond the three main kernels
// Forward + backward = kTrainScale x forward + kTrainOverhead, fitted the same way to the 21 "fwd+bwd splat
// ms" rows of the same table (b2 backward): predicted / measured median 0.99, range 0.87 - 1.27.
constexpr double kTrainScale = 3.76;
constexpr double kTrainOverhead = 140e-6;
// cuDNN dense SDPA on the H200 (docs/BENCHMARKS-cuda.md v8 table and BENCHMARKS-flurka.md): 0.56 of the GEMM
// rate at D = 64 (2.477 ms at 1,16,16384; 0.631 ms at 4,16,4096 gives 0.55), 0.755 at D = 128 (3.699 ms at
// 1,16,16384; 1.842 ms at 2,16,8192); linear in D between, constant outside.
double eff_dense(double d) {
  return std::clamp(0.56 + (d - 64) * (0.755 - 0.56) / 64, 0.56, 0.755);
}
// Causal chunked forward (c3: the tensor-core kernels, the bf16 default; bench/NOTES-flurka.md): per-kernel rates
// from the H200 profile of flurka-favor at 4,16,4096,64, C = 256, r = 64, m = 256 (project 0.062 ms, state 0.102,
// scan 0.082, query 0.157, prepare 0.015); flurka-elu's small state (m = D) streams K', V' and writes the state at a
// fraction of copy bandwidth instead. Predicted / measured over the nine end-to-end rows (favor / elu / relu at
// 4,16,4096,64, 1,16,16384,64 and 4,16,4096,128; commit 5fb7e29): 0.83 - 1.19 (tests/cpp/test_cost_flurka.cpp).
// The fp32 / fp16 storage kernels (c1, SIMT) are 6-8x slower and not modelled.
constexpr double kCausalProjectRate = 6.9e13;  // chunk projections E_c K_c, F_c V_c on the tensor cores
constexpr double kCausalStateRate = 4.2e13;    // chunk states phi(K'_c)^T V'_c
constexpr double kCausalStateBw = 0.2;         // ... or, for small states, streaming K', V' and the state
constexpr double kCausalQueryRate = 1.3e14;    // history slots + exact softmax inside the chunk
constexpr double kCausalScanBw = 0.5;          // state scan: streaming, of copy bandwidth
constexpr double kCausalOverhead = 15e-6;

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
  a.c.train_predicted_s = kTrainScale * a.c.predicted_s + kTrainOverhead;
  return a.c;
}

FlurkaCost flurka_causal_cost(FlurkaMethod m, int64_t B, int64_t H, int64_t N, int64_t D, int64_t C, int64_t r,
                              int64_t mfeat, int elem, const DeviceCeilings& dev) {
  require(m == FlurkaMethod::FlurkaFavor || m == FlurkaMethod::FlurkaElu || m == FlurkaMethod::FlurkaRelu,
          std::string("flurka_causal_cost: no causal CUDA path for ") + flurka_method_name(m) +
              " (flurka-favor, flurka-elu, flurka-relu have one)");
  require(B >= 1 && H >= 1 && N >= 1 && D >= 1 && C >= 1 && r >= 1 && mfeat >= 1 && elem >= 1,
          "flurka_causal_cost: B, H, N, D, C, r, m and elem must be >= 1");
  const bool elu = feature_map_of(m) == FeatureMap::Elu;
  const double BH = double(B * H), n = double(N), d = double(D), e = elem, cc = double(C), rr = double(r);
  const double mm = elu ? d : double(mfeat), chunks = std::ceil(n / cc);
  FlurkaCost c;
  // project: E_c K_c and F_c V_c per chunk (2 x 2 r C D per chunk of C rows)
  const double fp = BH * 4 * rr * n * d, bp = BH * 2 * n * d * e + BH * chunks * rr * d * 2 * 4;
  // chunk states: phi(K'_c) (r D m for favor / relu) and phi^T V' (r m D)
  const double fs = BH * chunks * rr * mm * d * (elu ? 2 : 4), bs = BH * chunks * (mm * d + mm) * 4;
  // scan: each chunk state read and written once
  const double bscan = 2 * bs;
  // query: q W (2 D m, favor / relu), the history (2 m D), the exact part over ~C/2 keys (4 D each)
  const double fq = BH * n * ((elu ? 2 : 4) * mm * d + 2 * cc * d), bq = BH * 4 * n * d * e;
  c.flops = fp + fs + fq;
  c.bytes = bp + bs + bq;
  const double state_s =
      std::max(fs / kCausalStateRate, (BH * chunks * 2 * rr * d * e + bs) / (kCausalStateBw * dev.bandwidth));
  c.predicted_s = fp / kCausalProjectRate + state_s + bscan / (kCausalScanBw * dev.bandwidth) + fq / kCausalQueryRate +
                  5 * dev.launch + kCausalOverhead;
  c.floor_s = std::max(c.bytes / dev.bandwidth, c.flops / dev.gemm_flops);
  return c;
}

FlurkaCost dense_attention_cost(int64_t B, int64_t H, int64_t N, int64_t D, int elem, const DeviceCeilings& dev) {
  FlurkaCost c;
  const double BH = double(B * H), n = double(N), d = double(D);
  c.flops = BH * 4 * n * n * d;
  c.bytes = BH * 4 * n * d * elem;
  c.floor_s = std::max(c.bytes / dev.bandwidth, c.flops / dev.gemm_flops);
  c.predicted_s = std::max(c.bytes / (kEffBw * dev.bandwidth), c.flops / (eff_dense(d) * dev.gemm_flops)) + dev.launch;
  // cuDNN fwd+bwd / fwd on the H200: 8.597 / 2.331 ms (1,16,16384,64), 2.309 / 0.631 (4,16,4096,64): ~3.68x
  c.train_predicted_s = 3.68 * c.predicted_s;
  return c;
}

}  // namespace splat
