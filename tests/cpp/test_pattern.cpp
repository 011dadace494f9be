// Parser and semantics of the pattern language.
#include <gtest/gtest.h>

#include "splat/error.hpp"
#include "splat/pattern.hpp"

using namespace splat;

TEST(Pattern, ParsesEveryFamily) {
  for (const char* spec : {"dense", "causal", "window:w=3", "causal_window:w=3", "dilated:w=2,d=3",
                           "causal_dilated:w=2,d=3", "strided:s=4", "fixed:l=4,c=1", "blocked:b=4", "global:g=2",
                           "sink:g=2", "longformer:w=2,g=1", "bigbird:b=4,w=1,g=1,r=2,seed=7"}) {
    const Pattern p = parse_pattern(spec);
    EXPECT_EQ(to_string(p), spec);
    EXPECT_EQ(to_string(parse_pattern(to_string(p))), spec);
  }
}

TEST(Pattern, CompositionPrecedence) {
  const Pattern p = parse_pattern("causal_window:w=2+sink:g=1&causal");
  ASSERT_EQ(p.kind, PatternKind::Union);
  ASSERT_EQ(p.children.size(), 2u);
  EXPECT_EQ(p.children[1].kind, PatternKind::Intersection);
  EXPECT_EQ(to_string(p), "causal_window:w=2+sink:g=1&causal");
  const Pattern q = parse_pattern("(window:w=1+sink:g=1)&causal");
  EXPECT_EQ(q.kind, PatternKind::Intersection);
  EXPECT_EQ(to_string(q), "(window:w=1+sink:g=1)&causal");
}

TEST(Pattern, SemanticsSpotChecks) {
  const int64_t n = 100;
  EXPECT_TRUE(pattern_contains(parse_pattern("window:w=2"), n, 10, 12));
  EXPECT_FALSE(pattern_contains(parse_pattern("window:w=2"), n, 10, 13));
  EXPECT_TRUE(pattern_contains(parse_pattern("dilated:w=2,d=3"), n, 10, 16));
  EXPECT_FALSE(pattern_contains(parse_pattern("dilated:w=2,d=3"), n, 10, 19));
  EXPECT_FALSE(pattern_contains(parse_pattern("dilated:w=2,d=3"), n, 10, 11));
  EXPECT_TRUE(pattern_contains(parse_pattern("strided:s=8"), n, 50, 2));
  EXPECT_FALSE(pattern_contains(parse_pattern("strided:s=8"), n, 50, 3));
  EXPECT_TRUE(pattern_contains(parse_pattern("fixed:l=8,c=2"), n, 50, 7));
  EXPECT_FALSE(pattern_contains(parse_pattern("fixed:l=8,c=2"), n, 50, 5));
  EXPECT_TRUE(pattern_contains(parse_pattern("global:g=2"), n, 1, 99));
  EXPECT_TRUE(pattern_contains(parse_pattern("global:g=2"), n, 99, 1));
  EXPECT_FALSE(pattern_contains(parse_pattern("sink:g=2"), n, 1, 99));
  EXPECT_FALSE(pattern_contains(parse_pattern("causal_window:w=3"), n, 10, 11));
}

TEST(Pattern, Splitmix64KnownValue) {
  // First output of the reference splitmix64 generator seeded with 0.
  EXPECT_EQ(splitmix64(0), 0xE220A8397B1DCDAFull);
}

static std::string error_of(const std::string& spec) {
  try {
    parse_pattern(spec);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::InvalidArgument) << spec;
    return e.what();
  }
  ADD_FAILURE() << "no error for '" << spec << "'";
  return "";
}

TEST(Pattern, ErrorsNamePosition) {
  EXPECT_NE(error_of("window:w=").find("position 9"), std::string::npos);
  EXPECT_NE(error_of("window:x=3").find("unknown parameter 'x'"), std::string::npos);
  EXPECT_NE(error_of("windo:w=3").find("unknown pattern 'windo'"), std::string::npos);
  EXPECT_NE(error_of("window:w=-3").find("non-negative"), std::string::npos);
  EXPECT_NE(error_of("window").find("needs parameter 'w'"), std::string::npos);
  EXPECT_NE(error_of("window:w=1,w=2").find("twice"), std::string::npos);
  EXPECT_NE(error_of("window:w=1+").find("position 11"), std::string::npos);
  EXPECT_NE(error_of("(causal").find("expected ')'"), std::string::npos);
  EXPECT_NE(error_of("").find("empty"), std::string::npos);
  EXPECT_NE(error_of("causal)").find("unexpected ')'"), std::string::npos);
  EXPECT_NE(error_of("window:w=99999999999999999999").find("too large"), std::string::npos);
}

TEST(Pattern, ValidationAgainstN) {
  EXPECT_THROW(validate_pattern(parse_pattern("blocked:b=0"), 10), Error);
  EXPECT_THROW(validate_pattern(parse_pattern("dilated:w=1,d=0"), 10), Error);
  EXPECT_THROW(validate_pattern(parse_pattern("strided:s=0"), 10), Error);
  EXPECT_THROW(validate_pattern(parse_pattern("fixed:l=4,c=5"), 10), Error);
  EXPECT_THROW(validate_pattern(parse_pattern("causal"), 0), Error);
  EXPECT_THROW(validate_pattern(parse_pattern("causal"), -5), Error);
  EXPECT_NO_THROW(validate_pattern(parse_pattern("causal"), 1));
}

TEST(Pattern, MissingMaskFileIsIoError) {
  try {
    parse_pattern("mask:/nonexistent/dir/m.npy");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
  }
}
