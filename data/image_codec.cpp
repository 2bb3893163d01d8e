// image_codec.cpp: PNG (libpng) and JPEG (libjpeg) decoding and encoding with one-line errors.
//
// Both libraries report errors by longjmp. Every function below that calls setjmp declares no object
// with a destructor after it, and the C++ buffers it fills are owned by its caller, so a longjmp skips
// no destructor; the caller turns the recorded message into an exception once the library's state is
// freed.
#include "data/image_codec.h"

// jpeglib.h needs size_t and FILE declared before it.
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <jpeglib.h>
#include <png.h>

#include "data/file_io.h"

namespace qatlab {

namespace {

constexpr size_t kMessageBytes = 200;

std::string dims_text(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

// (H, W, C) interleaved rows, as both libraries give them -> (C, H, W) planes.
void interleaved_to_planar(const std::vector<uint8_t>& hwc, Image& img) {
  img.pixels.resize(static_cast<size_t>(img.c * img.h * img.w));
  const int64_t plane = img.h * img.w;
  for (int64_t p = 0; p < plane; ++p)
    for (int64_t ch = 0; ch < img.c; ++ch) img.pixels[ch * plane + p] = hwc[p * img.c + ch];
}

std::vector<uint8_t> planar_to_interleaved(const Image& img) {
  std::vector<uint8_t> hwc(img.pixels.size());
  const int64_t plane = img.h * img.w;
  for (int64_t p = 0; p < plane; ++p)
    for (int64_t ch = 0; ch < img.c; ++ch) hwc[p * img.c + ch] = img.pixels[ch * plane + p];
  return hwc;
}

void check_writable(const std::string& path, const Image& img) {
  // Larger than the readers take (kMaxImageSide), so that tests can make images they must refuse.
  constexpr int64_t kMaxWritten = 65535;
  if ((img.c != 1 && img.c != 3) || img.h < 1 || img.w < 1 || img.h > kMaxWritten || img.w > kMaxWritten ||
      img.pixels.size() != static_cast<size_t>(img.c * img.h * img.w))
    throw std::invalid_argument(path + ": cannot write an image of " + std::to_string(img.c) + " channels, " +
                                dims_text(img.w, img.h) + ", " + std::to_string(img.pixels.size()) +
                                " bytes (expected 1 or 3 channels, C*H*W bytes)");
}

// ------------------------------------------------------------------------------------------ PNG

struct PngState {
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  char error[kMessageBytes] = {};    // libpng's message when it gave up
  char warning[kMessageBytes] = {};  // its first warning (the reason behind "Invalid IHDR data")
  char refused[kMessageBytes] = {};  // what we refuse in a valid file
};

void png_read_bytes(png_structp png, png_bytep out, size_t n) {
  auto* s = static_cast<PngState*>(png_get_io_ptr(png));
  if (n > s->size - s->pos) png_error(png, "the file ends before the image does (truncated?)");
  std::memcpy(out, s->data + s->pos, n);
  s->pos += n;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(s->error, sizeof s->error, "%s", message);
  png_longjmp(png, 1);
}

// libpng warns about ancillary chunks (colour profiles, text) it cannot use, the pixels being intact,
// and about the details of a header it then refuses: the first warning is kept for that message.
void png_on_warning(png_structp png, png_const_charp message) {
  auto* s = static_cast<PngState*>(png_get_error_ptr(png));
  if (!s->warning[0]) std::snprintf(s->warning, sizeof s->warning, "%s", message);
}

// Fills img (shape) and hwc; false after an error or a refusal (recorded in s).
bool png_decode(png_structp png, png_infop info, PngState& s, Image& img, std::vector<uint8_t>& hwc,
                std::vector<png_bytep>& rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, &s, png_read_bytes);
  png_set_user_limits(png, kMaxImageSide, kMaxImageSide);
  png_read_info(png, info);
  const int color = png_get_color_type(png, info);
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) {
    std::snprintf(s.refused, sizeof s.refused, "has an alpha channel or transparency; qatlab takes gray or RGB images");
    return false;
  }
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_bit_depth(png, info) == 16) png_set_scale_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  img.w = png_get_image_width(png, info);
  img.h = png_get_image_height(png, info);
  img.c = png_get_channels(png, info);
  if ((img.c != 1 && img.c != 3) || png_get_rowbytes(png, info) != static_cast<size_t>(img.w * img.c)) {
    std::snprintf(s.refused, sizeof s.refused, "decodes to %d channels of %d bits; expected 8-bit gray or RGB",
                  static_cast<int>(img.c), static_cast<int>(png_get_bit_depth(png, info)));
    return false;
  }
  hwc.resize(static_cast<size_t>(img.h * img.w * img.c));
  rows.resize(static_cast<size_t>(img.h));
  for (int64_t y = 0; y < img.h; ++y) rows[y] = hwc.data() + y * img.w * img.c;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);  // the chunks after the pixels: a file cut short there fails here
  return true;
}

