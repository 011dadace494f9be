// Mask pictures and the built-in suite (the CLI's helpers in src/io).
#include <gtest/gtest.h>

#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/png.hpp"
#include "splat/suite.hpp"

using namespace splat;

namespace {
const uint8_t* pixel(const RgbImage& img, int x, int y) {
  return &img.rgb[(size_t(y) * size_t(img.width) + size_t(x)) * 3];
}
bool white(const uint8_t* p) {
  return p[0] == 255 && p[1] == 255 && p[2] == 255;
}
}  // namespace

TEST(MaskPicture, ShadesExactlyTheAttendedCells) {
  // n = 100 at 16 px minimum: no downsampling when max_pixels >= n.
  const Acsr a = analyse(parse_pattern("causal_window:w=3"), 100);
  const MaskPicture pic = render_mask(a, 128);
  EXPECT_EQ(pic.cell, 1);
  const int x0 = pic.image.width - 100 - 1, y0 = 1;  // the mask sits inside a 1 px frame on the right
  for (int i = 0; i < 100; ++i)
    for (int j = 0; j < 100; ++j)
      EXPECT_EQ(!white(pixel(pic.image, x0 + j, y0 + i)), i - j >= 0 && i - j <= 3) << i << "," << j;
}

TEST(MaskPicture, DownsamplesLargeMasksAndEncodesPng) {
  const Acsr a = analyse(parse_pattern("longformer:w=256,g=32"), 16384);
  const MaskPicture pic = render_mask(a);
  EXPECT_EQ(pic.cell, 16);
  EXPECT_LE(pic.image.height, 1024 + 2);
  EXPECT_EQ(pic.rows_sampled, 16384);
  // A far off-band cell is empty, a diagonal cell full, a global column attended.
  const int x0 = pic.image.width - 1024 - 1;
  EXPECT_TRUE(white(pixel(pic.image, x0 + 900, 1 + 100)));
  EXPECT_FALSE(white(pixel(pic.image, x0 + 500, 1 + 500)));
  EXPECT_FALSE(white(pixel(pic.image, x0 + 0, 1 + 700)));
  try {
    const std::vector<uint8_t> png = encode_png(pic.image);
    ASSERT_GT(png.size(), 8u);
    EXPECT_EQ(png[1], 'P');
    EXPECT_EQ(png[2], 'N');
    EXPECT_EQ(png[3], 'G');
  } catch (const Error& e) {
    EXPECT_EQ(int(e.code()), int(ErrorCode::Unsupported)) << e.what();  // built without libpng
  }
  EXPECT_THROW(render_mask(a, 4), Error);
}

TEST(Suite, SpecsFollowTheIssue) {
  const std::vector<std::string> want4096 = {"window:w=256",
                                             "causal_window:w=512",
                                             "dilated:w=256,d=4",
                                             "strided:s=64",
                                             "blocked:b=512",
                                             "longformer:w=256,g=32",
                                             "bigbird:b=64,w=1,g=2,r=3,seed=1"};
  EXPECT_EQ(suite_specs(4096), want4096);
  const std::vector<std::string> s = suite_specs(16384);
  EXPECT_EQ(s[0], "window:w=1024");
  EXPECT_EQ(s[3], "strided:s=128");
  EXPECT_EQ(s[4], "blocked:b=2048");
  EXPECT_EQ(suite_sizes(), (std::vector<int64_t>{4096, 16384}));
  for (int64_t n : {1, 7, 100, 4096})
    for (const auto& spec : suite_specs(n)) EXPECT_NO_THROW(validate_pattern(parse_pattern(spec), n)) << spec << n;
  EXPECT_THROW(suite(0), Error);
}
