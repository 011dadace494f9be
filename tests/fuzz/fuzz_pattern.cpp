// Fuzzes the pattern parser: any string either parses or throws splat::Error (never crashes, hangs or
// trips a sanitizer). What parses must print back to an equal pattern (mask paths included: quoting
// must round-trip any path), and at a small N the analysis (and the row path alone) must agree exactly
// with the brute-force mask. Compositions are also analysed at a larger N with rows spot-checked, so a
// composition whose analysis blows up shows as a timeout.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "format/row_analysis.hpp"
#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"

namespace {

// Masks come from memory, never from the file system (a FIFO would block): an n x n mask derived
// from the path, so equal paths give equal masks.
splat::MaskLoader loader(int64_t n) {
  return [n](const std::string& path) {
    auto m = std::make_shared<splat::MaskData>();
    m->n = n;
    m->path = path;
    uint64_t h = path.size();
    for (unsigned char c : path) h = splat::splitmix64(h ^ c);
    m->bits.resize(size_t(n * n));
    for (size_t k = 0; k < m->bits.size(); ++k) m->bits[k] = (splat::splitmix64(h + k) & 3) == 0;
    m->hash = splat::mask_hash(m->bits.data(), n);
    return std::shared_ptr<const splat::MaskData>(std::move(m));
  };
}

void mask_paths(const splat::Pattern& p, std::vector<std::string>& out) {
  if (p.kind == splat::PatternKind::Mask) out.push_back(p.mask->path);
  for (const splat::Pattern& c : p.children) mask_paths(c, out);
}

// Cost of one membership test: BigBird's is O(r).
int64_t contains_cost(const splat::Pattern& p) {
  int64_t c = p.kind == splat::PatternKind::BigBird ? 1 + p.r : 1;
  for (const splat::Pattern& k : p.children) c += contains_cost(k);
  return c;
}

bool has_mask(const splat::Pattern& p) {
  std::vector<std::string> paths;
  mask_paths(p, paths);
  return !paths.empty();
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 512) return 0;
  const std::string spec(reinterpret_cast<const char*>(data), size);
  const int64_t n = 1 + int64_t(size % 37);
  splat::Pattern p;
  try {
    p = splat::parse_pattern(spec, loader(n));
  } catch (const splat::Error& e) {
    // Messages are printable: a NUL or a control byte would mean user text was echoed raw.
    for (const char* c = e.what(); *c; ++c) check(*c == '\t' || static_cast<unsigned char>(*c) >= 0x20);
    return 0;
  }
  const std::string canon = splat::to_string(p);
  splat::Pattern again;
  try {
    again = splat::parse_pattern(canon, loader(n));
  } catch (const splat::Error&) {
    std::abort();  // the canonical form of a valid pattern must parse
  }
  check(splat::to_string(again) == canon);
  check(splat::pattern_key(again) == splat::pattern_key(p));
  std::vector<std::string> paths, paths_again;
  mask_paths(p, paths);
  mask_paths(again, paths_again);
  check(paths == paths_again);
  try {
    splat::validate_pattern(p, n);
  } catch (const splat::Error&) {
    return 0;
  }
  const splat::Acsr a = splat::analyse(p, n);
  const std::vector<uint8_t> dense = splat::dense_mask(p, n);
  int64_t count = 0;
  for (uint8_t v : dense) count += v;
  check(splat::nnz(a) == count && splat::to_dense(a) == dense);
  check(splat::to_dense(splat::analyse_rows(p, n)) == dense);

  // A larger N for compositions without masks (masks are n x n by construction here), where the
  // algebra's budgets and the row path's fragmentation limits come into play. Its cost is bounded
  // (inherently irregular compositions have large exact ACSRs), so any timeout here is a blow-up.
  if (p.children.empty() || has_mask(p) || contains_cost(p) > 1024) return 0;
  const int64_t big = 512;
  try {
    splat::validate_pattern(p, big);
  } catch (const splat::Error&) {
    return 0;
  }
  const splat::Acsr b = splat::analyse(p, big);
  std::vector<int32_t> keys;
  for (int64_t i : {int64_t(0), int64_t(size * 131 % big), big - 1}) {
    splat::row_keys(b, i, keys);
    size_t k = 0;
    for (int64_t j = 0; j < big; ++j)
      if (splat::pattern_contains(p, big, i, j)) check(k < keys.size() && keys[k++] == j);
    check(k == keys.size());
  }
  return 0;
}
