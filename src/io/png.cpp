// PNG encoding of pictures (libpng) and writing mask pictures (drawn in mask_picture.cpp).
#include "splat/png.hpp"

#include <csetjmp>

#include "splat/error.hpp"
#include "splat/npy.hpp"

#ifdef SPLAT_HAVE_PNG
#include <png.h>
#endif

namespace splat {

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

MaskPicture write_mask_png(const std::string& path, const Acsr& a, int max_pixels, const MaskWindow& window) {
  MaskPicture pic = render_mask(a, max_pixels, window);
  const std::vector<uint8_t> bytes = encode_png(pic.image);
  write_file_atomic(path, bytes.data(), bytes.size());
  return pic;
}

}  // namespace splat
