// Fast CPU attention over a plan: validates, prepares mask words and V finiteness flags, then runs
// every pass's tile tasks over (task, batch, head) on OpenMP threads, longest tasks first.
//
// Scheduling: one parallel region and no OpenMP barrier inside it. Items (pass, task, batch*head)
// come off one atomic counter in pass order; an item of pass p > 0 waits only until pass p-1 of its
// own (batch, head) is complete (a per-(pass, head) counter), so passes overlap across heads. Waits
// spin briefly and then yield: libgomp's default barriers spin far longer, which costs 2-4x on a
// machine shared with other work.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "checks.hpp"
#include "f64_path.hpp"
#include "simd.hpp"
#include "span_masks.hpp"
#include "spin_wait.hpp"
#include "splat/attention.hpp"
#include "splat/cpu_features.hpp"
#include "splat/error.hpp"
#include "tile_kernel.hpp"

namespace splat {

namespace {

using cpu::wait_until;

}  // namespace

void attention_cpu(const Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const AttentionOptions& opt, float* lse) {
  require_x86_64_v3("attention_cpu");  // before any AVX2 code path runs
  check_attention_args(q, k, v, out);
  require(q.device < 0, "attention_cpu needs host tensors (device = -1)");
  require(opt.threads >= 0 && opt.threads <= 4096,
          "threads must be 0 (all hardware threads) or 1 ... 4096, got " + std::to_string(opt.threads));
  require(std::isfinite(opt.scale), "scale must be finite");
  const int64_t B = q.B(), H = q.H(), Hkv = k.H(), N = q.N(), D = q.D();
  cpu::check_plan(plan, N);
  cpu::check_key_lengths(opt.key_lengths, B, N);
  const cpu::Memory mq = cpu::memory_of(q, "q"), mk = cpu::memory_of(k, "k"), mv = cpu::memory_of(v, "v");
  cpu::check_disjoint(cpu::memory_of(out, "out"), {mq, mk, mv});
  cpu::check_disjoint(cpu::memory_of(lse, B * H * N, "lse"), {mq, mk, mv, cpu::memory_of(out, "out")});
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const double scale = opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(D));
  if (q.dtype == DType::F64) return cpu::attention_f64(plan.acsr, q, k, v, out, scale, opt.key_lengths, threads, lse);
  const float q_scale = float(scale * 1.4426950408889634);  // log2(e): scores in base 2

  cpu::SpanMasks masks = cpu::layout_span_masks(plan);
  // F32 V: which rows hold NaN/Inf, per (b, kv head, key). (F16/BF16 rows are checked as converted.)
  const bool f32 = q.dtype == DType::F32;
  std::vector<uint8_t> v_bad(f32 ? size_t(B * Hkv * N) : 0);

  // Several passes carry (O, lse) between them in float32: in `out` itself when it is f32, else in a
  // float32 copy that is converted at the end. One pass writes `out` directly.
  const bool multi = plan.passes.size() > 1;
  // The caller's lse (when asked) holds the base-2 state between passes and becomes natural log at the end.
  std::vector<float> o32, lse2_own;
  if (multi) {
    if (!f32) o32.resize(size_t(B * H * N * D));
    if (!lse) lse2_own.resize(size_t(B * H * N));
  }
  float* const lse2 = multi ? (lse ? lse : lse2_own.data()) : nullptr;
  std::vector<std::unique_ptr<cpu::Scratch>> scratch(static_cast<size_t>(threads));
  for (auto& s : scratch) s = std::make_unique<cpu::Scratch>(D);
  const size_t esize = dtype_size(q.dtype);
  auto at = [&](const TensorView& t, int64_t b, int64_t h) {
    return static_cast<const void*>(static_cast<const char*>(t.data) + t.offset(b, h, 0) * esize);
  };

