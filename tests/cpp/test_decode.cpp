// Decode against a KV cache: the row program against pattern_contains, and decode_cpu / decode_reference against
// row p of the full attention of each whole sequence, over every pattern family, T = 1 and T > 1, GQA, contiguous
// caches with per-sequence starts and paged caches with shuffled pages, empty key sets, lengths 1 and max.
// Tolerance: err(ours) <= 4 * err(naive same dtype) + atol.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "splat/error.hpp"
#include "test_decode_util.hpp"

namespace {

using namespace splat;
using cputest::Tensor;
using decodetest::Case;
using decodetest::Scenario;

const char* const kFamilies[] = {
    "dense",
    "causal",
    "window:w=5",
    "causal_window:w=7",
    "dilated:w=4,d=3",
    "causal_dilated:w=3,d=2",
    "strided:s=8",
    "fixed:l=16,c=4",
    "blocked:b=16",
    "global:g=3",
    "sink:g=2",
    "longformer:w=4,g=2",
    "bigbird:b=8,w=1,g=1,r=2",
    "causal_window:w=8+sink:g=4",
    "strided:s=8&causal",
    "(strided:s=5+fixed:l=7,c=3)&(strided:s=11+fixed:l=13,c=5)",
    "fixed:l=12,c=5&fixed:l=8,c=3",
    "dilated:w=9,d=2&window:w=11+sink:g=1",
};

// Only for the row program: parameters beyond any distance (clamped at plan time) and chained residue intersections.
const char* const kRowsOnly[] = {
    "dilated:w=3,d=3000000000",
    "strided:s=3000000000",
    "fixed:l=3000000000,c=5",
    "blocked:b=5000000000",
    "(dilated:w=40,d=2&dilated:w=40,d=3)&dilated:w=40,d=5",
    "fixed:l=9,c=4&strided:s=6&causal_dilated:w=50,d=2",
    "bigbird:b=3000000000,w=1,g=0,r=2",
};

TEST(DecodeRows, KeysArePatternRowsAtEveryLength) {
  std::vector<const char*> specs(std::begin(kFamilies), std::end(kFamilies));
  specs.insert(specs.end(), std::begin(kRowsOnly), std::end(kRowsOnly));
  for (const char* spec : specs) {
    const Pattern p = parse_pattern(spec);
    const DecodePlan plan = make_decode_plan(p);
    std::vector<int32_t> keys;
    std::vector<KeyRun> runs;
    for (int64_t n : {1, 2, 17, 100, 203}) {
      for (int64_t i = 0; i < n; ++i) {
        decode_row_keys(plan, i, n, keys);
        std::vector<int32_t> want;
        for (int64_t j = 0; j <= i; ++j)
          if (pattern_contains(p, n, i, j)) want.push_back(int32_t(j));
        ASSERT_EQ(keys, want) << spec << " n=" << n << " row " << i;
        decode_row_runs(plan, i, n, runs);
        ASSERT_LE(int64_t(runs.size()), plan.max_runs) << spec;
        for (const KeyRun& r : runs) {  // the count agrees with the membership test
          int64_t c = 0;
          for (int64_t j = r.lo; j <= r.hi; ++j) c += dev::decode_run_contains(r, j);
          ASSERT_EQ(dev::decode_run_count(r), c) << spec;
        }
      }
    }
  }
}

TEST(DecodeRows, LongContextsCostRunsNotKeys) {
  // A window + sink row at position 2^30 is two runs: the plan never looks at the length's size.
  const DecodePlan plan = make_decode_plan(parse_pattern("causal_window:w=4096+sink:g=4"));
  std::vector<KeyRun> runs;
  decode_row_runs(plan, (int64_t(1) << 30) + 5, (int64_t(1) << 30) + 6, runs);
  ASSERT_EQ(runs.size(), 2u);
  int64_t keys = 0;
  for (const KeyRun& r : runs) keys += dev::decode_run_count(r);
  EXPECT_EQ(keys, 4097 + 4);
}

void check(const Case& s, int threads = 2) {
  Scenario sc(s);
  DecodeOptions o;
  o.dtype = s.dt, o.head_dim = int32_t(s.D);
  const DecodePlan plan = make_decode_plan(parse_pattern(s.pattern), o);
  Tensor want(DType::F64, 1, 1, 1, 1, false), naive(DType::F32, 1, 1, 1, 1, false);
  std::vector<float> want_lse;
  sc.oracle(want, naive, want_lse);
  const std::string what = s.pattern + " " + dtype_name(s.dt) + " T=" + std::to_string(s.T) +
                           (s.page ? " page=" + std::to_string(s.page) : " contiguous");
  AttentionOptions opt;
  opt.threads = threads;
  Tensor out(s.dt, sc.B, s.H, s.T, s.D, false), ref(s.dt, sc.B, s.H, s.T, s.D, false);
  out.poison(), ref.poison();
  std::vector<float> lse(size_t(sc.B * s.H * s.T), NAN), ref_lse = lse;
  decode_cpu(plan, sc.q.view, sc.cache, out.view, opt, lse.data());
  decode_reference(plan, sc.q.view, sc.cache, ref.view, opt, ref_lse.data());
  const double e_ours = cputest::max_abs_err(out, want), e_naive = cputest::max_abs_err(naive, want);
  EXPECT_LE(e_ours, 4.0 * e_naive + decodetest::atol(s.dt)) << what << " naive " << e_naive;
  EXPECT_LE(decodetest::lse_error(lse, want_lse), s.dt == DType::F64 ? 1e-7 : 2e-6) << what << " lse";
  // The reference reads the cache's own dtype in float64: as exact as the full sequence's oracle.
  EXPECT_LE(cputest::max_abs_err(ref, want), s.dt == DType::F64 ? 1e-12 : 4.0 * e_naive + decodetest::atol(s.dt))
      << what << " reference";
  EXPECT_LE(decodetest::lse_error(ref_lse, want_lse), 1e-7) << what << " reference lse";
}

TEST(Decode, EveryFamilyMatchesRowsOfFullAttention) {
  for (const char* spec : kFamilies) {
    Case s;
    s.pattern = spec;
    s.lengths = {1, 37, 100};
    check(s);
    s.T = 5;                 // speculative / chunked: the 5 newest positions
    s.lengths = {5, 3, 71};  // 3 < T: rows before position 0 are empty
    s.starts = true;
    check(s);
  }
}

TEST(Decode, PagedShuffledPagesAnyLength) {
  for (const char* spec : {"causal_window:w=20+sink:g=4", "strided:s=8", "fixed:l=16,c=4", "dense"}) {
    for (int64_t page : {16, 32}) {
      Case s;
      s.pattern = spec, s.page = page, s.T = 3;
      s.lengths = {1, 15, 16, 17, 95, 130};  // below, at and past page boundaries
      s.bnhd = page == 32;                   // vLLM's [pages, P, H_kv, D] memory
      check(s);
    }
  }
}

TEST(Decode, DtypesAndGroups) {
  for (DType dt : {DType::BF16, DType::F16, DType::F64}) {
    Case s;
    s.pattern = "causal_dilated:w=6,d=3+sink:g=2", s.dt = dt, s.page = 16, s.T = 2;
    s.H = 8, s.Hkv = 2, s.D = 40;  // a head dim that is not a multiple of 16
    s.lengths = {50, 1, 77};
    check(s);
  }
  Case s;  // multi-query: one kv head for 6 query heads
  s.H = 6, s.Hkv = 1, s.lengths = {90};
  check(s);
}

TEST(Decode, EmptyKeySetsGiveZerosAndMinusInfinity) {
  Case s;
  s.pattern = "sink:g=2&causal_window:w=3";  // nothing once the window has left the sink
  s.lengths = {1, 3, 10, 0};
  s.T = 2;
  check(s);
}

TEST(Decode, LongRowsSplitAcrossThreadsMergeExactly) {
  Case s;  // one sequence: its rows' keys are split into chunks, computed on several threads and merged
  s.pattern = "dense", s.H = 8, s.Hkv = 2, s.D = 32, s.lengths = {2100}, s.page = 64;
  check(s, 4);
  s.pattern = "strided:s=64", s.T = 2, s.lengths = {3000};
  check(s, 3);
}

TEST(Decode, OnePlanServesEveryLength) {
  const DecodePlan plan = make_decode_plan(parse_pattern("causal_window:w=8+sink:g=4"), {DType::F32, 16});
  EXPECT_EQ(plan.max_runs, 2);
  for (int32_t L : {1, 9, 200}) {
    Case s;
    s.pattern = "causal_window:w=8+sink:g=4", s.lengths = {L};
    check(s);
  }
}

TEST(Decode, ErrorsAreClear) {
  EXPECT_THROW(
      {
        try {
          const std::vector<uint8_t> bits(16, 1);
          make_decode_plan(mask_pattern(bits.data(), 4));
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::Unsupported);
          EXPECT_NE(std::string(e.what()).find("mask"), std::string::npos);
          throw;
        }
      },
      Error);
  Case s;
  s.lengths = {5, 9};
  s.page = 16;
  Scenario sc(s);
  const DecodePlan plan = make_decode_plan(parse_pattern("causal"), {DType::F32, 16});
  Tensor out(DType::F32, 2, 4, 1, 16, false);
  auto fails = [&](KvCache c, const TensorView& q, const TensorView& o, const char* why) {
    EXPECT_THROW(decode_cpu(plan, q, c, o), Error) << why;
    EXPECT_THROW(decode_reference(plan, q, c, o), Error) << why;
  };
  std::vector<int32_t> too_long = {5, int32_t(sc.max_pages * 16 + 1)}, negative = {-1, 3};
  KvCache c = sc.cache;
  c.seqlens = too_long.data();
  fails(c, sc.q.view, out.view, "length past the capacity");
  c.seqlens = negative.data();
  fails(c, sc.q.view, out.view, "negative length");
  std::vector<int32_t> table = sc.table;
  table[0] = 1000;
  c = sc.cache, c.block_table = table.data();
  fails(c, sc.q.view, out.view, "page outside the pool");
  c = sc.cache;
  fails(c, sc.q.view, sc.q.view, "out = q");
  TensorView wide = out.view;
  wide.shape[2] = 65;
  fails(c, wide, wide, "T > 64");
  Tensor q16(DType::F16, 2, 4, 1, 16, false), o16(DType::F16, 2, 4, 1, 16, false);
  fails(c, q16.view, o16.view, "dtype differs from the plan's");
  const DecodePlan d32 = make_decode_plan(parse_pattern("causal"), {DType::F32, 32});
  EXPECT_THROW(decode_cpu(d32, sc.q.view, c, out.view), Error) << "head dim differs from the plan's";
  AttentionOptions kl;
  const int32_t lens[2] = {1, 1};
  kl.key_lengths = lens;
  EXPECT_THROW(decode_cpu(plan, sc.q.view, c, out.view, kl), Error) << "key_lengths";
  Tensor q3(DType::F32, 2, 3, 1, 16, false), o3(DType::F32, 2, 3, 1, 16, false);
  fails(c, q3.view, o3.view, "H not a multiple of H_kv");
}

}  // namespace

