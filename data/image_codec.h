// image_codec.h: PNG and JPEG files to and from 8-bit (C, H, W) pixels, through libpng and libjpeg.
//
// Shape letters: C channels (1 gray, 3 RGB), H height, W width.
//
// Decoding takes 8-bit or 16-bit gray and RGB PNGs (palette images become RGB; 16-bit samples are
// scaled to 8 bits; interlaced images are de-interlaced) and baseline or progressive gray and colour
// JPEGs (YCbCr becomes RGB). Refused, each with one line naming the file: a file that is not what its
// content says, a truncated or corrupt one (libjpeg's warnings, such as "Premature end of JPEG file",
// count as corruption: the decoder would otherwise fill the missing part with gray), an image with an
// alpha channel or transparency (qatlab would have to drop it silently), CMYK JPEGs, progressive JPEGs
// of more than 1000 scans (each scan is a pass over the whole image: a crafted file could hold tens of
// thousands), and images
// whose side exceeds kMaxImageSide (checked from the header, before any pixel memory is allocated).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qatlab {

// Images larger than this on either side are refused before they are decoded.
inline constexpr int64_t kMaxImageSide = 4096;

struct Image {
  int64_t c = 0, h = 0, w = 0;
  std::vector<uint8_t> pixels;  // (C, H, W), planar
};

enum class ImageFormat { Unknown, Png, Jpeg };

// The format the first bytes announce (PNG signature, JPEG SOI marker), whatever the file's name.
ImageFormat sniff_image_format(const uint8_t* bytes, size_t size);

// Decodes a whole PNG or JPEG file held in memory. `path` is only used in messages. Throws
// std::runtime_error "PATH: ..." for anything refused (see above).
Image decode_image(const std::string& path, const std::vector<uint8_t>& bytes);
// read_file_bytes + decode_image.
Image read_image(const std::string& path);

// Writes `image` (C = 1 or 3) as a PNG, or as a JPEG of the given quality (1..100, baseline, 4:4:4).
// For tests and tools that make data sets. Throws std::invalid_argument on a malformed image and
// std::runtime_error naming the path when writing fails.
void write_png(const std::string& path, const Image& image);
void write_jpeg(const std::string& path, const Image& image, int quality = 95);

}  // namespace qatlab
