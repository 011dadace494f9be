// Mask pictures: a window of the mask, downsampled (or magnified) to at most max_pixels per side, with
// axes, a region bar and a legend. Cost is bounded by reading at most 16 rows per pixel row (all rows up
// to N = 16384 at 1024 px), so drawing never enumerates more than a few billion keys.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "splat/error.hpp"
#include "splat/png.hpp"

namespace splat {

namespace {

constexpr int kBar = 12;  // region bar width, then a gap, then the left axis, then the mask in a 1 px frame
constexpr int kGap = 4;
constexpr int kTick = 4;   // tick length outside the frame
constexpr int kScale = 2;  // glyph pixels per font pixel
constexpr int kMaxZoom = 8;
constexpr int64_t kRowsPerCell = 16;
constexpr double kMaxKeysRead = 2e9;

// Distinct, readable hues (Tableau 10); consecutive regions never share a colour.
constexpr uint8_t kPalette[10][3] = {{31, 119, 180}, {255, 127, 14},  {44, 160, 44},   {214, 39, 40},  {148, 103, 189},
                                     {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
constexpr uint8_t kInk[3] = {40, 40, 40};
constexpr uint8_t kFrame[3] = {160, 160, 160};

// A 3 x 5 font for the labels: digits, '-', ':', ','. Bit 2 of each row is the leftmost pixel.
constexpr uint8_t kGlyphs[13][5] = {{7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
                                    {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7},
                                    {0, 0, 7, 0, 0}, {0, 2, 0, 2, 0}, {0, 0, 0, 2, 4}};
constexpr int kCharW = 4 * kScale, kCharH = 5 * kScale;  // 3 px glyph + 1 px space

void put(RgbImage& img, int x, int y, const uint8_t* c) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  uint8_t* p = &img.rgb[(size_t(y) * size_t(img.width) + size_t(x)) * 3];
  p[0] = c[0], p[1] = c[1], p[2] = c[2];
}

void fill_rect(RgbImage& img, int x0, int y0, int w, int h, const uint8_t* c) {
  for (int y = y0; y < y0 + h; ++y)
    for (int x = x0; x < x0 + w; ++x) put(img, x, y, c);
}

int text_width(const std::string& s) {
  return int(s.size()) * kCharW - kScale;
}

void draw_text(RgbImage& img, int x, int y, const std::string& s) {
  for (char ch : s) {
    const int g = ch >= '0' && ch <= '9' ? ch - '0' : ch == '-' ? 10 : ch == ':' ? 11 : ch == ',' ? 12 : -1;
    if (g >= 0)
      for (int r = 0; r < 5; ++r)
        for (int c = 0; c < 3; ++c)
          if (kGlyphs[g][r] & (4 >> c)) fill_rect(img, x + c * kScale, y + r * kScale, kScale, kScale, kInk);
    x += kCharW;
  }
}

// Tick spacing: the smallest 1, 2 or 5 times a power of ten that gives at most six intervals over `span`.
int64_t nice_step(int64_t span) {
  for (int64_t p = 1;; p *= 10)
    for (int64_t m : {1, 2, 5})
      if (span / (p * m) <= 6) return p * m;
}

}  // namespace

MaskWindow parse_mask_window(const std::string& text, int64_t n) {
  const std::string what = "--zoom must be i0:i1,j0:j1 with 0 <= i0 < i1 <= " + std::to_string(n) +
                           " (and the same for j), got '" + text + "'";
  long long v[4];
  char tail = 0;
  require(std::sscanf(text.c_str(), "%lld:%lld,%lld:%lld%c", &v[0], &v[1], &v[2], &v[3], &tail) == 4, what);
  require(text.find_first_of(" \t+") == std::string::npos, what);
  require(v[0] >= 0 && v[0] < v[1] && v[1] <= n && v[2] >= 0 && v[2] < v[3] && v[3] <= n, what);
  return {v[0], v[1], v[2], v[3]};
}

MaskPicture render_mask(const Acsr& a, int max_pixels, const MaskWindow& window) {
  require(a.n > 0, "render_mask: empty mask");
  require(max_pixels >= 16 && max_pixels <= 8192, "render_mask: picture size must be in [16, 8192] pixels");
  const int64_t n = a.n;
  const int64_t i0 = window.i0, i1 = window.i1 < 0 ? n : window.i1, j0 = window.j0, j1 = window.j1 < 0 ? n : window.j1;
  require(i0 >= 0 && i0 < i1 && i1 <= n && j0 >= 0 && j0 < j1 && j1 <= n, "render_mask: window outside the mask");
  MaskPicture pic;
  const int64_t span = std::max(i1 - i0, j1 - j0);
  const int64_t f = (span + max_pixels - 1) / max_pixels;  // mask entries per cell side
  const int zoom = f == 1 ? int(std::clamp<int64_t>(max_pixels / span, 1, kMaxZoom)) : 1;
  const int64_t cw = (j1 - j0 + f - 1) / f, ch = (i1 - i0 + f - 1) / f;  // cells across, down
  pic.cell = f, pic.zoom = zoom;
  const int64_t step = std::max<int64_t>(1, f / kRowsPerCell);  // read every step-th row of a cell
  const double expected = double(nnz(a)) * double(i1 - i0) / double(n) / double(step);
  if (expected > kMaxKeysRead)
    fail(ErrorCode::Unsupported, "mask too large to draw (" + std::to_string(nnz(a)) + " attended entries)");

  // Row -> region index (-1: rows no region lists), for the rows of the window.
  const std::vector<Region> regs = regions(a);
  std::vector<int32_t> region_of(size_t(i1 - i0), -1);
  for (size_t r = 0; r < regs.size(); ++r)
    for (int64_t i = std::max(i0, regs[r].row_begin); i < std::min(i1, regs[r].row_end); ++i)
      region_of[size_t(i - i0)] = int32_t(r);
  const auto colour = [&](int32_t r) { return r < 0 ? kPalette[7] : kPalette[r % 10 == 7 ? 9 : r % 10]; };

  // Per cell: attended count and the attended entries' summed colour; per cell row: rows read.
  std::vector<double> total(size_t(ch), 0.0);
  std::vector<uint32_t> count(size_t(cw * ch), 0), row_count(size_t(cw), 0u);
  std::vector<float> sum(size_t(cw * ch) * 3, 0.0f);
  std::vector<int32_t> keys;
  for (int64_t i = i0; i < i1; i += step) {
    row_keys(a, i, keys);
    ++pic.rows_sampled;
    std::fill(row_count.begin(), row_count.end(), 0u);
    for (int32_t j : keys)
      if (j >= j0 && j < j1) ++row_count[size_t((j - j0) / f)];
    const int64_t y = (i - i0) / f;
    const uint8_t* c = colour(region_of[size_t(i - i0)]);
    for (int64_t x = 0; x < cw; ++x) {
      const uint32_t k = row_count[size_t(x)];
      if (!k) continue;
      count[size_t(y * cw + x)] += k;
      for (int q = 0; q < 3; ++q) sum[size_t(y * cw + x) * 3 + q] += float(c[q]) * float(k);
    }
    total[size_t(y)] += 1.0;
  }

  // Layout: [bar][gap][left labels][tick][frame|mask|frame], top labels above, legend below.
  const int64_t istep = nice_step(i1 - i0), jstep = nice_step(j1 - j0);
  const int label_w = text_width(std::to_string(i1));
  const int mw = int(cw) * zoom, mh = int(ch) * zoom;
  pic.mask_x = kBar + kGap + label_w + 2 + kTick + 1;
  pic.mask_y = kCharH + 2 + kTick + 1;
  const int frame_right = pic.mask_x + mw, frame_bottom = pic.mask_y + mh;
  // Legend: one entry per region (the first 24): a swatch and the row range "a-b".
  const size_t listed = std::min<size_t>(regs.size(), 24);
  const int entry_w = kCharH + kScale * 2 + text_width(std::to_string(n) + "-" + std::to_string(n)) + 3 * kCharW;
  RgbImage& img = pic.image;
  img.width = std::max(frame_right + 1 + text_width(std::to_string(j1)) / 2 + 2, kBar + kGap + 2 * entry_w);
  const int per_line = std::max(1, (img.width - kBar - kGap) / entry_w);
  const int legend_lines = int((listed + size_t(per_line) - 1) / size_t(per_line));
  const int legend_y = frame_bottom + 1 + kCharH;
  img.height = legend_y + legend_lines * (kCharH + kScale * 3) + 2;
  img.rgb.assign(size_t(img.width) * size_t(img.height) * 3, 255);

  fill_rect(img, pic.mask_x - 1, pic.mask_y - 1, mw + 2, 1, kFrame);
  fill_rect(img, pic.mask_x - 1, frame_bottom, mw + 2, 1, kFrame);
  fill_rect(img, pic.mask_x - 1, pic.mask_y - 1, 1, mh + 2, kFrame);
  fill_rect(img, frame_right, pic.mask_y - 1, 1, mh + 2, kFrame);
  // Axes: a tick and its index at each multiple of the step, on the top (j) and the left (i).
  for (int64_t j = (j0 + jstep - 1) / jstep * jstep; j <= j1; j += jstep) {
    const int x = pic.mask_x + int((j - j0) * zoom / f);
    fill_rect(img, x, pic.mask_y - 1 - kTick, 1, kTick, kInk);
    const std::string s = std::to_string(j);
    draw_text(img, std::clamp(x - text_width(s) / 2, pic.mask_x - 1, img.width - text_width(s) - 1), 1, s);
  }
  for (int64_t i = (i0 + istep - 1) / istep * istep; i <= i1; i += istep) {
    const int y = pic.mask_y + int((i - i0) * zoom / f);
    fill_rect(img, pic.mask_x - 1 - kTick, y, kTick, 1, kInk);
    const std::string s = std::to_string(i);
    draw_text(img, pic.mask_x - 1 - kTick - 2 - text_width(s), std::clamp(y - kCharH / 2, 0, frame_bottom - kCharH), s);
  }
  for (int64_t y = 0; y < ch; ++y) {
    // Region bar: the colour of the region of the cell's first row; a dark tick where a region starts.
    const int64_t r_first = y * f, r_end = std::min(i1 - i0, r_first + f);
    const int32_t r0 = region_of[size_t(r_first)];
    bool starts = y > 0 && region_of[size_t(r_first - 1)] != r0;
    for (int64_t i = r_first + 1; i < r_end && !starts; ++i) starts = region_of[size_t(i)] != r0;
    fill_rect(img, 0, pic.mask_y + int(y) * zoom, kBar, zoom, starts ? kInk : colour(r0));
    for (int64_t x = 0; x < cw; ++x) {
      const uint32_t k = count[size_t(y * cw + x)];
      if (!k) continue;
      const int64_t cell_cols = std::min(j1 - j0, (x + 1) * f) - x * f;
      const double frac = double(k) / (total[size_t(y)] * double(cell_cols));
      // Any attended entry shows at least faintly (a stride diagonal in a wide cell), and sqrt spreads
      // the sparse end of the scale without saturating dense cells.
      const double t = 0.3 + 0.7 * std::sqrt(std::min(1.0, frac));
      uint8_t px[3];
      for (int q = 0; q < 3; ++q) {
        const double mean = sum[size_t(y * cw + x) * 3 + q] / double(k);
        px[q] = uint8_t(std::lround(255.0 * (1.0 - t) + mean * t));
      }
      fill_rect(img, pic.mask_x + int(x) * zoom, pic.mask_y + int(y) * zoom, zoom, zoom, px);
    }
  }
  for (size_t r = 0; r < listed; ++r) {
    const int x = kBar + kGap + int(r % size_t(per_line)) * entry_w;
    const int y = legend_y + int(r / size_t(per_line)) * (kCharH + kScale * 3);
    fill_rect(img, x, y, kCharH, kCharH, colour(int32_t(r)));
    draw_text(img, x + kCharH + kScale * 2, y,
              std::to_string(regs[r].row_begin) + "-" + std::to_string(regs[r].row_end - 1));
  }
  return pic;
}

}  // namespace splat
