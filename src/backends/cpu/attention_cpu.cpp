// Fast CPU attention over a plan: validates, brings K/V into float32 rows once per call, then
// runs every pass's tile tasks over (task, batch, head) on OpenMP threads, longest tasks first.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "simd.hpp"
#include "span_masks.hpp"
#include "splat/attention.hpp"
#include "splat/error.hpp"
#include "tile_kernel.hpp"

namespace splat {

namespace {

// Checks the plan against itself and N, so a corrupt plan is an Error and never a wild read.
void check_plan(const Plan& plan, int64_t n) {
  require(plan.acsr.n == n,
          "plan was made for N=" + std::to_string(plan.acsr.n) + " but the tensors have N=" + std::to_string(n));
  require(!plan.passes.empty(), "plan has no passes");
  for (const Pass& pass : plan.passes) {
    for (const TileTask& t : pass.tasks) {
      require(t.row_count >= 0 && t.span_begin >= 0 && t.span_begin <= t.span_end &&
                  size_t(t.span_end) <= pass.spans.size(),
              "plan: task span range out of bounds");
      if (t.row_count == 0) continue;
      const int64_t last = t.row_begin + t.row_stride * (t.row_count - 1);
      require(t.row_begin >= 0 && t.row_begin < n && last >= 0 && last < n, "plan: task rows out of range");
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
            require(sp.segment >= 0 && size_t(sp.segment) < plan.acsr.segments.size(),
                    "plan: span segment out of range");
        }
      }
    }
  }
}

}  // namespace

void attention_cpu(const Plan& plan, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const AttentionOptions& opt) {
  check_attention_args(q, k, v, out);
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

  // One parallel region and as few barriers as the data flow allows: with the default OpenMP wait
  // policy each barrier spins, which costs dearly on an oversubscribed machine.
#pragma omp parallel num_threads(threads)
  {
    if (f32) {
#pragma omp for collapse(2) schedule(static) nowait
      for (int64_t bh = 0; bh < B * Hkv; ++bh)
        for (int64_t j = 0; j < N; ++j) {
          const float* r = static_cast<const float*>(v.data) + v.offset(bh / Hkv, bh % Hkv, j);
          bool ok = true;
          for (int64_t d = 0; d < D; ++d) ok &= std::isfinite(r[d]);
          v_bad[size_t(bh * N + j)] = !ok;
        }
    }
#pragma omp for schedule(dynamic, 4) nowait
    for (size_t j = 0; j < masks.jobs.size(); ++j) cpu::fill_span_masks(plan, masks, j);
#pragma omp barrier

    cpu::Scratch& s = *scratch[size_t(omp_get_thread_num())];
    for (size_t p = 0; p < plan.passes.size(); ++p) {
      const Pass& pass = plan.passes[p];
      const int64_t T = int64_t(pass.tasks.size());
#pragma omp for collapse(3) schedule(dynamic, 1)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < H; ++h) {
            const int64_t hk = h / (H / Hkv);
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
              hv.lse2 = lse2.data() + (b * H + h) * N;
              if (f32)
                hv.o32 = static_cast<float*>(out.data) + out.offset(b, h, 0), hv.ld_o32 = out.stride[2];
              else
                hv.o32 = o32.data() + (b * H + h) * N * D, hv.ld_o32 = D;
            }
            const TileTask& task = pass.tasks[size_t(t)];
            for (int sub = 0; sub * cpu::kLanes < task.row_count; ++sub)
              cpu::run_subtile(plan, masks, int(p), task, sub, p == 0, hv, s);
          }
    }
    if (multi && !f32) {
#pragma omp for collapse(2) schedule(static) nowait
      for (int64_t bh = 0; bh < B * H; ++bh)
        for (int64_t i = 0; i < N; ++i)
          cpu::store_row(o32.data() + (bh * N + i) * D, out.dtype, out.data, out.offset(bh / H, bh % H, i), D);
    }
  }
}

}  // namespace splat
