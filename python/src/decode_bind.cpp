// Serving entry points of splat._core: decode against a KV cache (contiguous or paged) and packed varlen attention.
// Thin like the rest of the module: views, checks of the index arrays, GIL release; the work is in the library.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>

#include "arrays.hpp"
#include "bindings.hpp"
#include "splat/decode.hpp"
#include "splat/error.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace splat::py {
namespace {

using IntArray = std::optional<nb::ndarray<nb::ro>>;

// An int32 array of `count` elements on `device` (C-contiguous when 2-D: rows of `cols`), or nullptr when absent.
const int32_t* int32_array(const IntArray& arr, int64_t count, const char* name, int64_t* cols = nullptr,
                           int device = -1) {
  if (!arr) return nullptr;
  const auto& a = *arr;
  const std::string who(name);
  require(a.dtype() == nb::dtype<int32_t>(), who + ": must be int32");
  require(array_device(a.device_type(), a.device_id(), name) == device,
          who + (device < 0 ? ": must be in host memory" : ": must be on q's device"));
  if (cols) {
    require(a.ndim() == 2 && int64_t(a.shape(0)) == count,
            who + ": must be [B, max_pages] with B = " + std::to_string(count) + " rows");
    require((a.shape(1) <= 1 || a.stride(1) == 1) && (a.shape(0) <= 1 || a.stride(0) == int64_t(a.shape(1))),
            who + ": must be C-contiguous");
    *cols = int64_t(a.shape(1));
  } else {
    require(a.ndim() == 1 && int64_t(a.shape(0)) == count && (count <= 1 || a.stride(0) == 1),
            who + ": must be a contiguous vector of " + std::to_string(count) + " int32 values");
  }
  return static_cast<const int32_t*>(a.data());
}

float* lse_array(const std::optional<nb::ndarray<>>& lse, int64_t count, const char* name, int device = -1) {
  if (!lse) return nullptr;
  const auto& a = *lse;
  const std::string who(name);
  require(a.dtype() == nb::dtype<float>(), who + ": must be float32");
  require(array_device(a.device_type(), a.device_id(), name) == device, who + ": must be on q's device");
  int64_t expect = 1, n = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    require(a.shape(i) == 1 || a.stride(i) == expect, who + ": must be contiguous");
    expect *= int64_t(a.shape(i)), n *= int64_t(a.shape(i));
  }
  require(n == count, who + ": must have " + std::to_string(count) + " elements, got " + std::to_string(n));
  return static_cast<float*>(a.data());
}

AttentionOptions options(float scale, int threads) {
  require(threads >= 0 && threads <= 4096, "threads must be in [0, 4096] (0 = all), got " + std::to_string(threads));
  AttentionOptions opt;
  opt.scale = scale;
  opt.threads = threads;
  return opt;
}

void decode(const DecodePlan& plan, const InArray& q, const InArray& k_cache, const InArray& v_cache,
            const IntArray& seqlens, const IntArray& block_table, const IntArray& starts, const OutArray& out,
            const std::optional<nb::ndarray<>>& lse, float scale, const std::string& layout, const std::string& dtype,
            int threads, bool reference, uintptr_t stream, const std::optional<nb::ndarray<>>& workspace,
            const std::optional<nb::ndarray<>>& status) {
  const int l = parse_layout(layout);
  const TensorView tq = array_view(q, l, dtype, "q"), to = array_view(out, l, dtype, "out");
  KvCache c;
  c.k = array_view(k_cache, l, dtype, "k_cache"), c.v = array_view(v_cache, l, dtype, "v_cache");
  const int dev = tq.device;
  require(!reference || dev < 0, "decode: the float64 reference runs on host arrays");
  require(seqlens.has_value(), "decode: cache_seqlens is required");
  c.seqlens = int32_array(seqlens, tq.B(), "cache_seqlens", nullptr, dev);
  c.block_table = int32_array(block_table, tq.B(), "block_table", &c.max_pages, dev);
  c.starts = int32_array(starts, tq.B(), "cache_starts", nullptr, dev);
  check_disjoint(to, tq, "out", "q");
  check_disjoint(to, c.k, "out", "k_cache");
  check_disjoint(to, c.v, "out", "v_cache");
  float* lp = lse_array(lse, tq.B() * tq.H() * tq.N(), "lse", dev);
  const AttentionOptions opt = options(scale, threads);
  DecodeCudaWorkspace ws;
  if (workspace) {  // raw device bytes (split-KV partial states)
    require(dev >= 0 && array_device(workspace->device_type(), workspace->device_id(), "workspace") == dev,
            "decode: workspace must be on q's device");
    ws.data = workspace->data(), ws.bytes = workspace->nbytes();
  }
  if (status) {
    require(status->dtype() == nb::dtype<int32_t>() && status->size() == 1 &&
                array_device(status->device_type(), status->device_id(), "status") == dev,
            "decode: status must be one int32 on q's device");
    ws.status = static_cast<int32_t*>(status->data());
  }
  nb::gil_scoped_release release;
  if (dev >= 0)  // the lengths and tables stay on the device: the kernel reads them
    decode_cuda(plan, tq, c, to, opt, reinterpret_cast<void*>(stream), lp, ws);
  else
    (reference ? decode_reference : decode_cpu)(plan, tq, c, to, opt, lp);
}

