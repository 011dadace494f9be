// NaN and Inf in the inputs reach the outputs of the fast CPU paths exactly where IEEE arithmetic carries them
// in the float64 reference (a NaN in q poisons its row, in k or v its head), never as zeros.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_flurka_util.hpp"

using namespace flurka_test;

namespace {

struct Poison {
  const char* what;
  char tensor;  // 'q', 'k' or 'v'
  float value;
};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
const Poison kPoisons[] = {{"NaN in q", 'q', kNaN},
                           {"NaN in k", 'k', kNaN},
                           {"NaN in v", 'v', kNaN},
                           {"+Inf in v", 'v', kInf},
                           {"-Inf in k", 'k', -kInf}};

void poison_one(Problem& p, const Poison& x) {
  Buf& t = x.tensor == 'q' ? p.q : x.tensor == 'k' ? p.k : p.v;
  const int64_t rows = x.tensor == 'q' ? p.c.Nq : p.c.N;
  // batch 0, head 1, row 3, column 2
  store_element(t.data(), t.dtype, size_t(((0 * p.c.H + 1) * rows + 3) * p.c.D + 2), x.value);
}

// Same NaN positions and infinities; finite values close. Returns the number of NaNs (the test wants some).
size_t expect_same_ieee(const Buf& ours, const Buf& ref, const std::string& label) {
  size_t nans = 0, bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const float a = ours.get(i), r = ref.get(i);
    nans += std::isnan(r);
    const bool ok = std::isnan(r)   ? std::isnan(a)
                    : std::isinf(r) ? a == r
                                    : std::isfinite(a) && std::fabs(a - r) <= 1e-3f * (1 + std::fabs(r));
    if (!ok && bad++ < 3) ADD_FAILURE() << label << ": element " << i << " is " << a << ", reference " << r;
  }
  return nans;
}

TEST(FlurkaNan, FastPathPropagatesLikeReference) {
  for (FlurkaMethod m : all_flurka_methods())
    for (const Poison& x : kPoisons) {
      Problem p = make_problem(Case{2, 2, 9, 11, 8, 4, 6}, 31);
      poison_one(p, x);
      flurka_reference(m, p.in, p.ref_view);
      flurka_cpu(m, p.in, p.out_view);
      const std::string label = std::string(flurka_method_name(m)) + ", " + x.what;
      const size_t nans = expect_same_ieee(p.out, p.ref, label);
      if (std::isnan(x.value)) EXPECT_GT(nans, 0u) << label << ": the reference has no NaN (test is vacuous)";
    }
}

TEST(FlurkaNan, CausalPathPropagatesLikeReference) {
  for (FlurkaMethod m : {FlurkaMethod::FlurkaFavor, FlurkaMethod::FlurkaElu, FlurkaMethod::FlurkaRelu})
    for (const Poison& x : kPoisons) {
      Case c{1, 2, 19, 19, 8, 3, 6};
      c.chunk = 4;
      Problem p = make_problem(c, 32);
      poison_one(p, x);
      flurka_causal_reference(m, p.in, p.ref_view, c.chunk);
      flurka_causal_cpu(m, p.in, p.out_view, c.chunk);
      const std::string label = std::string(flurka_method_name(m)) + " causal, " + x.what;
      const size_t nans = expect_same_ieee(p.out, p.ref, label);
      if (std::isnan(x.value)) EXPECT_GT(nans, 0u) << label << ": the reference has no NaN (test is vacuous)";
    }
}

}  // namespace
