// Method names, argument checking and shared small helpers of the FLuRKA family.
#include <string>
#include <utility>
#include <vector>

#include "common/int_math.hpp"
#include "flurka/common.hpp"
#include "splat/error.hpp"
#include "splat/flurka.hpp"

namespace splat {

namespace {
struct Name {
  FlurkaMethod m;
  const char* name;
};
constexpr Name kNames[] = {
    {FlurkaMethod::FlurkaFavor, "flurka-favor"},
    {FlurkaMethod::FlurkaElu, "flurka-elu"},
    {FlurkaMethod::FlurkaRelu, "flurka-relu"},
    {FlurkaMethod::Linformer, "linformer"},
    {FlurkaMethod::PerformerFavor, "performer-favor"},
    {FlurkaMethod::PerformerRelu, "performer-relu"},
    {FlurkaMethod::Linear, "linear"},
};

std::string dims(const MatrixView& x) {
  return "[" + std::to_string(x.heads) + ", " + std::to_string(x.rows) + ", " + std::to_string(x.cols) + "]";
}

void check_tensor(const TensorView& t, const char* name) {
  for (int a = 0; a < 4; ++a)
    require(t.shape[a] > 0, std::string(name) + ": every dimension of [B, H, N, D] must be positive, got dim " +
                                std::to_string(a) + " = " + std::to_string(t.shape[a]));
  require(t.stride[3] == 1, std::string(name) + ": the head dimension D must be contiguous (stride 1)");
  for (int a = 0; a < 3; ++a) require(t.stride[a] >= 0, std::string(name) + ": negative strides are not supported");
  require(t.data != nullptr, std::string(name) + ": null data pointer");
  require(t.shape[2] < (int64_t(1) << 31), std::string(name) + ": sequence length must be below 2^31");
  // Element count, largest offset and byte extent must fit: every path indexes with these products.
  const std::string who = std::string(name) + " [B, H, N, D]";
  checked_bytes({t.shape[0], t.shape[1], t.shape[2], t.shape[3]}, 8, who);
  int64_t span = 1;
  for (int a = 0; a < 4; ++a) span = checked_sum({span, checked_product({t.shape[a] - 1, t.stride[a]}, who)}, who);
  checked_bytes({span}, dtype_size(t.dtype), who);
}

// E/F/W: heads must be 1 (shared) or H (per head), and the matrix must be rows x cols.
void check_matrix(const MatrixView& x, const char* name, int64_t H, int64_t rows, int64_t cols, const char* expect,
                  const TensorView& q) {
  require(x.data != nullptr, std::string(name) + ": null data pointer (the method needs " + name + ")");
  require(x.heads == 1 || x.heads == H, std::string("mismatched heads: ") + name + " has " + std::to_string(x.heads) +
                                            " heads but q has H = " + std::to_string(H) +
                                            " (give one matrix per head or one shared)");
  require(x.rows == rows && x.cols == cols, std::string(name) + " must be " + expect + " = [" + std::to_string(rows) +
                                                ", " + std::to_string(cols) + "] per head, got " + dims(x));
  require(x.device == q.device, std::string(name) + " must live on the same device as q");
  checked_bytes({x.heads, x.rows, x.cols}, 8, std::string(name) + " [heads, rows, cols]");
}
}  // namespace

const char* flurka_method_name(FlurkaMethod m) {
  for (const Name& n : kNames)
    if (n.m == m) return n.name;
  return "?";
}

FlurkaMethod parse_flurka_method(const std::string& s) {
  if (s == "performer") return FlurkaMethod::PerformerFavor;
  for (const Name& n : kNames)
    if (s == n.name) return n.m;
  std::string all;
  for (const Name& n : kNames) all += std::string(all.empty() ? "" : ", ") + n.name;
  fail(ErrorCode::InvalidArgument, "unknown method '" + s + "' (expected one of " + all + ", performer)");
}

std::vector<FlurkaMethod> all_flurka_methods() {
  std::vector<FlurkaMethod> v;
  for (const Name& n : kNames) v.push_back(n.m);
  return v;
}

FeatureMap feature_map_of(FlurkaMethod m) {
  switch (m) {
    case FlurkaMethod::FlurkaFavor:
    case FlurkaMethod::PerformerFavor: return FeatureMap::Favor;
    case FlurkaMethod::FlurkaElu:
    case FlurkaMethod::Linear: return FeatureMap::Elu;
    case FlurkaMethod::FlurkaRelu:
    case FlurkaMethod::PerformerRelu: return FeatureMap::Relu;
    case FlurkaMethod::Linformer: return FeatureMap::None;
  }
  return FeatureMap::None;
}

bool uses_projection(FlurkaMethod m) {
  return m == FlurkaMethod::FlurkaFavor || m == FlurkaMethod::FlurkaElu || m == FlurkaMethod::FlurkaRelu ||
         m == FlurkaMethod::Linformer;
}

bool uses_random_features(FlurkaMethod m) {
  FeatureMap f = feature_map_of(m);
  return f == FeatureMap::Favor || f == FeatureMap::Relu;
}

FlurkaShape check_flurka_args(FlurkaMethod m, const FlurkaInputs& in, const TensorView& out, int64_t causal_chunk) {
  const TensorView &q = in.q, &k = in.k, &v = in.v;
  check_tensor(q, "q");
  check_tensor(k, "k");
  check_tensor(v, "v");
  check_tensor(out, "out");
  // out may also be f32 (the references write float outputs for any storage dtype).
  require(k.dtype == q.dtype && v.dtype == q.dtype && (out.dtype == q.dtype || out.dtype == DType::F32),
          std::string("q, k, v and out must have one dtype (out may be f32), got ") + dtype_name(q.dtype) + ", " +
              dtype_name(k.dtype) + ", " + dtype_name(v.dtype) + ", " + dtype_name(out.dtype));
  require(k.device == q.device && v.device == q.device && out.device == q.device,
          "q, k, v and out must live on the same device");
  require(k.shape[0] == q.shape[0] && v.shape[0] == q.shape[0] && out.shape[0] == q.shape[0],
          "q, k, v and out must have the same batch size B");
  require(k.shape[1] == q.shape[1] && v.shape[1] == q.shape[1] && out.shape[1] == q.shape[1],
          "mismatched heads: q, k, v and out must have the same number of heads H (got " + std::to_string(q.shape[1]) +
              ", " + std::to_string(k.shape[1]) + ", " + std::to_string(v.shape[1]) + ", " +
              std::to_string(out.shape[1]) + ")");
  require(k.shape[3] == q.shape[3] && v.shape[3] == q.shape[3] && out.shape[3] == q.shape[3],
          "q, k, v and out must have the same head dim D");
  require(v.shape[2] == k.shape[2], "k and v must have the same sequence length N");
  require(out.shape[2] == q.shape[2], "out must have as many rows as q");
  FlurkaShape s;
  s.B = q.shape[0], s.H = q.shape[1], s.Nq = q.shape[2], s.N = k.shape[2], s.D = q.shape[3];
  if (causal_chunk > 0) {
    require(m == FlurkaMethod::FlurkaFavor || m == FlurkaMethod::FlurkaElu || m == FlurkaMethod::FlurkaRelu,
            std::string("the causal variant is defined for flurka-favor, flurka-elu and flurka-relu, not ") +
                flurka_method_name(m));
    require(s.Nq == s.N, "causal attention needs as many queries as keys (Nq = N)");
  }
  if (uses_projection(m)) {
    const int64_t kk = in.e.rows;
    if (causal_chunk > 0) {
      require(kk >= 1, "E must have at least one row (r >= 1)");
      require(kk <= causal_chunk, "r = " + std::to_string(kk) + " rows of E exceed the chunk length C = " +
                                      std::to_string(causal_chunk) + " (r > C compresses nothing)");
      check_matrix(in.e, "E", s.H, kk, causal_chunk, "[r, C]", q);
      check_matrix(in.f, "F", s.H, kk, causal_chunk, "[r, C]", q);
    } else {
      require(kk >= 1, "E must have at least one row (k >= 1)");
      require(kk <= s.N, "k = " + std::to_string(kk) + " exceeds the sequence length N = " + std::to_string(s.N) +
                             " (k > N: the projection would not compress)");
      check_matrix(in.e, "E", s.H, kk, s.N, "[k, N]", q);
      check_matrix(in.f, "F", s.H, kk, s.N, "[k, N]", q);
    }
    s.k = kk;
  }
  if (uses_random_features(m)) {
    require(in.w.cols >= 1, "m = 0: W must have at least one random feature (W is [D, m])");
    check_matrix(in.w, "W", s.H, s.D, in.w.cols, "[D, m]", q);
    s.m = in.w.cols;
  } else if (feature_map_of(m) == FeatureMap::Elu) {
    s.m = s.D;
  }
  // Per-head states and scratch of every path (float64 in the references and backward): B H m D, B H k D.
  checked_bytes({s.B, s.H, std::max<int64_t>(s.m, 1), s.D}, 8, "FLuRKA state [B, H, m, D]");
  checked_bytes({s.B, s.H, std::max<int64_t>(s.k, 1), s.D}, 8, "FLuRKA projections [B, H, k, D]");
  checked_bytes({s.B, s.H, s.Nq, std::max<int64_t>(s.m, s.k)}, 8, "FLuRKA per-row scratch [B, H, Nq, m]");
  return s;
}

namespace {
// Byte range [lo, hi) a view or matrix may touch (conservative: the whole strided extent).
struct Range {
  uintptr_t lo = 0, hi = 0;
};
Range range_of(const TensorView& t) {
  size_t span = 1;
  for (int a = 0; a < 4; ++a) span += size_t(t.shape[a] - 1) * size_t(t.stride[a]);
  const uintptr_t lo = reinterpret_cast<uintptr_t>(t.data);
  return {lo, lo + span * dtype_size(t.dtype)};
}
Range range_of(const void* p, const MatrixView& like) {
  const uintptr_t lo = reinterpret_cast<uintptr_t>(p);
  return {lo, lo + size_t(like.heads) * size_t(like.rows) * size_t(like.cols) * dtype_size(like.dtype)};
}
bool overlap(const Range& a, const Range& b) {
  return a.lo < b.hi && b.lo < a.hi;
}
}  // namespace

FlurkaShape check_flurka_backward_args(FlurkaMethod m, const FlurkaInputs& in, const FlurkaGrads& g,
                                       int64_t causal_chunk) {
  const FlurkaShape s = check_flurka_args(m, in, g.dq, causal_chunk);  // dq is checked as out is
  auto like = [&](const TensorView& t, const TensorView& ref, const char* name, const char* ref_name) {
    check_tensor(t, name);
    for (int a = 0; a < 4; ++a)
      require(t.shape[a] == ref.shape[a], std::string(name) + " must have the shape of " + ref_name);
    require(t.dtype == ref.dtype || t.dtype == DType::F32,
            std::string(name) + " must have " + ref_name + "'s dtype (or f32), got " + dtype_name(t.dtype));
    require(t.device == ref.device, std::string(name) + " must live on " + ref_name + "'s device");
  };
  like(g.dout, in.q, "dout", "q");
  like(g.dk, in.k, "dk", "k");
  like(g.dv, in.v, "dv", "v");
  if (uses_projection(m))
    require(g.de != nullptr && g.df != nullptr,
            std::string(flurka_method_name(m)) + " backward needs dE and dF buffers (E's and F's shapes)");
  // Gradients are written while inputs are still read (dE needs K after dK is written): no sharing of memory
  // between a gradient and an input or another gradient.
  std::vector<std::pair<const char*, Range>> ins = {
      {"q", range_of(in.q)}, {"k", range_of(in.k)}, {"v", range_of(in.v)}, {"dout", range_of(g.dout)}};
  if (uses_projection(m))
    ins.push_back({"E", range_of(in.e.data, in.e)}), ins.push_back({"F", range_of(in.f.data, in.f)});
  if (uses_random_features(m)) ins.push_back({"W", range_of(in.w.data, in.w)});
  std::vector<std::pair<const char*, Range>> outs = {
      {"dq", range_of(g.dq)}, {"dk", range_of(g.dk)}, {"dv", range_of(g.dv)}};
  if (uses_projection(m)) outs.push_back({"dE", range_of(g.de, in.e)}), outs.push_back({"dF", range_of(g.df, in.f)});
  for (size_t i = 0; i < outs.size(); ++i) {
    for (const auto& x : ins)
      require(!overlap(outs[i].second, x.second), std::string(outs[i].first) + " shares memory with the input " +
                                                      x.first + " (gradients need their own buffers)");
    for (size_t j = 0; j < i; ++j)
      require(!overlap(outs[i].second, outs[j].second),
              std::string(outs[i].first) + " shares memory with " + outs[j].first);
  }
  return s;
}

}  // namespace splat