Image decode_png(const std::string& path, const std::vector<uint8_t>& bytes) {
  PngState s;
  s.data = bytes.data();
  s.size = bytes.size();
  Image img;
  std::vector<uint8_t> hwc;  // (H, W, C)
  std::vector<png_bytep> rows;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, png_on_error, png_on_warning);
  if (!png) throw std::bad_alloc();
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw std::bad_alloc();
  }
  const bool ok = png_decode(png, info, s, img, hwc, rows);
  png_destroy_read_struct(&png, &info, nullptr);
  if (s.refused[0]) throw std::runtime_error(path + ": PNG image " + s.refused);
  if (!ok)
    throw std::runtime_error(path + ": corrupt or truncated PNG file (" + s.error +
                             (s.warning[0] ? std::string(": ") + s.warning : std::string()) + ")");
  interleaved_to_planar(hwc, img);
  return img;
}

// ----------------------------------------------------------------------------------------- JPEG

struct JpegError {
  jpeg_error_mgr mgr;  // first, so that a j_common_ptr's err points at the whole struct
  std::jmp_buf jump;
  char message[kMessageBytes] = {};
  bool warned = false;
  bool too_many_scans = false;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

// Level -1 is a warning about the data (a premature end, a corrupt marker): the decoder then makes up
// pixels, so the first one is kept as the reason to refuse the file. Higher levels are trace messages.
void jpeg_on_message(j_common_ptr cinfo, int level) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  if (level >= 0 || e->warned) return;
  e->warned = true;
  (*cinfo->err->format_message)(cinfo, e->message);
}

// A progressive JPEG may hold any number of scans, each a pass over the whole image: a crafted file
// with tens of thousands of them makes the decoder pass over the image that many times. Files from
// libjpeg's own progressive script have about ten.
constexpr int kMaxJpegScans = 1000;

void jpeg_on_progress(j_common_ptr cinfo) {
  const auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number <= kMaxJpegScans) return;
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  e->too_many_scans = true;
  std::longjmp(e->jump, 1);
}

bool jpeg_decode(jpeg_decompress_struct& cinfo, JpegError& err, jpeg_progress_mgr& progress,
                 const std::vector<uint8_t>& bytes, Image& img, std::vector<uint8_t>& hwc, char* refused) {
  if (setjmp(err.jump)) return false;
  jpeg_create_decompress(&cinfo);
  progress.progress_monitor = jpeg_on_progress;
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.image_width > kMaxImageSide || cinfo.image_height > kMaxImageSide) {
    std::snprintf(refused, kMessageBytes, "of %ux%u pixels is larger than %lldx%lld", cinfo.image_width,
                  cinfo.image_height, static_cast<long long>(kMaxImageSide), static_cast<long long>(kMaxImageSide));
    return false;
  }
  if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
    cinfo.out_color_space = JCS_GRAYSCALE;
  } else if (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB) {
    cinfo.out_color_space = JCS_RGB;
  } else {
    std::snprintf(refused, kMessageBytes, "is CMYK or of an unknown colour space; qatlab takes gray or RGB images");
    return false;
  }
  jpeg_start_decompress(&cinfo);
  img.w = cinfo.output_width;
  img.h = cinfo.output_height;
  img.c = cinfo.output_components;
  hwc.resize(static_cast<size_t>(img.h * img.w * img.c));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = hwc.data() + static_cast<size_t>(cinfo.output_scanline) * img.w * img.c;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  return true;
}

