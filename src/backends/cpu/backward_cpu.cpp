// Fast CPU backward over a plan and its transpose: validates, prepares (L2 = lse * log2 e, Delta = rowsum(dO * O),
// mask words of both plans, a NaN/Inf scan), then runs the dQ items (forward plan: task x batch x query head) and
// the dK/dV items (transposed plan: task x batch x kv head) off one atomic counter, as the forward does.
//
// Deterministic for any thread count: every gradient row is written by one item, whose arithmetic does not depend on
// the thread running it; a row covered by several passes is accumulated in pass order (an item of pass p waits
// until every earlier pass of its head is complete), and a kv head sums its query heads in order.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "backward_kernel.hpp"
#include "checks.hpp"
#include "f64_path.hpp"
#include "simd.hpp"
#include "spin_wait.hpp"
#include "splat/attention.hpp"
#include "splat/cpu_features.hpp"
#include "splat/error.hpp"
#include "tile_ops.hpp"

namespace splat {

namespace {

using cpu::wait_until;

void check_backward_args(const Plan& plan, const BackwardTensors& t) {
  check_attention_args(t.q, t.k, t.v, t.out);
  check_attention_args(t.q, t.k, t.v, t.dout);
  check_attention_args(t.dq, t.dk, t.dv, t.dq);
  require(t.dq.dtype == t.q.dtype && t.dq.device == t.q.device,
          "attention_backward: dq, dk and dv must have the dtype and device of q");
  for (int a = 0; a < 4; ++a)
    require(t.dq.shape[a] == t.q.shape[a] && t.dk.shape[a] == t.k.shape[a],
            "attention_backward: dq must have the shape of q, dk and dv the shape of k");
  require(t.q.device < 0, "attention_backward_cpu needs host tensors (device = -1)");
  require(plan.transposed != nullptr,
          "attention_backward_cpu: the plan has no transpose; call add_transpose(plan) once after make_plan "
          "(dK and dV run over the rows of the transposed pattern)");
}

// One queue of work for the shared counter: the passes of one plan over `heads` heads per batch row.
struct Queue {
  const Plan* plan;
  const cpu::SpanMasks* masks;
  int64_t bh;                                    // batch x heads
  std::vector<int64_t> first;                    // first item of each pass (relative), and the total at the end
  std::unique_ptr<std::atomic<int64_t>[]> done;  // [pass * bh + e]: items finished
  Queue(const Plan& p, const cpu::SpanMasks& m, int64_t bh_) : plan(&p), masks(&m), bh(bh_) {
    const size_t P = p.passes.size();
    first.assign(P + 1, 0);
    for (size_t e = 0; e < P; ++e) first[e + 1] = first[e] + int64_t(p.passes[e].tasks.size()) * bh;
    done.reset(new std::atomic<int64_t>[P * size_t(bh)]);
    for (size_t e = 0; e < P * size_t(bh); ++e) done[e].store(0, std::memory_order_relaxed);
  }
  int64_t total() const { return first.back(); }
};

}  // namespace

void attention_backward_cpu(const Plan& plan, const BackwardTensors& t, const AttentionOptions& opt) {
  require_x86_64_v3("attention_backward_cpu");
  check_backward_args(plan, t);
  require(opt.threads >= 0 && opt.threads <= 4096,
          "threads must be 0 (all hardware threads) or 1 ... 4096, got " + std::to_string(opt.threads));
  require(std::isfinite(opt.scale), "scale must be finite");
  const int64_t B = t.q.B(), H = t.q.H(), Hkv = t.k.H(), N = t.q.N(), D = t.q.D(), group = H / Hkv;
  cpu::check_plan(plan, N);
  cpu::check_plan(*plan.transposed, N);
  cpu::check_key_lengths(opt.key_lengths, B, N);
  cpu::check_backward_disjoint(t);
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const double scale = opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(D));
  if (t.q.dtype == DType::F64)
    return cpu::attention_backward_f64(plan.acsr, plan.transposed->acsr, t, scale, opt.key_lengths, threads);
  require(t.lse != nullptr, "attention_backward_cpu needs the forward's lse (the lse output of attention_cpu)");
  const Plan& tplan = *plan.transposed;

  // Everything sized before the parallel regions: an allocation failure there would terminate.
  std::vector<float> L2(size_t(B * H * N)), delta(size_t(B * H * N));
  cpu::SpanMasks qmasks = cpu::layout_span_masks(plan), kmasks = cpu::layout_span_masks(tplan);
  const int64_t Dp = (D + 7) / 8 * 8;
  std::vector<float> rowbuf(size_t(threads) * size_t(2 * Dp));
  const bool f32 = t.q.dtype == DType::F32;
  const bool q_multi = plan.passes.size() > 1, k_multi = tplan.passes.size() > 1;
  std::vector<float> dq32(!f32 && q_multi ? size_t(B * H * N * D) : 0);
  std::vector<float> dk32(!f32 && k_multi ? size_t(B * Hkv * N * D) : 0), dv32(dk32.size());
  std::vector<std::unique_ptr<cpu::BackwardScratch>> scratch(static_cast<size_t>(threads));
  for (auto& s : scratch) s = std::make_unique<cpu::BackwardScratch>(D);
  Queue qq(plan, qmasks, B * H), kq(tplan, kmasks, B * Hkv);

