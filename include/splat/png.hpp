// Pictures of attention masks: the N x N mask (or a window of it) downsampled to at most max_pixels per
// side, each pixel's shade the fraction of attended entries in its cell, coloured by the region
// (acsr.hpp regions()) its rows belong to, with axes, a region bar and a legend.
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
  int64_t cell = 1;            // mask entries per pixel side (1 when magnified)
  int zoom = 1;                // pixels per mask entry side (> 1 only when cell == 1)
  int64_t rows_sampled = 0;    // rows read (all rows unless the mask is huge)
  int mask_x = 0, mask_y = 0;  // the image pixel of the window's entry (i0, j0), inside a 1 px frame
};

// The part of the mask to draw: rows [i0, i1) x columns [j0, j1); i1, j1 = -1 mean "to n".
struct MaskWindow {
  int64_t i0 = 0, i1 = -1, j0 = 0, j1 = -1;
};
// Parses "i0:i1,j0:j1" (e.g. "0:256,0:256") for a mask of size n; InvalidArgument if malformed or out of range.
MaskWindow parse_mask_window(const std::string& text, int64_t n);

// Draws the window: each pixel is a cell of `cell` x `cell` entries, shaded by the fraction attended
// and drawn whenever any entry of it is (so a sparse stride stays visible), coloured by the region of
// its rows; a small window is magnified (up to 8 px per entry) so periodic structure shows. Axes with
// index ticks on the top (keys j) and left (queries i), a region bar left of the axis, and a legend
// (region colour -> row range) below.
MaskPicture render_mask(const Acsr& a, int max_pixels = 1024, const MaskWindow& window = {});
// PNG encoding (libpng); throws Error(Unsupported) if splat was built without libpng.
std::vector<uint8_t> encode_png(const RgbImage& img);
// Renders and writes via a temporary file + rename (an existing file survives a failure).
MaskPicture write_mask_png(const std::string& path, const Acsr& a, int max_pixels = 1024,
                           const MaskWindow& window = {});

}  // namespace splat