Image decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes) {
  jpeg_decompress_struct cinfo{};
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  err.mgr.emit_message = jpeg_on_message;
  Image img;
  std::vector<uint8_t> hwc;  // (H, W, C)
  char refused[kMessageBytes] = {};
  jpeg_progress_mgr progress{};
  const bool ok = jpeg_decode(cinfo, err, progress, bytes, img, hwc, refused);
  jpeg_destroy_decompress(&cinfo);
  if (refused[0]) throw std::runtime_error(path + ": JPEG image " + refused);
  if (err.too_many_scans)
    throw std::runtime_error(path + ": JPEG image of more than " + std::to_string(kMaxJpegScans) + " scans; refused");
  if (!ok || err.warned) throw std::runtime_error(path + ": corrupt or truncated JPEG file (" + err.message + ")");
  interleaved_to_planar(hwc, img);
  return img;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

bool png_encode(png_structp png, png_infop info, std::FILE* f, const Image& img, std::vector<png_bytep>& rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_init_io(png, f);
  png_set_IHDR(png, info, static_cast<png_uint_32>(img.w), static_cast<png_uint_32>(img.h), 8,
               img.c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  return true;
}

bool jpeg_encode(jpeg_compress_struct& cinfo, JpegError& err, std::FILE* f, const Image& img, int quality,
                 std::vector<uint8_t>& hwc) {
  if (setjmp(err.jump)) return false;
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = static_cast<JDIMENSION>(img.w);
  cinfo.image_height = static_cast<JDIMENSION>(img.h);
  cinfo.input_components = static_cast<int>(img.c);
  cinfo.in_color_space = img.c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  for (int i = 0; i < cinfo.num_components; ++i) cinfo.comp_info[i].h_samp_factor = cinfo.comp_info[i].v_samp_factor = 1;
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = hwc.data() + static_cast<size_t>(cinfo.next_scanline) * img.w * img.c;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  return true;
}

}  // namespace

ImageFormat sniff_image_format(const uint8_t* bytes, size_t size) {
  if (size >= 8 && png_sig_cmp(bytes, 0, 8) == 0) return ImageFormat::Png;
  if (size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return ImageFormat::Jpeg;
  return ImageFormat::Unknown;
}

Image decode_image(const std::string& path, const std::vector<uint8_t>& bytes) {
  switch (sniff_image_format(bytes.data(), bytes.size())) {
    case ImageFormat::Png: return decode_png(path, bytes);
    case ImageFormat::Jpeg: return decode_jpeg(path, bytes);
    default:
      throw std::runtime_error(path + ": neither a PNG nor a JPEG file (" + std::to_string(bytes.size()) +
                               " bytes, no PNG signature or JPEG start marker)");
  }
}

Image read_image(const std::string& path) { return decode_image(path, read_file_bytes(path)); }

void write_png(const std::string& path, const Image& image) {
  check_writable(path, image);
  std::vector<uint8_t> hwc = planar_to_interleaved(image);  // (H, W, C)
  std::vector<png_bytep> rows(static_cast<size_t>(image.h));
  for (int64_t y = 0; y < image.h; ++y) rows[y] = hwc.data() + y * image.w * image.c;
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
  if (!f) throw std::runtime_error(path + ": cannot create (" + std::strerror(errno) + ")");
  PngState s;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &s, png_on_error, png_on_warning);
  if (!png) throw std::bad_alloc();
  png_infop info = png_create_info_struct(png);
  const bool ok = info && png_encode(png, info, f.get(), image, rows);
  png_destroy_write_struct(&png, info ? &info : nullptr);
  if (!ok) throw std::runtime_error(path + ": cannot write PNG (" + s.error + ")");
  if (std::fclose(f.release()) != 0) throw std::runtime_error(path + ": write error on close");
}

void write_jpeg(const std::string& path, const Image& image, int quality) {
  check_writable(path, image);
  if (quality < 1 || quality > 100)
    throw std::invalid_argument(path + ": JPEG quality " + std::to_string(quality) + ", expected 1..100");
  std::vector<uint8_t> hwc = planar_to_interleaved(image);  // (H, W, C)
  std::unique_ptr<std::FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
  if (!f) throw std::runtime_error(path + ": cannot create (" + std::strerror(errno) + ")");
  jpeg_compress_struct cinfo{};
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  const bool ok = jpeg_encode(cinfo, err, f.get(), image, quality, hwc);
  jpeg_destroy_compress(&cinfo);
  if (!ok) throw std::runtime_error(path + ": cannot write JPEG (" + err.message + ")");
  if (std::fclose(f.release()) != 0) throw std::runtime_error(path + ": write error on close");
}

}  // namespace qatlab
