// Sparse-attention cost model: time = per-call overhead + per-tile cost (Q load, output store, prologue:
// proportional to D) + the computed entries' FLOPs (every span's rows x keys box, so the plan's waste counts)
// at a fitted fraction of the bf16 GEMM rate, per head dim.
#include "splat/cost.hpp"

#include <algorithm>

#include "splat/error.hpp"

namespace splat {

namespace {
// Forward: weighted least squares on predicted / measured (linear in the four unknowns) over the 14 "splat
// (default)" rows of docs/BENCHMARKS-cuda.md "Kernel v8" (H200, bindings, bf16, H = 16: window, causal_window,
// blocked at N = 16384 B = 1 and N = 4096 B = 4, D = 64 and 128; dense and causal at N = 8192 B = 2 D = 128).
// Predicted / measured: median 0.94, range 0.90 (causal_window 4096 D=64) - 1.13 (blocked 4096 D=128).
struct Fit {
  double call_s;      // per call
  double tile_s;      // per tile task and head at D = 64 (scaled by D / 64)
  double inv_eff64;   // gemm_flops / achieved FLOP rate on computed entries, D = 64
  double inv_eff128;  // the same at D = 128; linear in D between, constant outside
};
constexpr Fit kForward{30.2e-6, 15.25e-9, 2.208, 1.656};
// Forward + backward (autograd through the bindings): the same fit over the 14 rows of
// docs/BENCHMARKS-backward.md's first table (all seven suite patterns at N = 16384 B = 1 D = 128 and
// N = 4096 B = 4 D = 64, H = 16). The FLOPs counted are still the forward's (4 D per computed entry).
// Predicted / measured: median 1.00, range 0.90 (dilated 4096) - 1.08 (blocked 4096). Only D = 64 at N = 4096
// and D = 128 at N = 16384 were measured, so the split between the per-tile and per-call terms is uncertain.
constexpr Fit kTrain{708e-6, 54.6e-9, 4.704, 5.652};

double fit_time(const Fit& f, const PlanWork& w, double BH, double D, double gemm_flops) {
  const double t = std::clamp((D - 64) / 64, 0.0, 1.0);
  const double inv_eff = f.inv_eff64 + t * (f.inv_eff128 - f.inv_eff64);
  return f.call_s + f.tile_s * double(w.tiles) * BH * (D / 64) + 4 * D * double(w.computed) * BH * inv_eff / gemm_flops;
}
}  // namespace

PlanWork plan_work(const Plan& plan) {
  PlanWork w;
  w.nnz = plan.useful;
  for (const Pass& pass : plan.passes) {
    w.tiles += int64_t(pass.tasks.size());
    for (const TileTask& t : pass.tasks)
      for (int32_t s = t.span_begin; s < t.span_end; ++s) {
        const KeySpan& sp = pass.spans[size_t(s)];
        const int64_t box = int64_t(sp.row_hi - sp.row_lo) * sp.key_count;
        w.computed += box;
        if (sp.kind == SpanKind::Gather) w.gathered += box;
      }
  }
  return w;
}

SparseCost sparse_attention_cost(const Plan& plan, int64_t B, int64_t H, int64_t D, int elem, double bandwidth,
                                 double gemm_flops) {
  require(B >= 1 && H >= 1 && D >= 1 && elem >= 1 && bandwidth > 0 && gemm_flops > 0,
          "sparse_attention_cost: B, H, D, elem must be >= 1 and the ceilings positive");
  SparseCost c;
  c.work = plan_work(plan);
  const double BH = double(B) * double(H), d = double(D), n = double(plan.acsr.n);
  c.flops = 4 * d * double(c.work.nnz) * BH;
  c.bytes = 4 * n * d * double(elem) * BH;  // Q, K, V read, O written once
  c.floor_s = std::max(c.bytes / bandwidth, c.flops / gemm_flops);
  c.predicted_s = fit_time(kForward, c.work, BH, d, gemm_flops);
  c.train_predicted_s = fit_time(kTrain, c.work, BH, d, gemm_flops);
  return c;
}

}  // namespace splat
