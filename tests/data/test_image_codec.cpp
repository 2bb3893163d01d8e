// test_image_codec.cpp: PNG and JPEG decoding (libpng, libjpeg): exact PNG round trips, close JPEG ones,
// and one-line errors naming the file for truncated, foreign and refused images.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include <jpeglib.h>

#include "data/file_io.h"
#include "data/image_codec.h"
#include "tests/data/data_test_util.h"

namespace qatlab::testing {
namespace {

Image random_image(int64_t c, int64_t h, int64_t w, uint64_t seed) {
  return Image{c, h, w, random_bytes(static_cast<size_t>(c * h * w), seed)};
}

TEST(ImageCodec, PngRoundTripIsExactForGrayAndRgb) {
  TempDir tmp;
  for (int64_t c : {1, 3}) {
    const Image img = random_image(c, 5, 7, 11 + c);  // (C, H, W), not square: rows and columns not swapped
    write_png(tmp.file("a.png"), img);
    const Image back = read_image(tmp.file("a.png"));
    EXPECT_EQ(back.c, c);
    EXPECT_EQ(back.h, 5);
    EXPECT_EQ(back.w, 7);
    EXPECT_EQ(back.pixels, img.pixels);
  }
}

TEST(ImageCodec, JpegRoundTripKeepsShapeAndSmoothContent) {
  TempDir tmp;
  for (int64_t c : {1, 3}) {
    // Flat 8x8 blocks per channel: JPEG at quality 95 keeps them within a few levels.
    Image img{c, 16, 24, std::vector<uint8_t>(static_cast<size_t>(c * 16 * 24))};
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t y = 0; y < 16; ++y)
        for (int64_t x = 0; x < 24; ++x) img.pixels[(ch * 16 + y) * 24 + x] = static_cast<uint8_t>(40 + 60 * ((y / 8 + x / 8 + ch) % 3));
    write_jpeg(tmp.file("a.jpg"), img);
    const Image back = read_image(tmp.file("a.jpg"));
    ASSERT_EQ(back.c, c);
    ASSERT_EQ(back.h, 16);
    ASSERT_EQ(back.w, 24);
    int worst = 0;
    for (size_t i = 0; i < img.pixels.size(); ++i) worst = std::max(worst, std::abs(back.pixels[i] - img.pixels[i]));
    EXPECT_LE(worst, 12) << "channels " << c;
  }
}

TEST(ImageCodec, FormatComesFromTheContentNotTheName) {
  TempDir tmp;
  write_png(tmp.file("really_png.jpg"), random_image(1, 3, 3, 1));
  EXPECT_EQ(read_image(tmp.file("really_png.jpg")).c, 1);
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  write_file_bytes(tmp.file("x.png"), text.data(), text.size());
  const std::string msg = error_of([&] { read_image(tmp.file("x.png")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("x.png") + ": neither a PNG nor a JPEG file")) << msg;
}

TEST(ImageCodec, TruncatedFilesAreRefusedWithTheirPath) {
  TempDir tmp;
  write_png(tmp.file("a.png"), random_image(3, 20, 20, 2));
  write_jpeg(tmp.file("a.jpg"), random_image(3, 32, 32, 3));
  for (const char* name : {"a.png", "a.jpg"}) {
    std::vector<uint8_t> bytes = read_file_bytes(tmp.file(name));
    // Cut at several places: inside the header, inside the pixel data, just before the end marker.
    for (size_t keep : {size_t{12}, bytes.size() / 2, bytes.size() - 2}) {
      const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(keep));
      const std::string msg = error_of([&] { decode_image(tmp.file(name), cut); });
      EXPECT_TRUE(starts_with(msg, tmp.file(name) + ": corrupt or truncated")) << keep << ": " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST(ImageCodec, CorruptPngDataIsRefused) {
  TempDir tmp;
  write_png(tmp.file("a.png"), random_image(1, 16, 16, 4));
  std::vector<uint8_t> bytes = read_file_bytes(tmp.file("a.png"));
  bytes[bytes.size() / 2] ^= 0x55;  // inside the IDAT chunk: its CRC no longer matches
  const std::string msg = error_of([&] { decode_image("a.png", bytes); });
  EXPECT_TRUE(starts_with(msg, "a.png: corrupt or truncated PNG file")) << msg;
}

TEST(ImageCodec, OversizedImageIsRefusedFromItsHeader) {
  TempDir tmp;
  write_png(tmp.file("wide.png"), Image{1, 1, kMaxImageSide + 1, std::vector<uint8_t>(kMaxImageSide + 1, 9)});
  const std::string msg = error_of([&] { read_image(tmp.file("wide.png")); });
  EXPECT_TRUE(contains(msg, "wide.png: corrupt or truncated PNG file")) << msg;
  EXPECT_TRUE(contains(msg, "width")) << msg;  // libpng: "Image width exceeds user limit in IHDR"
}

// A valid progressive RGB JPEG of `scans_per_coefficient` successive-approximation scans for every
// coefficient of every component (64 * 3 * scans_per_coefficient scans), written with libjpeg.
void write_many_scan_jpeg(const std::string& path, int scans_per_coefficient) {
  std::vector<jpeg_scan_info> script;
  for (int c = 0; c < 3; ++c)
    for (int k = 0; k < 64; ++k)
      for (int s = 0; s < scans_per_coefficient; ++s) {
        jpeg_scan_info scan{};
        scan.comps_in_scan = 1;
        scan.component_index[0] = c;
        scan.Ss = scan.Se = k;
        scan.Al = scans_per_coefficient - 1 - s;
        scan.Ah = s == 0 ? 0 : scan.Al + 1;
        script.push_back(scan);
      }
  jpeg_compress_struct cinfo{};
  jpeg_error_mgr err{};
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = cinfo.image_height = 8;
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  cinfo.scan_info = script.data();
  cinfo.num_scans = static_cast<int>(script.size());
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row(24, 128);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&cinfo, &r, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}

TEST(ImageCodec, JpegWithThousandsOfScansIsRefused) {
  TempDir tmp;
  write_many_scan_jpeg(tmp.file("few.jpg"), 5);  // 960 scans: decoded
  EXPECT_EQ(read_image(tmp.file("few.jpg")).c, 3);
  write_many_scan_jpeg(tmp.file("many.jpg"), 6);  // 1152 scans: refused
  const std::string msg = error_of([&] { read_image(tmp.file("many.jpg")); });
  EXPECT_EQ(msg, tmp.file("many.jpg") + ": JPEG image of more than 1000 scans; refused");
}

TEST(ImageCodec, WritersRefuseMalformedImages) {
  TempDir tmp;
  EXPECT_THROW(write_png(tmp.file("a.png"), Image{2, 2, 2, std::vector<uint8_t>(8)}), std::invalid_argument);
  EXPECT_THROW(write_png(tmp.file("a.png"), Image{1, 2, 2, std::vector<uint8_t>(3)}), std::invalid_argument);
  EXPECT_THROW(write_jpeg(tmp.file("a.jpg"), Image{1, 2, 2, std::vector<uint8_t>(4)}, 0), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab::testing
