// Mask words for the spans of a plan that are not full, built once per call and shared by all
// (batch, head) pairs: word c of a span's subtile has bit l set iff lane l (local row
// 64*subtile + l of the task) attends the span's key c. Full spans have no words: they skip masking.
#pragma once
#include <cstdint>
#include <vector>

#include "splat/plan.hpp"

namespace splat::cpu {

constexpr int kLanes = 64;  // query rows per subtile: one bit of a mask word each

struct SpanMasks {
  std::vector<std::vector<int64_t>> offset;   // [pass][span]: first word of subtile 0, -1 if full
  std::vector<uint64_t> words;                // subtile s of a span starts at offset + s * key_count
  std::vector<std::pair<int, int32_t>> jobs;  // (pass, task) with words still to fill

  const uint64_t* find(int pass, int32_t span, int subtile, int64_t key_count) const {
    const int64_t o = offset[size_t(pass)][size_t(span)];
    return o < 0 ? nullptr : words.data() + o + subtile * key_count;
  }
};

// Layout (offsets, jobs) in O(spans); then fill_span_masks(m, j) for every job j, in parallel.
SpanMasks layout_span_masks(const Plan& plan);
void fill_span_masks(const Plan& plan, SpanMasks& m, size_t job);

// Words of one (task, span, subtile): w[0..key_count). Exposed for tests.
void fill_span_words(const Plan& plan, const TileTask& task, const KeySpan& span, int subtile, uint64_t* w);

}  // namespace splat::cpu
