// Mask pictures and the built-in suite (the CLI's helpers in src/io).
#include <gtest/gtest.h>

#include "splat/acsr.hpp"
#include "splat/error.hpp"
#include "splat/pattern.hpp"
#include "splat/png.hpp"
#include "splat/suite.hpp"
#include "test_cli_util.hpp"

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
  EXPECT_EQ(pic.zoom, 1);
  const int x0 = pic.mask_x, y0 = pic.mask_y;
  for (int i = 0; i < 100; ++i)
    for (int j = 0; j < 100; ++j)
      EXPECT_EQ(!white(pixel(pic.image, x0 + j, y0 + i)), i - j >= 0 && i - j <= 3) << i << "," << j;
}

TEST(MaskPicture, DownsamplesLargeMasksAndEncodesPng) {
  const Acsr a = analyse(parse_pattern("longformer:w=256,g=32"), 16384);
  const MaskPicture pic = render_mask(a);
  EXPECT_EQ(pic.cell, 16);
  // The 1024 px mask plus its frame, axes and legend.
  EXPECT_GE(pic.image.height, pic.mask_y + 1024 + 1);
  EXPECT_LE(pic.image.height, 1024 + 200);
  EXPECT_LE(pic.image.width, 1024 + 200);
  EXPECT_EQ(pic.rows_sampled, 16384);
  // A far off-band cell is empty, a diagonal cell full, a global column attended.
  const int x0 = pic.mask_x, y0 = pic.mask_y;
  EXPECT_TRUE(white(pixel(pic.image, x0 + 900, y0 + 100)));
  EXPECT_FALSE(white(pixel(pic.image, x0 + 500, y0 + 500)));
  EXPECT_FALSE(white(pixel(pic.image, x0 + 0, y0 + 700)));
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

namespace {
bool dark(const uint8_t* p) {
  return p[0] < 100 && p[1] < 100 && p[2] < 100;
}
bool same(const uint8_t* p, const uint8_t* q) {
  return p[0] == q[0] && p[1] == q[1] && p[2] == q[2];
}
}  // namespace

TEST(MaskPicture, HasAxesWithIndexTicksAndARegionLegend) {
  const int64_t n = 1000;
  const Acsr a = analyse(parse_pattern("causal_window:w=5+global:g=3"), n);
  const MaskPicture pic = render_mask(a, 512);
  ASSERT_EQ(pic.cell, 2);
  const RgbImage& img = pic.image;
  // Ticks: dark pixels just outside the frame, above the mask at key 0 and left of it at query 0.
  EXPECT_TRUE(dark(pixel(img, pic.mask_x, pic.mask_y - 2)));
  EXPECT_TRUE(dark(pixel(img, pic.mask_x - 2, pic.mask_y)));
  // The step is a round number (200 here): a tick above key 200, none above key 100.
  EXPECT_TRUE(dark(pixel(img, pic.mask_x + 100, pic.mask_y - 2)));
  EXPECT_FALSE(dark(pixel(img, pic.mask_x + 50, pic.mask_y - 2)));
  // Index labels: ink in the label band above the mask and left of it.
  int top_ink = 0, left_ink = 0;
  for (int y = 0; y < pic.mask_y - 5; ++y)
    for (int x = pic.mask_x; x < img.width; ++x) top_ink += dark(pixel(img, x, y));
  for (int y = pic.mask_y; y < pic.mask_y + 500; ++y)
    for (int x = 16; x < pic.mask_x - 6; ++x) left_ink += dark(pixel(img, x, y));
  EXPECT_GT(top_ink, 20);
  EXPECT_GT(left_ink, 20);
  // Legend below the mask: one swatch per region in its colour, the same colour as its rows' cells.
  const std::vector<Region> regs = regions(a);
  ASSERT_GE(regs.size(), 2u);
  const int legend_y = pic.mask_y + 500 + 2;
  for (size_t r = 0; r < 2; ++r) {
    const int64_t row = (regs[r].row_begin + regs[r].row_end) / 2;   // mid-region: not a region-start tick
    const uint8_t* cell = pixel(img, 0, pic.mask_y + int(row / 2));  // the region bar
    bool found = false;
    for (int y = legend_y; y < img.height && !found; ++y)
      for (int x = 0; x < img.width && !found; ++x) found = same(pixel(img, x, y), cell);
    EXPECT_TRUE(found) << "legend swatch of region " << r;
  }
}

TEST(MaskPicture, ZoomShowsPeriodicStructureThatDownsamplingHides) {
  const int64_t n = 16384;
  const Pattern p = parse_pattern("dilated:w=64,d=4");
  const Acsr a = analyse(p, n);
  // Downsampled 16x, every cell of the band holds attended entries: the dilation is not visible.
  const MaskPicture whole = render_mask(a);
  ASSERT_EQ(whole.cell, 16);
  // A window of 64 x 64 entries magnified 8x: every entry is its own 8 x 8 block, exactly as attended.
  const MaskWindow w = parse_mask_window("1000:1064,1000:1064", n);
  const MaskPicture zoomed = render_mask(a, 1024, w);
  EXPECT_EQ(zoomed.cell, 1);
  EXPECT_EQ(zoomed.zoom, 8);
  int shaded = 0, empty = 0;
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t j = 0; j < 64; ++j) {
      const bool on = pattern_contains(p, n, 1000 + i, 1000 + j);
      for (int dy : {0, 7})
        for (int dx : {0, 7})
          EXPECT_EQ(!white(pixel(zoomed.image, zoomed.mask_x + int(j) * 8 + dx, zoomed.mask_y + int(i) * 8 + dy)), on)
              << i << "," << j;
      (on ? shaded : empty) += 1;
    }
  EXPECT_GT(shaded, 0);
  EXPECT_GT(empty, 0);
  EXPECT_THROW(parse_mask_window("0:10", n), Error);
  EXPECT_THROW(parse_mask_window("5:5,0:10", n), Error);
  EXPECT_THROW(parse_mask_window("0:10,0:16385", n), Error);
  EXPECT_THROW(parse_mask_window("0:10,0:10x", n), Error);
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

TEST(CliPng, InspectZoomDrawsAWindowMagnified) {
  const std::string png = (splat_test::scratch() / "zoom.png").string();
  const splat_test::CliResult r = splat_test::run_cli(
      {"inspect", "dilated:w=64,d=4", "--seq-len", "16384", "--png", png, "--zoom", "1000:1064,1000:1064"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("8 px per entry"), std::string::npos) << r.out;
  EXPECT_EQ(splat_test::slurp(png).substr(1, 3), "PNG");
  // Downsampled, the output says how to see the detail.
  const splat_test::CliResult whole =
      splat_test::run_cli({"inspect", "dilated:w=64,d=4", "--seq-len", "16384", "--png", png});
  ASSERT_EQ(whole.rc, 0) << whole.err;
  EXPECT_NE(whole.out.find("--zoom"), std::string::npos) << whole.out;
  splat_test::expect_usage_error({"inspect", "causal", "--seq-len", "64", "--png", png, "--zoom", "0:65,0:8"},
                                 "--zoom");
  splat_test::expect_usage_error({"inspect", "causal", "--seq-len", "64", "--zoom", "0:8,0:8"}, "--png");
}