  // Work items in pass order; within a pass, task-major (longest tasks first) over batch*head.
  const int64_t BH = B * H, P = int64_t(plan.passes.size());
  std::vector<int64_t> first(size_t(P + 1), 0);
  for (int64_t p = 0; p < P; ++p)
    first[size_t(p + 1)] = first[size_t(p)] + int64_t(plan.passes[size_t(p)].tasks.size()) * BH;
  std::atomic<int64_t> next{0}, prep_done{0};
  const int64_t prep_total = (f32 ? B * Hkv : 0) + int64_t(masks.jobs.size());
  const std::unique_ptr<std::atomic<int64_t>[]> done(new std::atomic<int64_t>[size_t(P * BH)]);
  for (int64_t e = 0; e < P * BH; ++e) done[e].store(0, std::memory_order_relaxed);

#pragma omp parallel num_threads(threads)
  {
    int64_t prepared = 0;
    if (f32) {
#pragma omp for schedule(static) nowait
      for (int64_t bh = 0; bh < B * Hkv; ++bh) {
        for (int64_t j = 0; j < N; ++j) {
          const float* r = static_cast<const float*>(v.data) + v.offset(bh / Hkv, bh % Hkv, j);
          bool ok = true;
          for (int64_t d = 0; d < D; ++d) ok &= std::isfinite(r[d]);
          v_bad[size_t(bh * N + j)] = !ok;
        }
        ++prepared;
      }
    }
#pragma omp for schedule(dynamic, 4) nowait
    for (size_t j = 0; j < masks.jobs.size(); ++j) {
      cpu::fill_span_masks(plan, masks, j);
      ++prepared;
    }
    prep_done.fetch_add(prepared, std::memory_order_release);
    wait_until(prep_done, prep_total);

    cpu::Scratch& s = *scratch[size_t(omp_get_thread_num())];
    for (int64_t idx; (idx = next.fetch_add(1, std::memory_order_relaxed)) < first[size_t(P)];) {
      const int64_t p = std::upper_bound(first.begin(), first.end(), idx) - first.begin() - 1;
      const int64_t t = (idx - first[size_t(p)]) / BH, bh = (idx - first[size_t(p)]) % BH;
      const int64_t b = bh / H, h = bh % H, hk = h / (H / Hkv);
      for (int64_t e = 0; e < p; ++e)  // every earlier pass of this head (an empty one orders nothing)
        wait_until(done[e * BH + bh], int64_t(plan.passes[size_t(e)].tasks.size()));
      cpu::HeadView hv;
      hv.q = &q;
      hv.out = &out;
      hv.b = b, hv.h = h;
      hv.k = at(k, b, hk), hv.ldk = k.stride[2];
      hv.v = at(v, b, hk), hv.ldv = v.stride[2];
      hv.kv_dtype = k.dtype;
      hv.v_bad = f32 ? v_bad.data() + (b * Hkv + hk) * N : nullptr;
      hv.q_scale = q_scale;
      hv.o32 = nullptr, hv.ld_o32 = 0, hv.lse2 = nullptr;
      hv.lse = !multi && lse ? lse + bh * N : nullptr;
      hv.key_limit = opt.key_lengths ? opt.key_lengths[b] : N;
      if (multi) {
        hv.lse2 = lse2 + bh * N;
        if (f32)
          hv.o32 = static_cast<float*>(out.data) + out.offset(b, h, 0), hv.ld_o32 = out.stride[2];
        else
          hv.o32 = o32.data() + bh * N * D, hv.ld_o32 = D;
      }
      const TileTask& task = plan.passes[size_t(p)].tasks[size_t(t)];
      for (int sub = 0; sub * cpu::kLanes < task.row_count; ++sub)
        cpu::run_subtile(plan, masks, int(p), task, sub, p == 0, hv, s);
      done[p * BH + bh].fetch_add(1, std::memory_order_release);
    }

    if (multi && (!f32 || lse)) {  // once every pass of every head is complete
#pragma omp barrier
      if (!f32) {  // f32 state -> f16/bf16 out
#pragma omp for collapse(2) schedule(static) nowait
        for (int64_t e = 0; e < B * H; ++e)
          for (int64_t i = 0; i < N; ++i)
            cpu::store_row(o32.data() + (e * N + i) * D, out.dtype, out.data, out.offset(e / H, e % H, i), D);
      }
      if (lse) {  // base 2 -> natural log (-inf stays -inf)
#pragma omp for schedule(static) nowait
        for (int64_t e = 0; e < B * H * N; ++e) lse[e] *= 0.6931471805599453f;
      }
    }
  }
}

}  // namespace splat
