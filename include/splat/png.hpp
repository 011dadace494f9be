// Pictures of attention masks: the N x N mask downsampled to at most max_pixels per side, each pixel's
// shade the fraction of attended entries in its cell, coloured by the region (acsr.hpp regions()) its
// rows belong to; a bar on the left shows the regions' row ranges.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "splat/acsr.hpp"

namespace splat {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes per pixel
};

struct MaskPicture {
  RgbImage image;
  int64_t cell = 1;          // mask entries per pixel side
  int64_t rows_sampled = 0;  // rows read (all rows unless the mask is huge)
};

MaskPicture render_mask(const Acsr& a, int max_pixels = 1024);
// PNG encoding (libpng); throws Error(Unsupported) if splat was built without libpng.
std::vector<uint8_t> encode_png(const RgbImage& img);
// Renders and writes via a temporary file + rename (an existing file survives a failure).
MaskPicture write_mask_png(const std::string& path, const Acsr& a, int max_pixels = 1024);

}  // namespace splat
