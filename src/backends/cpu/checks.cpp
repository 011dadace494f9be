#include "checks.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "splat/error.hpp"

namespace splat::cpu {

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
            // Increasing keys: key_lengths cut a span to a prefix (visible_keys).
            require(c == 0 || key > plan.gather_keys[size_t(sp.key_begin + c - 1)], "plan: gather keys not increasing");
          }
          if (!sp.full)
            require(sp.mask_offset >= 0 && (sp.mask_offset + int64_t(t.row_count) * sp.key_count + 63) / 64 <=
                                               int64_t(plan.gather_mask.size()),
                    "plan: gather mask out of range");
        } else {
          require(sp.kind != SpanKind::Affine || sp.key_stride >= 1, "plan: span key stride must be >= 1");
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

void check_key_lengths(const int32_t* key_lengths, int64_t B, int64_t n) {
  if (!key_lengths) return;
  for (int64_t b = 0; b < B; ++b)
    require(key_lengths[b] >= 0 && key_lengths[b] <= n, "key_lengths[" + std::to_string(b) +
                                                            "] = " + std::to_string(key_lengths[b]) +
                                                            " is outside [0, N=" + std::to_string(n) + "]");
}

Memory memory_of(const TensorView& t, const char* name) {
  size_t last = 0;  // element offset of the last element (strides >= 0, checked by check_attention_args)
  for (int a = 0; a < 4; ++a) {
    if (t.shape[a] <= 0 || t.stride[a] < 0) return {nullptr, 0, name};  // an unused (or refused) view
    last += size_t(t.shape[a] - 1) * size_t(t.stride[a]);
  }
  return {t.data, (last + 1) * dtype_size(t.dtype), name};
}

Memory memory_of(const float* lse, int64_t count, const char* name) {
  return {lse, lse ? size_t(count) * sizeof(float) : 0, name};
}

void check_disjoint(const Memory& out, std::initializer_list<Memory> inputs) {
  if (!out.data || out.bytes == 0) return;
  const auto lo = reinterpret_cast<uintptr_t>(out.data), hi = lo + out.bytes;
  for (const Memory& in : inputs) {
    if (!in.data || in.bytes == 0) continue;
    const auto a = reinterpret_cast<uintptr_t>(in.data), b = a + in.bytes;
    require(hi <= a || b <= lo, std::string(out.name) + " overlaps " + in.name +
                                    " in memory: outputs need their own buffers (an output written over an input "
                                    "gives a wrong answer)");
  }
}

void check_backward_disjoint(const BackwardTensors& t) {
  const std::initializer_list<Memory> inputs = {
      memory_of(t.q, "q"),     memory_of(t.k, "k"),       memory_of(t.v, "v"),
      memory_of(t.out, "out"), memory_of(t.dout, "dout"), memory_of(t.lse, t.q.B() * t.q.H() * t.q.N(), "lse")};
  const Memory dq = memory_of(t.dq, "dq"), dk = memory_of(t.dk, "dk"), dv = memory_of(t.dv, "dv");
  check_disjoint(dq, inputs);
  check_disjoint(dk, inputs);
  check_disjoint(dv, inputs);
  check_disjoint(dq, {dk, dv});  // gradients written over each other are wrong too
  check_disjoint(dk, {dv});
}

}  // namespace splat::cpu
