// Host side of the tensor-core causal FLuRKA forward (bf16): five launch kinds, all fixed-order (no atomics).
//   prepare_features: W^T in bf16 (the identity for elu);
//   project_pipe_kernel, one member per batch element: every full chunk is one "batch column block" of the non-causal
//     projection [r, C] x [C, nS D] (K viewed as nS chunks of C rows), K'_c, V'_c fp32 [B, nS, H, r, D];
//   state_kernel over B nS H "heads" of r rows, one split: per chunk U_c = S_c / z_c (fp32) and its slot;
//   chunk_scan: the prefix over chunks; causal_query_tc: history + exact part per 128-row tile.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "flurka/cuda/causal_state.cuh"
#include "flurka/cuda/causal_tc.cuh"
#include "flurka/cuda/causal_tc.hpp"
#include "flurka/cuda/launch_profile.hpp"
#include "flurka/cuda/launch_util.hpp"
#include "flurka/cuda/project.cuh"

namespace splat::fk {

namespace {

constexpr int64_t kGridYZ = 65535;

int64_t chunks_with_state(const FlurkaShape& s, int64_t C) {
  const int64_t nC = (s.N + C - 1) / C;
  return nC > 0 ? nC - 1 : 0;
}

// SPLAT_FLURKA_CAUSAL_FUSED=1: chunk_state_scan (causal_state.cuh, not yet run on a GPU) instead of state_kernel +
// chunk_scan.
bool fused_states() {
  static const bool on = [] {
    const char* e = std::getenv("SPLAT_FLURKA_CAUSAL_FUSED");
    return e && std::string(e) == "1";
  }();
  return on;
}

template <int D>
size_t state_smem() {
  return size_t((128 + 64) * (D + 8) * 2 + D * (64 + 8) * 2 + 64 * 4);  // state_kernel's tiles (as flurka_cuda.cu)
}

template <int D>
void launch(FlurkaMethod method, const FlurkaShape& s, int64_t C, const FlurkaInputs& in, const TensorView& out,
            const CausalTcBuffers& w, cudaStream_t st) {
  static const bool attrs = [] {
    cuda_check(cudaFuncSetAttribute(project_pipe_kernel<bf16, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(ProjPipe::smem_bytes)),
               "attr");
    cuda_check(
        cudaFuncSetAttribute(state_kernel<float, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(state_smem<D>())),
        "attr");
    cuda_check(
        cudaFuncSetAttribute(chunk_state_scan<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(state_smem<D>())),
        "attr");
    cuda_check(cudaFuncSetAttribute(causal_query_tc<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(CausalPipe<D>::smem_bytes)),
               "attr");
    return true;
  }();
  (void)attrs;
  const FeatureMap fm = feature_map_of(method);
  const int map = fm == FeatureMap::Favor ? kFavor : fm == FeatureMap::Relu ? kRelu : kElu;
  const int64_t nS = chunks_with_state(s, C), nC = (s.N + C - 1) / C, r = s.k, m = s.m, H = s.H;
  const int64_t Hw = fm == FeatureMap::Elu ? 1 : in.w.heads;
  const float sfeat = std::pow(float(D), -0.25f), a = fm == FeatureMap::Elu ? 1.0f : sfeat;
  bf16* wt = static_cast<bf16*>(w.wt);
  bf16* ut = static_cast<bf16*>(w.ut);
  fk::LaunchProfile prof("flurka causal profile", st);
  prof.mark("start");
  if (nS > 0) {
    const int64_t work = Hw * m * D;
    prepare_features<bf16><<<unsigned(std::min<int64_t>(2048, (work + 255) / 256)), 256, 0, st>>>(
        static_cast<const bf16*>(in.w.data), Hw, D, m, fm == FeatureMap::Elu, wt, nullptr, 0, nullptr, 0);
    cuda_check(cudaGetLastError(), "prepare_features");
    prof.mark("prepare");
    const int64_t rt = (r + ProjPipe::BM - 1) / ProjPipe::BM, ct = (nS * D + ProjPipe::BC - 1) / ProjPipe::BC;
    // K of member b as nS chunks of C rows (chunk stride C rows); one launch for all members.
    const Rows kr{in.k.data, C * in.k.stride[2], in.k.stride[1], in.k.stride[2]};
    const Rows vr{in.v.data, C * in.v.stride[2], in.v.stride[1], in.v.stride[2]};
    project_pipe_kernel<bf16, D>
        <<<dim3(unsigned(rt * ct), 1, unsigned(s.B * H * 2)), ProjPipe::NT, ProjPipe::smem_bytes, st>>>(
            rows_of(in.e), rows_of(in.f), kr, vr, nS, H, r, C, C, int(ct), false, w.kp, w.vp, 0, in.k.stride[0],
            in.v.stride[0], nS * H * r * D);
    cuda_check(cudaGetLastError(), "project_pipe_kernel (causal)");
    prof.mark("project");
    if (fused_states()) {  // experimental: states and scan in one pass over the chunks
      chunk_state_scan<D><<<dim3(unsigned((m + 127) / 128), unsigned(s.B * H)), 256, state_smem<D>(), st>>>(
          w.kp, w.vp, wt, Hw, H, r, m, nS, map, a, ut, w.slotp);
      cuda_check(cudaGetLastError(), "chunk_state_scan");
      prof.mark("state_scan");
    } else {
      // "Batch" b * nS + c, head h: the chunk projections are consecutive [r, D] blocks.
      const Rows x2{w.kp, H * r * D, r * D, D}, y2{w.vp, H * r * D, r * D, D};
      state_kernel<float, D><<<dim3(unsigned((m + 127) / 128), 1, unsigned(s.B * nS * H)), 256, state_smem<D>(), st>>>(
          x2, y2, wt, Hw, w.shift, H, r, m, r, map, a, nullptr, nullptr, nullptr, w.slot, w.u32);
      cuda_check(cudaGetLastError(), "state_kernel (causal)");
      prof.mark("state");
      chunk_scan<<<dim3(unsigned((m * D + 255) / 256), unsigned(s.B * H)), 256, 0, st>>>(w.u32, w.slot, H, m, D, nS,
                                                                                         map, ut, w.slotp);
      cuda_check(cudaGetLastError(), "chunk_scan");
      prof.mark("scan");
    }
  }
  const int64_t tiles = (std::min(C, s.N) + CausalPipe<D>::BQ - 1) / CausalPipe<D>::BQ;
  causal_query_tc<D><<<dim3(unsigned(nC * tiles), unsigned(s.B * H)), 256, CausalPipe<D>::smem_bytes, st>>>(
      rows_of(in.q), rows_of(in.k), rows_of(in.v), wt, Hw, ut, w.slotp, H, s.N, C, m, nS, tiles, map, a,
      static_cast<bf16*>(out.data), out.stride[0], out.stride[1], out.stride[2]);
  cuda_check(cudaGetLastError(), "causal_query_tc");
  prof.mark("query");
}

}  // namespace

std::string causal_tc_unsupported(const FlurkaInputs& in, const FlurkaShape& s, int64_t C) {
  if (in.q.dtype != DType::BF16) return "the tensor-core causal path takes bf16 storage";
  if (s.D != 32 && s.D != 64 && s.D != 128) return "head dim D not in {32, 64, 128}";
  if (s.k > 512 || s.m > CausalPipe<64>::LMAX) return "r or m > 512";
  const int64_t nS = chunks_with_state(s, C), nC = (s.N + C - 1) / C;
  const int64_t tiles = (std::min(C, s.N) + CausalPipe<64>::BQ - 1) / CausalPipe<64>::BQ;
  if (s.B * std::max<int64_t>(nS, 1) * s.H > kGridYZ || s.B * s.H * 2 > kGridYZ) return "B * chunks * H > 65535";
  if (s.B * s.H > kGridYZ) return "B * H > 65535";
  if (nC * tiles > (int64_t(1) << 31) - 1 || (nS * s.D + 127) / 128 * 2 > (int64_t(1) << 31) - 1)
    return "too many query tiles";
  return "";
}

void causal_tc_launch(FlurkaMethod m, const FlurkaShape& s, int64_t C, const FlurkaInputs& in, const TensorView& out,
                      const CausalTcBuffers& w, cudaStream_t st) {
  switch (s.D) {
    case 32: return launch<32>(m, s, C, in, out, w, st);
    case 64: return launch<64>(m, s, C, in, out, w, st);
    case 128: return launch<128>(m, s, C, in, out, w, st);
  }
}

}  // namespace splat::fk
