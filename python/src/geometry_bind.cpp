// splat._core.Geometry: what the context-parallel planner (python/splat/_cp_plan.py) asks of a pattern, answered
// from its ACSR and the ACSR's exact transpose by the rectangle queries of splat/rect_geometry.hpp (queries
// [r0, r1) x keys [k0, k1): attended count, key hull, query hull from the transpose, reach, mask, grid counts).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "bindings.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/rect_geometry.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace splat::py {
namespace {

struct Geometry {
  Acsr a, t;  // the pattern and its transpose
};

using IntArray = nb::ndarray<nb::numpy, int64_t, nb::ndim<1>>;
using MaskArray = nb::ndarray<nb::numpy, uint8_t, nb::ndim<2>>;

IntArray to_array(std::vector<int64_t>&& v) {
  auto* data = new std::vector<int64_t>(std::move(v));
  nb::capsule owner(data, [](void* p) noexcept { delete static_cast<std::vector<int64_t>*>(p); });
  return IntArray(data->data(), {data->size()}, owner);
}

std::tuple<IntArray, IntArray, IntArray> grid(const Acsr& a, const std::vector<int64_t>& rc,
                                              const std::vector<int64_t>& kc) {
  GridCounts g = grid_nnz(a, rc, kc);
  return {to_array(std::move(g.x)), to_array(std::move(g.y)), to_array(std::move(g.count))};
}

MaskArray mask(const Acsr& a, const Rect& r) {
  const int64_t rows = r.r1 - r.r0, cols = r.k1 - r.k0;
  auto* data = new std::vector<uint8_t>(size_t(rows * cols));
  rect_mask(a, r, data->data());
  nb::capsule owner(data, [](void* p) noexcept { delete static_cast<std::vector<uint8_t>*>(p); });
  return MaskArray(data->data(), {size_t(rows), size_t(cols)}, owner);
}

using HostMask = nb::ndarray<nb::ro, uint8_t, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

Geometry make_geometry(const std::variant<std::string, HostMask>& pattern, int64_t n) {
  require(n > 0, "geometry: n must be positive");
  Geometry g;
  if (const auto* spec = std::get_if<std::string>(&pattern)) {
    const Pattern p = parse_pattern(*spec);
    validate_pattern(p, n);
    nb::gil_scoped_release release;
    g.a = analyse(p, n);
  } else {
    const HostMask& m = std::get<HostMask>(pattern);
    require(int64_t(m.shape(0)) == n && int64_t(m.shape(1)) == n,
            "geometry: the mask is " + std::to_string(m.shape(0)) + " x " + std::to_string(m.shape(1)) + " but n is " +
                std::to_string(n));
    nb::gil_scoped_release release;
    g.a = analyse_mask(m.data(), n);
  }
  nb::gil_scoped_release release;
  g.t = transpose(g.a);
  return g;
}

}  // namespace

void bind_geometry(nb::module_& m) {
  using Hull = std::optional<std::pair<int64_t, int64_t>>;
  nb::class_<Geometry>(m, "Geometry",
                       "A pattern's ACSR and its exact transpose at one N, for the context-parallel planner. "
                       "Rectangles are queries [r0, r1) x keys [k0, k1).")
      .def(nb::new_(&make_geometry), "pattern"_a, "n"_a, "pattern: a spec string or a uint8 [N, N] mask")
      .def_prop_ro("n", [](const Geometry& g) { return g.a.n; })
      .def_prop_ro("nnz", [](const Geometry& g) { return nnz(g.a); })
      .def(
          "count",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
            return rect_nnz(g.a, checked_rect(g.a, r0, r1, k0, k1));
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "Pairs that attend in the rectangle")
      .def(
          "key_span",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) -> Hull {
            const auto h = rect_hull(g.a, checked_rect(g.a, r0, r1, k0, k1));
            if (!h) return std::nullopt;
            return std::make_pair(h->key_lo, h->key_hi + 1);
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "(lo, hi): the keys [lo, hi) that the rectangle's pairs use; None if none")
      .def(
          "query_span",
          [](const Geometry& g, int64_t k0, int64_t k1, int64_t r0, int64_t r1) -> Hull {
            const auto h = rect_hull(g.t, checked_rect(g.t, k0, k1, r0, r1));
            if (!h) return std::nullopt;
            return std::make_pair(h->key_lo, h->key_hi + 1);
          },
          "k0"_a, "k1"_a, "r0"_a, "r1"_a,
          "(lo, hi): the queries [lo, hi) among rows [r0, r1) that use keys [k0, k1), from the transpose")
      .def(
          "reach",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) -> Hull {
            const auto h = rect_hull(g.a, checked_rect(g.a, r0, r1, k0, k1));
            if (!h) return std::nullopt;
            return std::make_pair(-h->diff_lo, h->diff_hi);
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "(left, right): the largest i - j and j - i in the rectangle; None if empty")
      .def(
          "grid",
          [](const Geometry& g, const std::vector<int64_t>& rc, const std::vector<int64_t>& kc) {
            return grid(g.a, rc, kc);
          },
          "row_cuts"_a, "key_cuts"_a, "(x, y, count) of the grid's non-empty cells, sorted")
      .def(
          "mask",
          [](const Geometry& g, int64_t r0, int64_t r1, int64_t k0, int64_t k1) {
            return mask(g.a, checked_rect(g.a, r0, r1, k0, k1));
          },
          "r0"_a, "r1"_a, "k0"_a, "k1"_a, "uint8 [r1 - r0, k1 - k0]: the rectangle's mask")
      .def(
          "row_cuts", [](const Geometry& g, bool transposed) { return segment_row_cuts(transposed ? g.t : g.a); },
          "transposed"_a = false,
          "Sorted row bounds of the segments (of the transpose: key bounds, where global columns end)");
}

}  // namespace splat::py
