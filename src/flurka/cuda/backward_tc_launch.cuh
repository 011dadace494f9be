// Host side of the tensor-core FLuRKA backward, included by one .cu per head dim (backward_tc_d*.cu, compiled in
// parallel): scratch layout and the launch sequence
//   [prepare W^T] -> [projection E K, F V per split, summed in order] -> [state: one split (flurka-*) or per-split
//   slices summed in order (performer, linear)] -> query_rows -> query_slots -> reduce_slots -> [key_rows]
//   -> [project_back]
// Everything is recomputed from the inputs (no N x m tensor, no saved forward state) and every sum runs in a
// fixed order, so the gradients are bitwise reproducible.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/int_math.hpp"
#include "flurka/cuda/backward_tc.cuh"
#pragma once
#include "flurka/cuda/backward_tc.hpp"
#include "flurka/cuda/launch_profile.hpp"
#include "flurka/cuda/launch_util.hpp"
#include "flurka/cuda/project.cuh"
#include "flurka/cuda/state.cuh"
#include "splat/error.hpp"

namespace splat::fk {

static_assert(tc::kSlotMax == kTcSlotMax, "backward_tc.hpp and backward_tc.cuh disagree on the slot limit");

namespace {

int sms() {
  static int n = [] {
    int dev = 0, v = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
    return v;
  }();
  return n;
}

struct Plan {
  bool proj, kern, lin;
  int map;
  int64_t BH, L, n;                   // L: slots; n = BH k D (projected rows)
  int64_t prt, pct, psplits, pchunk;  // projection grid
  int64_t mt, ssplits, schunk;        // state grid (unprojected)
  int64_t qsplits, qchunk;            // query_slots splits over the rows
  size_t ppart, kp, vp, kp16, vp16, klo, dkp, dvp, wt, shift, ut, slot, z, Sp, zp, dst, dzt, stats, pu, pg, pk, total;
};

template <int D>
Plan plan_of(FlurkaMethod method, const FlurkaShape& s) {
  Plan p{};
  const FeatureMap fm = feature_map_of(method);
  p.proj = uses_projection(method), p.kern = fm != FeatureMap::None, p.lin = !p.kern;
  p.map = fm == FeatureMap::Favor ? kFavor : fm == FeatureMap::Relu ? kRelu : fm == FeatureMap::Elu ? kElu : kSoftmax;
  p.BH = s.B * s.H;
  p.L = p.kern ? s.m : s.k;
  p.n = p.proj ? checked_product({p.BH, s.k, s.D}, "backward workspace") : 0;
  if (p.proj) {  // as the forward's proj_grid: about one wave of one-per-SM blocks
    p.prt = (s.k + ProjPipe::BM - 1) / ProjPipe::BM;
    p.pct = (s.B * s.D + ProjPipe::BC - 1) / ProjPipe::BC;
    const int64_t tiles = p.prt * p.pct * s.H * 2;
    int64_t splits = std::max<int64_t>(1, (sms() + tiles / 2) / tiles);
    splits = std::min(splits, (s.N + 255) / 256);
    p.pchunk = ((s.N + splits - 1) / splits + ProjPipe::BK - 1) / ProjPipe::BK * ProjPipe::BK;
    p.psplits = (s.N + p.pchunk - 1) / p.pchunk;
  }
  p.mt = (s.m + 127) / 128;
  if (p.kern && !p.proj) {  // as the forward's split_chunk: about 3 waves
    const int64_t bps = p.mt * p.BH, want = std::max<int64_t>(1, (3 * sms() + bps - 1) / bps);
    p.schunk = std::max<int64_t>(256, ((s.N + want - 1) / want + 63) / 64 * 64);
    p.ssplits = (s.N + p.schunk - 1) / p.schunk;
  }
  {
    constexpr int BR = tc::QSlots<D>::BR;
    const int64_t blocks = (p.L + 63) / 64 * p.BH, want = std::max<int64_t>(1, (2 * sms() + blocks - 1) / blocks);
    p.qchunk = std::max<int64_t>(4 * BR, ((s.Nq + want - 1) / want + BR - 1) / BR * BR);
    p.qsplits = (s.Nq + p.qchunk - 1) / p.qchunk;
  }
  size_t o = 0;
  auto take = [&](int64_t elems, int esize) {
    const size_t at = o;
    o += (size_t(checked_bytes({std::max<int64_t>(elems, 1)}, esize, "backward workspace")) + 255) & ~size_t(255);
    return at;
  };
  const int64_t Hm = s.H * std::max<int64_t>(s.m, 1), BHm = p.BH * std::max<int64_t>(s.m, 1);
  p.ppart = take(p.proj ? checked_product({p.psplits, 2, p.n}, "backward workspace") : 0, 4);
  p.kp = take(p.n, 4), p.vp = take(p.n, 4), p.kp16 = take(p.n, 2), p.vp16 = take(p.n, 2);
  p.klo = take(p.proj && p.map == kRelu ? p.n : 0, 2);
  p.dkp = take(p.n, 2), p.dvp = take(p.n, 2);
  p.wt = take(p.kern ? Hm * s.D : 0, 2), p.shift = take(p.kern ? Hm : 0, 4);
  p.ut = take(p.kern ? BHm * s.D : 0, 2), p.slot = take(p.kern ? BHm : 0, 4), p.z = take(p.kern ? BHm : 0, 4);
  p.Sp = take(p.kern && !p.proj ? checked_product({p.ssplits, BHm, s.D}, "backward workspace") : 0, 4);
  p.zp = take(p.kern && !p.proj ? p.ssplits * BHm : 0, 4);
  p.dst = take(p.kern ? BHm * s.D : 0, 2), p.dzt = take(p.kern ? BHm : 0, 4);
  p.stats = take(checked_product({p.BH, s.Nq}, "backward workspace"), 8);
  const int64_t part = checked_product({p.qsplits, p.BH, p.L, s.D}, "backward workspace");
  p.pu = take(part, 4), p.pg = take(p.qsplits * p.BH * p.L, 4), p.pk = take(p.lin ? part : 0, 4);
  p.total = o;
  return p;
}

template <int D>
void set_attributes() {
  static bool done = [] {
    const size_t state_smem = size_t((128 + 64) * (D + 8) * 2 + D * (64 + 8) * 2 + 64 * 4);
    cuda_check(
        cudaFuncSetAttribute(state_kernel<float, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(state_smem)),
        "attr");
    cuda_check(cudaFuncSetAttribute(state_pipe_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(StatePipe<D>::smem_bytes)),
               "attr");
    cuda_check(cudaFuncSetAttribute(project_pipe_kernel<bf16, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(ProjPipe::smem_bytes)),
               "attr");
    cuda_check(cudaFuncSetAttribute(tc::query_rows<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(tc::QRows<D>::smem_bytes)),
               "attr");
    cuda_check(cudaFuncSetAttribute(tc::query_slots<D, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(tc::QSlots<D>::smem_bytes)),
               "attr");
    cuda_check(cudaFuncSetAttribute(tc::query_slots<D, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(tc::QSlots<D>::smem_bytes)),
               "attr");
    cuda_check(cudaFuncSetAttribute(tc::key_rows<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(tc::KRows<D>::smem_bytes)),
               "attr");
    cuda_check(cudaFuncSetAttribute(tc::project_back<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(tc::PBack<D>::smem_bytes)),
               "attr");
    return true;
  }();
  (void)done;
}

unsigned grid1(int64_t n) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(8192, (n + 255) / 256)));
}