// Device bytes of the split-KV workspace decode_cuda uses for these shapes (0 on the CPU or when no split pays).
size_t workspace_bytes(const DecodePlan& plan, const InArray& q, const InArray& k_cache, const InArray& v_cache,
                       const IntArray& seqlens, const IntArray& block_table, const IntArray& starts,
                       const std::string& layout) {
  const int l = parse_layout(layout);
  const TensorView tq = array_view(q, l, "", "q");
  if (tq.device < 0) return 0;
  KvCache c;
  c.k = array_view(k_cache, l, "", "k_cache"), c.v = array_view(v_cache, l, "", "v_cache");
  c.seqlens = int32_array(seqlens, tq.B(), "cache_seqlens", nullptr, tq.device);
  c.block_table = int32_array(block_table, tq.B(), "block_table", &c.max_pages, tq.device);
  c.starts = int32_array(starts, tq.B(), "cache_starts", nullptr, tq.device);
  return decode_cuda_workspace_bytes(plan, tq, c);
}

// decode_check_cache on host copies of a device call's index arrays (k_cache gives the pool / capacity shape).
void check_cache(const InArray& k_cache, const IntArray& seqlens, const IntArray& block_table, const IntArray& starts,
                 const std::string& layout, int64_t batch) {
  KvCache c;
  c.k = c.v = array_view(k_cache, parse_layout(layout), "", "k_cache");
  require(seqlens.has_value(), "decode: cache_seqlens is required");
  c.seqlens = int32_array(seqlens, batch, "cache_seqlens");
  c.block_table = int32_array(block_table, batch, "block_table", &c.max_pages);
  c.starts = int32_array(starts, batch, "cache_starts");
  if (!c.block_table)
    require(c.k.B() == batch, "decode: the contiguous cache has " + std::to_string(c.k.B()) + " sequences but q has " +
                                  std::to_string(batch));
  decode_check_cache(c, batch);
}

void varlen(VarlenPlans& plans, const InArray& q, const InArray& k, const InArray& v, const IntArray& cu_seqlens,
            int64_t max_seqlen, const OutArray& out, const std::optional<nb::ndarray<>>& lse, float scale,
            const std::string& dtype, int threads, bool reference, uintptr_t stream) {
  // [total, H, D] arrays: the bnhd view of a rank-3 array is [1, H, total, D].
  const TensorView tq = array_view(q, 1, dtype, "q"), tk = array_view(k, 1, dtype, "k"),
                   tv = array_view(v, 1, dtype, "v");
  const TensorView to = array_view(out, 1, dtype, "out");
  require(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3 && out.ndim() == 3,
          "varlen_attention: q, k, v and out must be packed [total, H, D] arrays");
  require(!reference || tq.device < 0, "varlen_attention: the float64 reference runs on host arrays");
  require(cu_seqlens.has_value() && cu_seqlens->ndim() == 1 && cu_seqlens->shape(0) >= 2,
          "varlen_attention: cu_seqlens must be an int32 vector of B+1 >= 2 offsets");
  const int64_t B = int64_t(cu_seqlens->shape(0)) - 1;
  // cu_seqlens is read on the host for CUDA arrays too: the packed plan depends on the lengths.
  const Varlen batch{int32_array(cu_seqlens, B + 1, "cu_seqlens"), B, max_seqlen};
  check_disjoint(to, tq, "out", "q");
  check_disjoint(to, tk, "out", "k");
  check_disjoint(to, tv, "out", "v");
  float* lp = lse_array(lse, tq.H() * tq.N(), "lse", tq.device);
  const AttentionOptions opt = options(scale, threads);
  nb::gil_scoped_release release;
  if (tq.device >= 0)
    attention_varlen_cuda(plans, tq, tk, tv, to, batch, opt, reinterpret_cast<void*>(stream), lp);
  else if (reference)
    attention_varlen_reference(plans.pattern(), tq, tk, tv, to, batch, opt, lp);
  else
    attention_varlen_cpu(plans, tq, tk, tv, to, batch, opt, lp);
}

}  // namespace

