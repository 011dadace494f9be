// Internal: exact set operations on affine segments (see segment.cpp).
#pragma once
#include <optional>
#include <vector>

#include "splat/acsr.hpp"

namespace splat {

bool segment_empty(const Segment& s);
// Keys of s summed over rows [r0, r1): closed form for slope 0 and for stride-1 bands.
int64_t segment_nnz(const Segment& s, int64_t r0, int64_t r1);
// Keys of s in row i that fall in [k0, k1).
int64_t segment_row_count_in(const Segment& s, int64_t i, int64_t k0, int64_t k1);
// b \ a as disjoint segments; nullopt when not expressible affinely (caller falls back).
std::optional<std::vector<Segment>> segment_subtract(const Segment& b, const Segment& a);
// a & b: outer nullopt = not expressible, inner nullopt = empty.
std::optional<std::optional<Segment>> segment_intersect(const Segment& a, const Segment& b);

}  // namespace splat