namespace {

// decode_check_cache: the host check of a CUDA call's lengths, starts and block table (host copies of the indices;
// the tensors only give the pool and page sizes), the same checks as decode_cpu's, and decode_check_status.
TEST(Decode, HostChecksOfDeviceIndices) {
  Case s;
  s.lengths = {5, 40};
  s.page = 16;
  Scenario sc(s);
  KvCache c = sc.cache;
  c.k.data = c.v.data = nullptr;  // shapes only
  EXPECT_NO_THROW(decode_check_cache(c, 2));
  std::vector<int32_t> too_long = {5, int32_t(sc.max_pages * 16 + 1)}, negative = {-1, 3};
  c.seqlens = too_long.data();
  EXPECT_THROW(decode_check_cache(c, 2), Error) << "length past the capacity";
  c.seqlens = negative.data();
  EXPECT_THROW(decode_check_cache(c, 2), Error) << "negative length";
  std::vector<int32_t> table = sc.table;
  table[size_t(sc.max_pages + 2)] = int32_t(sc.kc.view.B());  // sequence 1's third page
  c = sc.cache, c.block_table = table.data();
  EXPECT_THROW(decode_check_cache(c, 2), Error) << "page outside the pool";
  table[size_t(sc.max_pages + 2)] = -1;
  EXPECT_THROW(decode_check_cache(c, 2), Error) << "negative page";
  table = sc.table, table[size_t(sc.max_pages + 3)] = 999;  // past sequence 1's pages: never read
  c.block_table = table.data();
  EXPECT_NO_THROW(decode_check_cache(c, 2));
  Case cs;  // contiguous with starts
  cs.lengths = {3, 9};
  cs.starts = true;
  Scenario scs(cs);
  KvCache cc = scs.cache;
  std::vector<int32_t> starts = {0, int32_t(scs.kc.view.N()) - 8};  // 9 tokens from there do not fit
  cc.starts = starts.data();
  EXPECT_THROW(decode_check_cache(cc, 2), Error) << "start + length past the capacity";
  try {
    decode_check_status(kDecodeBadLength | kDecodeBadPage);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("page"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(decode_check_status(kDecodeOk));
}

}  // namespace