void bind_decode(nb::module_& m) {
  nb::class_<DecodePlan>(m, "DecodePlan", "A pattern & causal as a row program: one plan serves every cache length")
      .def_prop_ro("pattern", [](const DecodePlan& p) { return p.pattern; })
      .def_prop_ro("head_dim", [](const DecodePlan& p) { return p.options.head_dim; })
      .def_prop_ro("dtype", [](const DecodePlan& p) { return std::string(dtype_name(p.options.dtype)); })
      .def_prop_ro("max_runs", [](const DecodePlan& p) { return p.max_runs; })
      .def(
          "row_keys",
          [](const DecodePlan& p, int64_t i, int64_t n) {
            std::vector<int32_t> keys;
            decode_row_keys(p, i, n, keys);
            return std::vector<int64_t>(keys.begin(), keys.end());
          },
          "i"_a, "n"_a, "Sorted keys of row i of a sequence of length n (pattern & causal)")
      .def("__repr__", [](const DecodePlan& p) {
        return "splat.DecodePlan('" + p.pattern + "', head_dim=" + std::to_string(p.options.head_dim) +
               ", dtype=" + dtype_name(p.options.dtype) + ")";
      });
  m.def(
      "make_decode_plan",
      [](const std::string& spec, int32_t head_dim, const std::string& dtype) {
        DecodeOptions o;
        o.head_dim = head_dim;
        o.dtype = parse_dtype(dtype);
        return std::make_shared<DecodePlan>(make_decode_plan(parse_pattern(spec), o));
      },
      "pattern"_a, "head_dim"_a, "dtype"_a = "f32");
  m.def("decode", &decode, "plan"_a, "q"_a, "k_cache"_a, "v_cache"_a, "cache_seqlens"_a, "block_table"_a.none(),
        "cache_starts"_a.none(), "out"_a, "lse"_a.none(), "scale"_a = 0.0f, "layout"_a = "bhnd", "dtype"_a = "",
        "threads"_a = 0, "reference"_a = false, "stream"_a = 0, "workspace"_a.none() = nb::none(),
        "status"_a.none() = nb::none(),
        "Decode attention of the T newest positions against a KV cache into `out` (reference=True: float64 oracle; "
        "CUDA arrays: on `stream`, a cudaStream_t as int, with an optional split-KV workspace of "
        "decode_workspace_bytes and an optional int32 status word the kernel ORs bad-index bits into)");
  m.def("decode_workspace_bytes", &workspace_bytes, "plan"_a, "q"_a, "k_cache"_a, "v_cache"_a, "cache_seqlens"_a,
        "block_table"_a.none(), "cache_starts"_a.none(), "layout"_a = "bhnd");
  m.def("check_decode_cache", &check_cache, "k_cache"_a, "cache_seqlens"_a, "block_table"_a.none(),
        "cache_starts"_a.none(), "layout"_a, "batch"_a,
        "The decode checks of lengths, starts and block table on host copies (ValueError naming the problem)");
  m.def("check_decode_status", &decode_check_status, "status"_a, "ValueError unless a CUDA decode status word is 0");

  nb::class_<VarlenPlans>(m, "VarlenPlans", "The forward plans of one pattern by sequence length")
      .def_prop_ro("pattern", [](const VarlenPlans& p) { return to_string(p.pattern()); });
  m.def(
      "make_varlen_plans", [](const std::string& spec) { return std::make_shared<VarlenPlans>(parse_pattern(spec)); },
      "pattern"_a);
  m.def("varlen_attention", &varlen, "plans"_a, "q"_a, "k"_a, "v"_a, "cu_seqlens"_a.none(), "max_seqlen"_a, "out"_a,
        "lse"_a.none(), "scale"_a = 0.0f, "dtype"_a = "", "threads"_a = 0, "reference"_a = false, "stream"_a = 0,
        "Attention over packed sequences [total, H, D] with cu_seqlens (B+1 int32 offsets, host memory) into `out` "
        "(CUDA arrays: one launch with the batch's packed plan on `stream`, a cudaStream_t as int)");
  m.def(
      "varlen_plan_times",
      [](VarlenPlans& plans, const IntArray& cu_seqlens, int64_t max_seqlen, const std::string& dtype, int32_t head_dim,
         int device) {
        require(cu_seqlens.has_value() && cu_seqlens->ndim() == 1 && cu_seqlens->shape(0) >= 2,
                "varlen_plan_times: cu_seqlens must be an int32 vector of B+1 >= 2 offsets");
        const int64_t B = int64_t(cu_seqlens->shape(0)) - 1;
        const Varlen batch{int32_array(cu_seqlens, B + 1, "cu_seqlens"), B, max_seqlen};
        varlen_check_batch(batch, batch.cu_seqlens[B], "varlen_plan_times");
        VarlenPlanTimes t;
        {
          nb::gil_scoped_release release;
          varlen_cuda_plan(plans, batch, parse_dtype(dtype), head_dim, device, &t);
        }
        nb::dict d;
        d["cached"] = t.cached, d["acsr_ms"] = t.acsr_ms, d["plan_ms"] = t.plan_ms, d["total_ms"] = t.total_ms;
        d["tiles"] = t.tiles;
        return d;
      },
      "plans"_a, "cu_seqlens"_a.none(), "max_seqlen"_a, "dtype"_a, "head_dim"_a, "device"_a = 0,
      "Builds (or finds) the packed CUDA plan of a batch composition and says what it cost (host ms)");
  bind_xla_decode(m);
  m.attr("has_decode") = true;
}

}  // namespace splat::py
