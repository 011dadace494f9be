// Mask pictures. Cost is bounded by reading at most 16 rows per pixel row (all rows up to N = 16384 at
// 1024 px), so drawing never enumerates more than a few hundred million keys.
#include "splat/png.hpp"

#include <algorithm>
#include <cmath>
#include <csetjmp>

#include "splat/error.hpp"
#include "splat/npy.hpp"

#ifdef SPLAT_HAVE_PNG
#include <png.h>
#endif

namespace splat {

namespace {

constexpr int kBar = 12;  // region bar width, then a gap, then the mask with a 1 px frame
constexpr int kGap = 4;
constexpr int64_t kRowsPerCell = 16;
constexpr double kMaxKeysRead = 2e9;

// Distinct, readable hues (Tableau 10); consecutive regions never share a colour.
constexpr uint8_t kPalette[10][3] = {{31, 119, 180}, {255, 127, 14},  {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                                     {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};

void put(RgbImage& img, int x, int y, const uint8_t* c) {
  uint8_t* p = &img.rgb[(size_t(y) * size_t(img.width) + size_t(x)) * 3];
  p[0] = c[0], p[1] = c[1], p[2] = c[2];
}

}  // namespace

MaskPicture render_mask(const Acsr& a, int max_pixels) {
  require(a.n > 0, "render_mask: empty mask");
  require(max_pixels >= 16 && max_pixels <= 8192, "render_mask: picture size must be in [16, 8192] pixels");
  MaskPicture pic;
  const int64_t n = a.n;
  const int64_t f = (n + max_pixels - 1) / max_pixels;  // mask entries per pixel side
  const int64_t w = (n + f - 1) / f;
  pic.cell = f;
  const int64_t step = std::max<int64_t>(1, f / kRowsPerCell);  // read every step-th row of a cell
  const double expected = double(nnz(a)) / double(step);
  if (expected > kMaxKeysRead)
    fail(ErrorCode::Unsupported, "mask too large to draw (" + std::to_string(nnz(a)) + " attended entries)");

  // Row -> region index (-1: rows no region lists).
  const std::vector<Region> regs = regions(a);
  std::vector<int32_t> region_of(size_t(n), -1);
  for (size_t r = 0; r < regs.size(); ++r)
    for (int64_t i = std::max<int64_t>(0, regs[r].row_begin); i < std::min(n, regs[r].row_end); ++i)
      region_of[size_t(i)] = int32_t(r);
  const auto colour = [&](int32_t r) { return r < 0 ? kPalette[7] : kPalette[r % 10 == 7 ? 9 : r % 10]; };

  // Per cell: entries read, attended count, and the attended entries' summed colour.
  std::vector<double> total(size_t(w), 0.0);
  std::vector<uint32_t> count(size_t(w * w), 0), row_count(size_t(w), 0u);
  std::vector<float> sum(size_t(w * w) * 3, 0.0f);
  std::vector<int32_t> keys;
  for (int64_t i = 0; i < n; i += step) {
    row_keys(a, i, keys);
    ++pic.rows_sampled;
    std::fill(row_count.begin(), row_count.end(), 0u);
    for (int32_t j : keys) ++row_count[size_t(j / f)];
    const int64_t y = i / f;
    const uint8_t* c = colour(region_of[size_t(i)]);
    for (int64_t x = 0; x < w; ++x) {
      const uint32_t k = row_count[size_t(x)];
      if (!k) continue;
      count[size_t(y * w + x)] += k;
      for (int ch = 0; ch < 3; ++ch) sum[size_t(y * w + x) * 3 + ch] += float(c[ch]) * float(k);
    }
    total[size_t(y)] += 1.0;  // rows read in this pixel row
  }

  RgbImage& img = pic.image;
  img.width = int(kBar + kGap + w + 2);
  img.height = int(w + 2);
  img.rgb.assign(size_t(img.width) * size_t(img.height) * 3, 255);
  const uint8_t frame[3] = {160, 160, 160};
  for (int x = kBar + kGap; x < img.width; ++x) put(img, x, 0, frame), put(img, x, img.height - 1, frame);
  for (int y = 0; y < img.height; ++y) put(img, kBar + kGap, y, frame), put(img, img.width - 1, y, frame);
  for (int64_t y = 0; y < w; ++y) {
    // Region bar: the colour of the region of the cell's first row; a dark tick where a region starts.
    const int64_t i0 = y * f;
    const int32_t r0 = region_of[size_t(i0)];
    bool starts = y == 0 || region_of[size_t(i0 - 1)] != r0;
    for (int64_t i = i0 + 1; i < std::min(n, i0 + f) && !starts; ++i) starts = region_of[size_t(i)] != r0;
    const uint8_t dark[3] = {40, 40, 40};
    for (int x = 0; x < kBar; ++x) put(img, x, int(y + 1), starts && y > 0 ? dark : colour(r0));
    const int64_t cols = f;
    for (int64_t x = 0; x < w; ++x) {
      const uint32_t k = count[size_t(y * w + x)];
      if (!k) continue;
      const int64_t cell_cols = std::min(n, (x + 1) * cols) - x * cols;
      const double frac = double(k) / (total[size_t(y)] * double(cell_cols));
      // Any attended entry shows at least faintly (a stride diagonal in a wide cell), and sqrt spreads
      // the sparse end of the scale without saturating dense cells.
      const double t = 0.3 + 0.7 * std::sqrt(std::min(1.0, frac));
      uint8_t px[3];
      for (int ch = 0; ch < 3; ++ch) {
        const double mean = sum[size_t(y * w + x) * 3 + ch] / double(k);
        px[ch] = uint8_t(std::lround(255.0 * (1.0 - t) + mean * t));
      }
      put(img, int(kBar + kGap + 1 + x), int(y + 1), px);
    }
  }
  return pic;
}

#ifdef SPLAT_HAVE_PNG
namespace {
void png_append(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}
void png_error_fn(png_structp png, png_const_charp) {
  longjmp(png_jmpbuf(png), 1);
}
void png_warning_fn(png_structp, png_const_charp) {}
}  // namespace

std::vector<uint8_t> encode_png(const RgbImage& img) {
  require(img.width > 0 && img.height > 0 && img.rgb.size() == size_t(img.width) * size_t(img.height) * 3,
          "encode_png: bad image");
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, png_error_fn, png_warning_fn);
  if (!png) fail(ErrorCode::Internal, "libpng: cannot create a write struct");
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows(size_t(img.height));
  for (int y = 0; y < img.height; ++y)
    rows[size_t(y)] = const_cast<png_bytep>(&img.rgb[size_t(y) * size_t(img.width) * 3]);
  // libpng reports errors by longjmp: nothing with a destructor may be created after setjmp.
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    fail(ErrorCode::Internal, "libpng failed to encode the picture");
  }
  png_set_write_fn(png, &out, png_append, nullptr);
  png_set_IHDR(png, info, png_uint_32(img.width), png_uint_32(img.height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_rows(png, info, rows.data());
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}
#else
std::vector<uint8_t> encode_png(const RgbImage&) {
  fail(ErrorCode::Unsupported, "splat was built without libpng: cannot write PNG pictures");
}
#endif

MaskPicture write_mask_png(const std::string& path, const Acsr& a, int max_pixels) {
  MaskPicture pic = render_mask(a, max_pixels);
  const std::vector<uint8_t> bytes = encode_png(pic.image);
  write_file_atomic(path, bytes.data(), bytes.size());
  return pic;
}

}  // namespace splat