template <int D>
void launch(FlurkaMethod method, const FlurkaShape& s, const FlurkaInputs& in, const FlurkaGrads& g, char* ws,
            const Plan& p, cudaStream_t st) {
  set_attributes<D>();
  LaunchProfile prof("flurka backward profile", st);
  prof.mark("start");
  const int64_t H = s.H, BH = p.BH, k = s.k, m = s.m;
  auto F32 = [&](size_t off) { return reinterpret_cast<float*>(ws + off); };
  auto B16 = [&](size_t off) { return reinterpret_cast<bf16*>(ws + off); };
  const float sfeat = std::pow(float(D), -0.25f);
  const float sc = p.map == kElu ? 1.0f : sfeat;
  const int64_t Hw = !p.kern ? 0 : p.map == kElu ? 1 : in.w.heads;
  // 1. W^T (the feature keys; identity for elu).
  if (p.kern) {
    prepare_features<bf16><<<grid1(Hw * m * D), 256, 0, st>>>(static_cast<const bf16*>(in.w.data), Hw, D, m,
                                                              p.map == kElu, B16(p.wt), nullptr, 0, nullptr, 0);
    cuda_check(cudaGetLastError(), "prepare_features");
  }
  // 2. K' = E K, V' = F V: one slice per split, summed in split order (fp32 and bf16 copies).
  const Rows kp_rows{F32(p.kp), H * k * D, k * D, D}, vp_rows{F32(p.vp), H * k * D, k * D, D};
  const Rows kp16{B16(p.kp16), H * k * D, k * D, D}, vp16{B16(p.vp16), H * k * D, k * D, D};
  const Rows dkp{B16(p.dkp), H * k * D, k * D, D}, dvp{B16(p.dvp), H * k * D, k * D, D};
  if (p.proj) {
    float* part = F32(p.ppart);
    dim3 grid(unsigned(p.prt * p.pct), unsigned(p.psplits), unsigned(H * 2));
    project_pipe_kernel<bf16, D><<<grid, ProjPipe::NT, ProjPipe::smem_bytes, st>>>(
        rows_of(in.e), rows_of(in.f), rows_of(in.k), rows_of(in.v), s.B, H, k, s.N, p.pchunk, int(p.pct), false, part,
        part + p.psplits * p.n, p.n);
    cuda_check(cudaGetLastError(), "project_pipe_kernel");
    tc::reduce_projection<<<grid1(p.n), 256, 0, st>>>(part, p.psplits, p.n, F32(p.kp), F32(p.vp), B16(p.kp16),
                                                      B16(p.vp16), p.map == kRelu ? B16(p.klo) : nullptr);
    cuda_check(cudaGetLastError(), "reduce_projection");
    prof.mark("project");
  }
  // 3. The kernel state and the query-side slots (U = S~ / z~, bias or weight, z~).
  if (p.kern) {
    const dim3 grid{unsigned(p.mt), unsigned(p.proj ? 1 : p.ssplits), unsigned(BH)};
    if (p.proj) {  // k <= 256 rows in one split: the slots directly
      const size_t smem = size_t((128 + 64) * (D + 8) * 2 + D * (64 + 8) * 2 + 64 * 4);
      state_kernel<float, D><<<grid, 256, smem, st>>>(kp_rows, vp_rows, B16(p.wt), Hw, F32(p.shift), H, k, m, k, p.map,
                                                      sc, nullptr, F32(p.z), B16(p.ut), F32(p.slot));
      cuda_check(cudaGetLastError(), "state_kernel");
    } else {
      state_pipe_kernel<D><<<grid, 256, StatePipe<D>::smem_bytes, st>>>(rows_of(in.k), rows_of(in.v), B16(p.wt), Hw,
                                                                        F32(p.shift), H, s.N, m, p.schunk, p.map, sc,
                                                                        F32(p.Sp), F32(p.zp), true);
      cuda_check(cudaGetLastError(), "state_pipe_kernel");
      tc::reduce_state<<<grid1(BH * m * D), 256, 0, st>>>(F32(p.Sp), F32(p.zp), p.ssplits, F32(p.shift), Hw, H, BH, m,
                                                          D, p.map, B16(p.ut), F32(p.slot), F32(p.z));
      cuda_check(cudaGetLastError(), "reduce_state");
    }
    prof.mark("state");
  }
  // 4. Query rows (dq, row stats) and 5. query slots (dU, g, dkey partials), 6. their ordered sums.
  const bf16* keys = p.kern ? B16(p.wt) : B16(p.kp16);
  const int keys_bh = p.kern ? 0 : 1;
  const int64_t Hk = p.kern ? Hw : BH;
  const bf16* U = p.kern ? B16(p.ut) : B16(p.vp16);
  const float* slot = p.kern ? F32(p.slot) : nullptr;
  const float a = p.kern ? sc : 1.0f / std::sqrt(float(D));
  const int L = int(p.L);
  float2* stats = reinterpret_cast<float2*>(ws + p.stats);
  tc::query_rows<D><<<dim3(unsigned((s.Nq + 127) / 128), unsigned(BH)), 256, tc::QRows<D>::smem_bytes, st>>>(
      rows_of(in.q), rows_of(g.dout), rows_of(g.dq), keys, keys_bh, Hk, U, slot, H, s.Nq, L, p.map, a, stats);
  cuda_check(cudaGetLastError(), "query_rows");
  prof.mark("query_rows");
  const dim3 qg(unsigned((L + 63) / 64), unsigned(p.qsplits), unsigned(BH));
  if (p.lin)
    tc::query_slots<D, true><<<qg, 128, tc::QSlots<D>::smem_bytes, st>>>(rows_of(in.q), rows_of(g.dout), keys, keys_bh,
                                                                         Hk, U, slot, H, s.Nq, L, p.map, a, stats,
                                                                         p.qchunk, F32(p.pu), F32(p.pg), F32(p.pk));
  else
    tc::query_slots<D, false><<<qg, 128, tc::QSlots<D>::smem_bytes, st>>>(rows_of(in.q), rows_of(g.dout), keys, keys_bh,
                                                                          Hk, U, slot, H, s.Nq, L, p.map, a, stats,
                                                                          p.qchunk, F32(p.pu), F32(p.pg), nullptr);
  cuda_check(cudaGetLastError(), "query_slots");
  prof.mark("query_slots");
  if (p.kern)
    tc::reduce_slots<<<grid1(BH * L * D), 256, 0, st>>>(F32(p.pu), F32(p.pg), nullptr, p.qsplits, BH, L, D, F32(p.z), a,
                                                        B16(p.dst), F32(p.dzt), nullptr);
  else
    tc::reduce_slots<<<grid1(BH * L * D), 256, 0, st>>>(F32(p.pu), F32(p.pg), F32(p.pk), p.qsplits, BH, L, D, nullptr,
                                                        a, B16(p.dvp), nullptr, B16(p.dkp));
  cuda_check(cudaGetLastError(), "reduce_slots");
  prof.mark("reduce");
  // 7. Key side of the kernel maps: dK', dV' (projected) or dk, dv.
  if (p.kern) {
    const int64_t Lk = p.proj ? k : s.N;
    const Rows x = p.proj ? kp16 : rows_of(in.k), y = p.proj ? vp16 : rows_of(in.v);
    const Rows dx = p.proj ? dkp : rows_of(g.dk), dy = p.proj ? dvp : rows_of(g.dv);
    const Rows xlo = p.proj && p.map == kRelu ? Rows{B16(p.klo), H * k * D, k * D, D} : Rows{nullptr, 0, 0, 0};
    tc::key_rows<D><<<dim3(unsigned((Lk + 127) / 128), unsigned(BH)), 256, tc::KRows<D>::smem_bytes, st>>>(
        x, xlo, y, B16(p.wt), Hw, B16(p.dst), F32(p.dzt), F32(p.shift), H, Lk, int(m), p.map, sc, dx, dy);
    cuda_check(cudaGetLastError(), "key_rows");
    prof.mark("key_rows");
  }
  // 8. dK = E^T dK', dE = sum dK' K^T (and F, V).
  if (p.proj) {
    // One member (B = 1, per-head E, F): blocks take several column tiles and keep dK' / dV' in shared memory,
    // as long as about 4 waves of blocks remain.
    const int64_t ntiles = (s.N + 63) / 64, members = in.e.heads == 1 ? s.B * H : s.B;
    int tiles = 1;
    while (members == 1 && tiles < 8 && ntiles / (2 * tiles) * in.e.heads * 2 >= 8 * sms()) tiles *= 2;
    const dim3 grid(unsigned((ntiles + tiles - 1) / tiles), unsigned(in.e.heads), 2);
    tc::project_back<D><<<grid, 256, tc::PBack<D>::smem_bytes, st>>>(
        rows_of(in.e), rows_of(in.f), rows_of(in.k), rows_of(in.v), B16(p.dkp), B16(p.dvp), s.B, H, in.e.heads, int(k),
        s.N, tiles, rows_of(g.dk), rows_of(g.dv), static_cast<bf16*>(g.de), static_cast<bf16*>(g.df));
    cuda_check(cudaGetLastError(), "project_back");
    prof.mark("project_back");
  }
}

}  // namespace

namespace tcrun {

template <int D>
void run(FlurkaMethod m, const FlurkaShape& s, const FlurkaInputs& in, const FlurkaGrads& g, cudaStream_t st) {
  const Plan p = plan_of<D>(m, s);
  char* ws = nullptr;
  cuda_check(cudaMallocAsync(reinterpret_cast<void**>(&ws), p.total, st), "cudaMallocAsync(backward scratch)");
  try {
    launch<D>(m, s, in, g, ws, p, st);
  } catch (...) {
    cudaFreeAsync(ws, st);
    throw;
  }
  cuda_check(cudaFreeAsync(ws, st), "cudaFreeAsync(backward scratch)");
}

}  // namespace tcrun

}  // namespace splat::fk
