// Packed variable-length batches: each sequence is a window of the token axis, run through the forward (or the
// float64 reference) with its own length's plan. Exact by construction: the pattern is applied per sequence.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "checks.hpp"
#include "splat/acsr.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace splat {

namespace {

void check_varlen(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                  const Varlen& batch, const AttentionOptions& opt, const char* what) {
  const std::string w(what);
  check_attention_args(q, k, v, out);
  require(q.B() == 1, w + ": packed tensors are one [1, H, total, D] view (e.g. [total, H, D] memory)");
  require(opt.key_lengths == nullptr, w + ": key_lengths does not apply (cu_seqlens gives the lengths)");
  varlen_check_batch(batch, q.N(), w);
  const cpu::Memory mq = cpu::memory_of(q, "q"), mk = cpu::memory_of(k, "k"), mv = cpu::memory_of(v, "v");
  cpu::check_disjoint(cpu::memory_of(out, "out"), {mq, mk, mv});
}

// Tokens [first, first + n) of a packed view.
TensorView window(const TensorView& t, int64_t first, int64_t n) {
  TensorView s = t;
  s.data = static_cast<char*>(t.data) + size_t(first * t.stride[2]) * dtype_size(t.dtype);
  s.shape[2] = n;
  return s;
}

template <class Run>
void per_sequence(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                  const Varlen& batch, float* lse, Run run) {
  const int64_t H = q.H(), total = q.N();
  std::vector<float> seq_lse;
  for (int64_t b = 0; b < batch.batch; ++b) {
    const int64_t first = batch.cu_seqlens[b], n = batch.cu_seqlens[b + 1] - first;
    if (n == 0) continue;
    if (lse) seq_lse.assign(size_t(H * n), 0.0f);
    run(n, window(q, first, n), window(k, first, n), window(v, first, n), window(out, first, n),
        lse ? seq_lse.data() : nullptr);
    if (lse)  // [1, H, n] -> columns [first, first + n) of [H, total]
      for (int64_t h = 0; h < H; ++h) std::copy_n(seq_lse.data() + h * n, n, lse + h * total + first);
  }
}

}  // namespace

void attention_varlen_cpu(VarlenPlans& plans, const TensorView& q, const TensorView& k, const TensorView& v,
                          const TensorView& out, const Varlen& batch, const AttentionOptions& opt, float* lse) {
  check_varlen(q, k, v, out, batch, opt, "attention_varlen_cpu");
  cpu::check_disjoint(cpu::memory_of(lse, q.H() * q.N(), "lse"), {cpu::memory_of(q, "q"), cpu::memory_of(k, "k"),
                                                                  cpu::memory_of(v, "v"), cpu::memory_of(out, "out")});
  per_sequence(q, k, v, out, batch, lse,
               [&](int64_t n, const TensorView& sq, const TensorView& sk, const TensorView& sv, const TensorView& so,
                   float* sl) { attention_cpu(*plans.get(n), sq, sk, sv, so, opt, sl); });
}

void attention_varlen_reference(const Pattern& pattern, const TensorView& q, const TensorView& k, const TensorView& v,
                                const TensorView& out, const Varlen& batch, const AttentionOptions& opt, float* lse) {
  check_varlen(q, k, v, out, batch, opt, "attention_varlen_reference");
  per_sequence(q, k, v, out, batch, lse,
               [&](int64_t n, const TensorView& sq, const TensorView& sk, const TensorView& sv, const TensorView& so,
                   float* sl) { attention_reference(dense_mask(pattern, n).data(), sq, sk, sv, so, opt, sl); });
}

}  // namespace splat
