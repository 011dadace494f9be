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

#include <unistd.h>

#include <filesystem>

#include "splat/npy.hpp"

namespace {
namespace fs = std::filesystem;

// A fresh directory of this process, removed at exit.
struct MaskDir {
  fs::path dir = fs::temp_directory_path() / ("splat-test-pattern-" + std::to_string(::getpid()));
  MaskDir() { fs::create_directories(dir); }
  ~MaskDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  // Writes an n x n mask (row i attends keys j <= i % 3 + j % 2) and returns its path.
  std::string write(const std::string& name, int64_t n) const {
    NpyArray a;
    a.dtype = NpyDType::Bool;
    a.shape = {n, n};
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) a.data.push_back(uint8_t((i * 7 + j * 3) % 5 < 2));
    const std::string path = (dir / name).string();
    write_npy(path, a);
    return path;
  }
};
}  // namespace

// Issue 9, item 3: a mask path with '+' or '&' was parsed as a composition.
TEST(Pattern, QuotedMaskPaths) {
  const MaskDir d;
  const int64_t n = 6;
  for (const std::string name :
       {"a+b&c.npy", "close).npy", "with \"quotes\".npy", "back\\slash.npy", " leading space.npy", "plain.npy"}) {
    SCOPED_TRACE(name);
    const std::string path = d.write(name, n);
    std::string quoted = "mask:\"";
    for (char c : path) quoted += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    quoted += '"';
    const Pattern p = parse_pattern(quoted + "+causal");
    ASSERT_EQ(p.kind, PatternKind::Union);
    ASSERT_EQ(p.children.at(0).kind, PatternKind::Mask);
    EXPECT_EQ(p.children[0].mask->path, path);
    // The canonical form quotes exactly when the plain form would not read back, and reads back.
    const std::string canon = to_string(p);
    const bool plain = name.find_first_of("+&)\"") == std::string::npos;
    EXPECT_EQ(canon, (plain ? "mask:" + path : quoted) + "+causal");
    const Pattern again = parse_pattern(canon);
    EXPECT_EQ(to_string(again), canon);
    EXPECT_EQ(again.children.at(0).mask->path, path);
    EXPECT_EQ(dense_mask(again, n), dense_mask(p, n));
    // Whitespace around a quoted path and a composition after it.
    EXPECT_EQ(to_string(parse_pattern("causal & mask: " + quoted.substr(5) + " ")),
              "causal&" + canon.substr(0, canon.size() - 7));
  }
  const std::string plain = d.write("plain.npy", n);
  EXPECT_EQ(to_string(parse_pattern("mask:" + plain + " + causal")), "mask:" + plain + "+causal");
}

TEST(Pattern, QuotedMaskPathErrors) {
  EXPECT_NE(error_of("mask:\"m.npy").find("unterminated"), std::string::npos);
  EXPECT_NE(error_of("mask:\"m.npy\\").find("unterminated"), std::string::npos);
  EXPECT_NE(error_of("mask:\"m\\n.npy\"").find("escapes only"), std::string::npos);
  EXPECT_NE(error_of("mask:\"\"").find("needs a path"), std::string::npos);
  EXPECT_NE(error_of("mask:\"m.npy\"x").find("unexpected 'x'"), std::string::npos);
  error_of(std::string("mask:m.npy\0x.npy", 16));  // InvalidArgument, not a read of m.npy
  EXPECT_EQ(mask_spec("a+b.npy"), "mask:\"a+b.npy\"");
  EXPECT_EQ(mask_spec("a\"b\\c&"), "mask:\"a\\\"b\\\\c&\"");
  EXPECT_EQ(mask_spec("dir/m.npy"), "mask:dir/m.npy");
}

// Issue 9, rough edges: 'wïndow:w=1' reported "unknown pattern 'w'"; a NUL byte truncated the message.
TEST(Pattern, MessagesEchoWholeTokensPrintably) {
  EXPECT_NE(error_of("wïndow:w=1").find("unknown pattern 'wïndow'"), std::string::npos) << error_of("wïndow:w=1");
  EXPECT_NE(error_of("window:wï=1").find("unknown parameter 'wï' for 'window'"), std::string::npos);
  EXPECT_NE(error_of("window:w=ï").find("got 'ï'"), std::string::npos);
  EXPECT_NE(error_of("wi\xffndow").find("unknown pattern 'wi\\xffndow'"), std::string::npos);
  EXPECT_NE(error_of("causal+\x01").find("unknown pattern '\\x01'"), std::string::npos);
  // Nothing after a NUL is lost, and the NUL itself is visible.
  const std::string nul = error_of(std::string("causal\0+dense", 13));
  EXPECT_NE(nul.find("'causal\\x00+dense'"), std::string::npos) << nul;
  const std::string path = error_of(std::string("mask:m.npy\0x.npy", 16));
  EXPECT_NE(path.find("NUL"), std::string::npos) << path;
  EXPECT_NE(path.find("m.npy\\x00x.npy"), std::string::npos) << path;
  // Mask paths in validation messages.
  auto m = std::make_shared<MaskData>();
  m->n = 2, m->bits = {1, 0, 1, 1}, m->path = std::string("odd\x01\0name.npy", 13);
  Pattern p;
  p.kind = PatternKind::Mask;
  p.mask = m;
  try {
    validate_pattern(p, 3);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("odd\\x01\\x00name.npy is 2 x 2"), std::string::npos) << e.what();
  }
}

TEST(Pattern, PrintableKeepsTextAndEscapesTheRest) {
  EXPECT_EQ(printable("plain + text_1"), "plain + text_1");
  EXPECT_EQ(printable("é中😀"), "é中😀");
  EXPECT_EQ(printable(std::string("a\0b\n\x7f", 5)), "a\\x00b\\x0a\\x7f");
  EXPECT_EQ(printable("\xc2\x85"), "\\xc2\\x85");                    // C1 control character
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // surrogate
  EXPECT_EQ(printable("\xe4\xb8"), "\\xe4\\xb8");                    // cut short
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // beyond U+10FFFF
}