  // Prepare: L2, Delta, mask words, and whether any input is NaN/Inf.
  bool bad = false;
#pragma omp parallel num_threads(threads) reduction(|| : bad)
  {
    float* o = rowbuf.data() + size_t(omp_get_thread_num()) * size_t(2 * Dp);
    float* g = o + Dp;
#pragma omp for schedule(static) nowait
    for (int64_t e = 0; e < B * H * N; ++e) {
      const int64_t b = e / (H * N), h = e / N % H, i = e % N;
      cpu::load_row(t.out.data, t.out.dtype, t.out.offset(b, h, i), D, o);
      cpu::load_row(t.dout.data, t.dout.dtype, t.dout.offset(b, h, i), D, g);
      double dl = 0.0;
      for (int64_t d = 0; d < D; ++d) dl += double(o[d]) * double(g[d]);
      delta[size_t(e)] = float(dl);
      bad = bad || !cpu::row_finite(o, D) || !cpu::row_finite(g, D) || std::isnan(t.lse[e]) || t.lse[e] == INFINITY;
      cpu::load_row(t.q.data, t.q.dtype, t.q.offset(b, h, i), D, o);
      bad = bad || !cpu::row_finite(o, D);
      // Rows without keys (lse -inf) get L2 = +inf: P = exp2(S2 - L2) = 0 whatever S2 is.
      L2[size_t(e)] = t.lse[e] == -INFINITY ? INFINITY : float(double(t.lse[e]) * 1.4426950408889634);
    }
#pragma omp for schedule(static) nowait
    for (int64_t e = 0; e < B * Hkv * N; ++e) {
      const int64_t b = e / (Hkv * N), h = e / N % Hkv, j = e % N;
      cpu::load_row(t.k.data, t.k.dtype, t.k.offset(b, h, j), D, o);
      cpu::load_row(t.v.data, t.v.dtype, t.v.offset(b, h, j), D, g);
      bad = bad || !cpu::row_finite(o, D) || !cpu::row_finite(g, D);
    }
#pragma omp for schedule(dynamic, 4) nowait
    for (size_t j = 0; j < qmasks.jobs.size(); ++j) cpu::fill_span_masks(plan, qmasks, j);
#pragma omp for schedule(dynamic, 4)
    for (size_t j = 0; j < kmasks.jobs.size(); ++j) cpu::fill_span_masks(tplan, kmasks, j);
  }

  const size_t esize = dtype_size(t.q.dtype);
  auto base_of = [&](const TensorView& v, int64_t b, int64_t h) {
    return reinterpret_cast<float*>(static_cast<char*>(v.data) + v.offset(b, h, 0) * esize);
  };
  std::atomic<int64_t> next{0};
  const int64_t total = qq.total() + kq.total();
#pragma omp parallel num_threads(threads)
  {
    cpu::BackwardScratch& s = *scratch[size_t(omp_get_thread_num())];
    for (int64_t idx; (idx = next.fetch_add(1, std::memory_order_relaxed)) < total;) {
      const bool is_q = idx < qq.total();
      Queue& qu = is_q ? qq : kq;
      const int64_t rel = is_q ? idx : idx - qq.total();
      const int64_t p = std::upper_bound(qu.first.begin(), qu.first.end(), rel) - qu.first.begin() - 1;
      const int64_t task_i = (rel - qu.first[size_t(p)]) / qu.bh, e = (rel - qu.first[size_t(p)]) % qu.bh;
      for (int64_t x = 0; x < p; ++x)  // every earlier pass of this head (its rows accumulate in pass order)
        wait_until(qu.done[size_t(x * qu.bh + e)], int64_t(qu.plan->passes[size_t(x)].tasks.size()));
      const int64_t heads = is_q ? H : Hkv, b = e / heads, h = e % heads;
      cpu::BackwardView bv;
      bv.q = &t.q, bv.k = &t.k, bv.v = &t.v, bv.dout = &t.dout;
      bv.b = b, bv.h = h, bv.H = H, bv.group = group;
      bv.L2 = L2.data(), bv.delta = delta.data();
      bv.q_scale = float(scale * 1.4426950408889634), bv.scale = float(scale);
      bv.key_limit = opt.key_lengths ? opt.key_lengths[b] : N;
      bv.guard = bad;
      bv.acc1 = bv.acc2 = nullptr, bv.ld1 = bv.ld2 = D;
      bv.out1 = is_q ? &t.dq : &t.dk, bv.out2 = &t.dv;
      if (f32) {
        bv.acc1 = base_of(*bv.out1, b, h), bv.ld1 = bv.out1->stride[2];
        bv.acc2 = base_of(t.dv, b, h), bv.ld2 = t.dv.stride[2];
      } else if (is_q && q_multi) {
        bv.acc1 = dq32.data() + e * N * D;
      } else if (!is_q && k_multi) {
        bv.acc1 = dk32.data() + e * N * D, bv.acc2 = dv32.data() + e * N * D;
      }
      const TileTask& task = qu.plan->passes[size_t(p)].tasks[size_t(task_i)];
      for (int sub = 0; sub * cpu::kLanes < task.row_count; ++sub) {
        if (is_q)
          cpu::backward_dq_subtile(plan, qmasks, int(p), task, sub, p == 0, bv, s);
        else
          cpu::backward_dkdv_subtile(tplan, kmasks, int(p), task, sub, p == 0, bv, s);
      }
      qu.done[size_t(p * qu.bh + e)].fetch_add(1, std::memory_order_release);
    }
  }

  // Multi-pass F16/BF16: the float32 accumulators -> the outputs.
  auto convert = [&](const std::vector<float>& src, const TensorView& dst, int64_t heads) {
    if (src.empty()) return;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t e = 0; e < B * heads * N; ++e)
      cpu::store_row(src.data() + e * D, dst.dtype, dst.data, dst.offset(e / (heads * N), e / N % heads, e % N), D);
  };
  convert(dq32, t.dq, H);
  convert(dk32, t.dk, Hkv);
  convert(dv32, t.dv, Hkv);
}

}  // namespace splat
