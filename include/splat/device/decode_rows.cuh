// The decode row program as plain data, and its evaluator: the key runs of query row i of a sequence of length n
// under a pattern & causal. Shared by the host (make_decode_plan compiles it, the CPU decode evaluates it) and the
// CUDA decode kernels (which evaluate it per query row at the length they read from device memory). Compiles as
// C++ under g++, nvcc and NVRTC alike: no includes, fixed-width types, fixed-capacity scratch.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SPLAT_HOST_DEVICE __host__ __device__
#else
#define SPLAT_HOST_DEVICE
#endif

namespace splat {
namespace dev {

typedef long long i64;
typedef unsigned long long u64;

// Keys j of one run: lo <= j <= hi and (j - base) mod stride < width, 1 <= width < stride or stride = width = 1.
// Runs of one row may overlap (a key counts once).
struct DecodeRun {
  i64 lo, hi, base, stride, width;
};

// Instructions in postfix order. Leaf: a pattern family (kind: splat::PatternKind's value) with its parameters;
// Union / Intersection: combine the `arity` run lists on top of the stack.
enum DecodeOp { kDecodeLeaf = 0, kDecodeUnion = 1, kDecodeIntersection = 2 };
struct DecodeInstr {
  int op, arity, kind, pad;
  i64 w, d, s, l, c, b, g, r;
  u64 seed;
};

// The leaf kinds, as splat::PatternKind numbers them (checked against it on the host).
enum DecodeLeaf {
  kLeafDense = 0,
  kLeafCausal,
  kLeafWindow,
  kLeafCausalWindow,
  kLeafDilated,
  kLeafCausalDilated,
  kLeafStrided,
  kLeafFixed,
  kLeafBlocked,
  kLeafGlobal,
  kLeafSink,
  kLeafLongformer,
  kLeafBigBird
};

SPLAT_HOST_DEVICE inline i64 decode_floor_div(i64 a, i64 b) {  // b > 0
  const i64 q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
SPLAT_HOST_DEVICE inline i64 decode_pos_mod(i64 a, i64 b) {
  return a - decode_floor_div(a, b) * b;
}
SPLAT_HOST_DEVICE inline i64 decode_min(i64 a, i64 b) {
  return a < b ? a : b;
}
SPLAT_HOST_DEVICE inline i64 decode_max(i64 a, i64 b) {
  return a > b ? a : b;
}

// Keys in a run.
SPLAT_HOST_DEVICE inline i64 decode_run_count(const DecodeRun& r) {
  if (r.lo > r.hi) return 0;
  // C(y) = #{u in [0, y] : u mod s < w}, extended to negative y so that differences count any interval
  const i64 yh = r.hi - r.base, yl = r.lo - 1 - r.base;
  const i64 ch = decode_floor_div(yh, r.stride) * r.width + decode_min(decode_pos_mod(yh, r.stride) + 1, r.width);
  const i64 cl = decode_floor_div(yl, r.stride) * r.width + decode_min(decode_pos_mod(yl, r.stride) + 1, r.width);
  return ch - cl;
}
SPLAT_HOST_DEVICE inline bool decode_run_contains(const DecodeRun& r, i64 j) {
  return j >= r.lo && j <= r.hi && decode_pos_mod(j - r.base, r.stride) < r.width;
}

// A run clipped to causal [0, i]; none when empty. A residue class (width 1) whose stride exceeds the run holds at
// most one key and becomes that key: so every stride stays below 2^31 (the plan clamps the parameters) and the
// product of two fits in 64 bits.
SPLAT_HOST_DEVICE inline int decode_push(DecodeRun* out, int at, int cap, i64 lo, i64 hi, i64 i, i64 base = 0,
                                         i64 stride = 1, i64 width = 1) {
  lo = decode_max(lo, 0), hi = decode_min(hi, i);
  if (lo > hi || width <= 0 || at < 0) return at;
  if (width >= stride) base = 0, stride = 1, width = 1;
  if (width == 1 && stride > hi - lo) {
    const i64 key = lo + decode_pos_mod(base - lo, stride);
    if (key > hi) return at;
    lo = hi = key, base = 0, stride = 1;
  }
  if (at >= cap) return -1;
  out[at].lo = lo, out[at].hi = hi, out[at].base = decode_pos_mod(base, stride), out[at].stride = stride;
  out[at].width = width;
  return at + 1;
}

SPLAT_HOST_DEVICE inline u64 decode_splitmix64(u64 x) {
  u64 z = x + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Leaf runs of row i at length n (0 <= i < n), clipped to [0, i], appended at out[at]; returns the new end (-1 if
// cap is too small).
SPLAT_HOST_DEVICE inline int decode_leaf(const DecodeInstr& p, i64 i, i64 n, DecodeRun* out, int at, int cap) {
  switch (p.kind) {
    case kLeafDense:
    case kLeafCausal: return decode_push(out, at, cap, 0, i, i);
    case kLeafWindow:
    case kLeafCausalWindow: return decode_push(out, at, cap, i - p.w, i, i);
    case kLeafDilated:
    case kLeafCausalDilated:  // w*d <= i in the second case: no overflow
      return decode_push(out, at, cap, p.w > i / p.d ? 0 : i - p.w * p.d, i, i, i, p.d, 1);
    case kLeafStrided:
      at = decode_push(out, at, cap, i - p.s + 1, i, i);
      return decode_push(out, at, cap, 0, i - p.s, i, i, p.s, 1);
    case kLeafFixed:
      at = decode_push(out, at, cap, i / p.l * p.l, i, i);
      return decode_push(out, at, cap, 0, i, i, p.l - p.c, p.l, p.c);  // j mod l >= l - c
    case kLeafBlocked: return decode_push(out, at, cap, i / p.b * p.b, i, i);
    case kLeafGlobal: return decode_push(out, at, cap, 0, i < p.g ? i : p.g - 1, i);
    case kLeafSink: return decode_push(out, at, cap, 0, decode_min(p.g, n) - 1, i);
    case kLeafLongformer:
      at = decode_push(out, at, cap, 0, i < p.g ? i : p.g - 1, i);
      return decode_push(out, at, cap, i - p.w, i, i);
    case kLeafBigBird: {
      const i64 b = p.b, qb = i / b, nb = (n + b - 1) / b;
      if (qb < p.g) return decode_push(out, at, cap, 0, i, i);
      at = decode_push(out, at, cap, decode_max(0, qb - p.w) * b, i, i);  // the band (its upper half is future)
      at = decode_push(out, at, cap, 0, decode_min(p.g, nb) * b - 1, i);  // global blocks
      for (i64 t = 0; t < p.r; ++t) {  // random blocks, drawn as splat::bigbird_random_block does
        const i64 kb = i64(decode_splitmix64((p.seed << 32) + u64(qb) * u64(p.r) + u64(t)) % u64(nb));
        at = decode_push(out, at, cap, kb * b, kb * b + b - 1, i);
      }
      return at;
    }
    default: return -1;
  }
}

SPLAT_HOST_DEVICE inline i64 decode_gcd(i64 a, i64 b) {
  while (b) {
    const i64 t = a % b;
    a = b, b = t;
  }
  return a;
}
// x^-1 mod m for gcd(x, m) == 1, 0 <= x < m (m < 2^31: the products below fit).
SPLAT_HOST_DEVICE inline i64 decode_inverse(i64 x, i64 m) {
  if (m == 1) return 0;
  i64 t = 0, nt = 1, r = m, nr = x;
  while (nr != 0) {
    const i64 q = r / nr, tt = t - q * nt, rr = r - q * nr;
    t = nt, nt = tt, r = nr, nr = rr;
  }
  return t < 0 ? t + m : t;
}

// Residue classes j = ba (mod sa) and j = bb (mod sb) within [lo, hi], by the Chinese remainder theorem.
SPLAT_HOST_DEVICE inline int decode_classes(i64 ba, i64 sa, i64 bb, i64 sb, i64 lo, i64 hi, i64 i, DecodeRun* out,
                                            int at, int cap) {
  const i64 g = decode_gcd(sa, sb), diff = bb - ba;
  if (decode_pos_mod(diff, g) != 0) return at;
  const i64 m = sb / g;
  const i64 k = decode_pos_mod(diff / g, m) * decode_inverse(decode_pos_mod(sa / g, m), m) % m;
  const i64 lcm = sa * m;  // strides are below 2^31 (see decode_push)
  return decode_push(out, at, cap, lo, hi, i, decode_pos_mod(ba + sa * k, lcm), lcm, 1);
}

// Runs of a & b appended at out[at].
SPLAT_HOST_DEVICE inline int decode_intersect(const DecodeRun& a, const DecodeRun& b, i64 i, DecodeRun* out, int at,
                                              int cap) {
  const i64 lo = decode_max(a.lo, b.lo), hi = decode_min(a.hi, b.hi);
  if (lo > hi) return at;
  if (a.stride == 1 || b.stride == 1) {  // an interval keeps the other's residues
    const DecodeRun& r = a.stride == 1 ? b : a;
    return decode_push(out, at, cap, lo, hi, i, r.base, r.stride, r.width);
  }
  for (i64 u = 0; u < a.width && at >= 0; ++u)  // class by class (widths are small: they come from fixed's c)
    for (i64 v = 0; v < b.width && at >= 0; ++v)
      at = decode_classes(a.base + u, a.stride, b.base + v, b.stride, lo, hi, i, out, at, cap);
  return at;
}

// Runs of row i (0 <= i < n) of the program into runs[0, result); -1 when cap (the capacity of runs, tmp and tmp2)
// is smaller than the plan's max_runs. ends: n_instr ints of scratch.
SPLAT_HOST_DEVICE inline int decode_row_eval(const DecodeInstr* prog, int n_instr, i64 i, i64 n, DecodeRun* runs,
                                             DecodeRun* tmp, DecodeRun* tmp2, int* ends, int cap) {
  int depth = 0, end = 0;
  for (int pc = 0; pc < n_instr; ++pc) {
    const DecodeInstr& op = prog[pc];
    if (op.op == kDecodeLeaf) {
      end = decode_leaf(op, i, n, runs, end, cap);
      if (end < 0) return -1;
      ends[depth++] = end;
      continue;
    }
    const int first = depth - op.arity, begin = first ? ends[first - 1] : 0;
    if (op.op == kDecodeIntersection) {  // fold the operands left to right
      int count = ends[first] - begin;
      for (int e = 0; e < count; ++e) tmp[e] = runs[begin + e];
      for (int o = first + 1; o < depth; ++o) {
        int next = 0;
        for (int x = 0; x < count && next >= 0; ++x)
          for (int y = ends[o - 1]; y < ends[o] && next >= 0; ++y)
            next = decode_intersect(tmp[x], runs[y], i, tmp2, next, cap);
        if (next < 0) return -1;
        for (int e = 0; e < next; ++e) tmp[e] = tmp2[e];
        count = next;
      }
      for (int e = 0; e < count; ++e) runs[begin + e] = tmp[e];
      end = begin + count;
    }  // a union's operands are adjacent: the union is their concatenation
    depth = first;
    ends[depth++] = end;
  }
  return end;
}

}  // namespace dev
}  // namespace splat
