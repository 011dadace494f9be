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

#include "simd.hpp"
#include "span_masks.hpp"
#include "splat/attention.hpp"
#include "splat/cpu_features.hpp"
#include "splat/error.hpp"
#include "tile_kernel.hpp"

namespace splat {

namespace {

void wait_until(const std::atomic<int64_t>& counter, int64_t target) {
  for (int spin = 0; counter.load(std::memory_order_acquire) < target; ++spin) {
    if (spin < 2000)
      _mm_pause();
    else
      std::this_thread::yield();
  }
}

// Checks the plan against itself and N, so a corrupt plan is an Error and never a wild read.
void check_plan(const Plan& plan, int64_t n) {
  require(plan.acsr.n == n,
          "plan was made for N=" + std::to_string(plan.acsr.n) + " but the tensors have N=" + std::to_string(n));
  require(!plan.passes.empty(), "plan has no passes");
  // Rows: pass 0 covers each exactly once, a later pass at most once (its tasks run concurrently).
  std::vector<uint8_t> seen(static_cast<size_t>(n));
  for (size_t p = 0; p < plan.passes.size(); ++p) {
    std::fill(seen.begin(), seen.end(), uint8_t(0));
    for (const TileTask& t : plan.passes[p].tasks) {
      if (t.row_count <= 0) continue;
      const int64_t last = t.row_begin + t.row_stride * (t.row_count - 1);
      require(t.row_begin >= 0 && t.row_begin < n && last >= 0 && last < n, "plan: task rows out of range");
      for (int64_t r = 0; r < t.row_count; ++r) {
        uint8_t& s = seen[size_t(t.row_begin + t.row_stride * r)];
        if (s)
          fail(ErrorCode::Internal, "plan: pass " + std::to_string(p) + " covers row " +
                                        std::to_string(t.row_begin + t.row_stride * r) + " twice");
        s = 1;
      }
    }
    if (p == 0)
      for (int64_t i = 0; i < n; ++i)
        if (!seen[size_t(i)]) fail(ErrorCode::Internal, "plan: pass 0 does not cover row " + std::to_string(i));
  }
  for (const Pass& pass : plan.passes) {
    for (const TileTask& t : pass.tasks) {
      require(t.row_count >= 0 && t.span_begin >= 0 && t.span_begin <= t.span_end &&
                  size_t(t.span_end) <= pass.spans.size(),
              "plan: task span range out of bounds");
      if (t.row_count == 0) continue;
      for (int32_t s = t.span_begin; s < t.span_end; ++s) {
        const KeySpan& sp = pass.spans[size_t(s)];
        if (sp.key_count <= 0) continue;
        if (sp.kind == SpanKind::Gather) {
          require(sp.key_begin >= 0 && size_t(sp.key_begin + sp.key_count) <= plan.gather_keys.size(),
                  "plan: gather span out of range");
          for (int64_t c = 0; c < sp.key_count; ++c) {
            const int64_t key = plan.gather_keys[size_t(sp.key_begin + c)];
            require(key >= 0 && key < n, "plan: gather key out of range");
          }
          if (!sp.full)
            require(sp.mask_offset >= 0 && (sp.mask_offset + int64_t(t.row_count) * sp.key_count + 63) / 64 <=
                                               int64_t(plan.gather_mask.size()),
                    "plan: gather mask out of range");
        } else {
          const int64_t stride = sp.kind == SpanKind::Affine ? sp.key_stride : 1;
          const int64_t last_key = sp.key_begin + stride * (sp.key_count - 1);
          require(sp.key_begin >= 0 && sp.key_begin < n && last_key >= 0 && last_key < n,
                  "plan: span keys out of range");
          if (sp.kind == SpanKind::Affine && !sp.full)
            require(sp.segment >= 0 && size_t(sp.segment) < plan.acsr.segments.size() &&
                        sp.segment2 < int64_t(plan.acsr.segments.size()),
                    "plan: span segment out of range");
        }
      }
    }
  }
}

}  // namespace

void attention_cpu(const Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const AttentionOptions& opt, float* lse) {
  require_x86_64_v3("attention_cpu");  // before any AVX2 code path runs
  check_attention_args(q, k, v, out);
  require(q.dtype != DType::F64, "attention_cpu: dtype f64 is not implemented yet");
  if (lse || opt.key_lengths) fail(ErrorCode::Unsupported, "attention_cpu: lse and key_lengths are not implemented yet");
  require(q.device < 0, "attention_cpu needs host tensors (device = -1)");
  require(opt.threads >= 0, "threads must be >= 0");
  require(std::isfinite(opt.scale), "scale must be finite");
  const int64_t B = q.B(), H = q.H(), Hkv = k.H(), N = q.N(), D = q.D();
  check_plan(plan, N);
  const int threads = opt.threads > 0 ? opt.threads : omp_get_max_threads();
  const double scale = opt.scale != 0.0f ? double(opt.scale) : 1.0 / std::sqrt(double(D));
  const float q_scale = float(scale * 1.4426950408889634);  // log2(e): scores in base 2

  cpu::SpanMasks masks = cpu::layout_span_masks(plan);
  // F32 V: which rows hold NaN/Inf, per (b, kv head, key). (F16/BF16 rows are checked as converted.)
  const bool f32 = q.dtype == DType::F32;
  std::vector<uint8_t> v_bad(f32 ? size_t(B * Hkv * N) : 0);

  // Several passes carry (O, lse) between them in float32: in `out` itself when it is f32, else in a
  // float32 copy that is converted at the end. One pass writes `out` directly.
  const bool multi = plan.passes.size() > 1;
  std::vector<float> o32, lse2;
  if (multi) {
    if (!f32) o32.resize(size_t(B * H * N * D));
    lse2.resize(size_t(B * H * N));
  }
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
      if (multi) {
        hv.lse2 = lse2.data() + bh * N;
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

    if (multi && !f32) {  // f32 state -> f16/bf16 out, once every pass of every head is complete
#pragma omp barrier
#pragma omp for collapse(2) schedule(static) nowait
      for (int64_t e = 0; e < B * H; ++e)
        for (int64_t i = 0; i < N; ++i)
          cpu::store_row(o32.data() + (e * N + i) * D, out.dtype, out.data, out.offset(e / H, e % H, i), D);
    }
  }
}

}  // namespace splat
