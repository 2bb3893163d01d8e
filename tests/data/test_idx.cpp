// test_idx.cpp: IDX round trips (raw and gzip) and every malformed-file error of read_idx / write_idx.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <zlib.h>

#include "data/file_io.h"
#include "data/idx.h"
#include "tests/data/data_test_util.h"

namespace qatlab {
namespace {

using testing::contains;
using testing::error_of;
using testing::random_bytes;
using testing::starts_with;
using testing::TempDir;

// Raw IDX bytes with an arbitrary header, for building broken files by hand.
std::vector<uint8_t> idx_bytes(uint8_t type, const std::vector<uint32_t>& dims, size_t payload, uint8_t magic1 = 0) {
  std::vector<uint8_t> b = {0, magic1, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  }
  for (size_t i = 0; i < payload; ++i) b.push_back(static_cast<uint8_t>(i * 7));
  return b;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) { write_file_bytes(path, b.data(), b.size()); }

std::vector<uint8_t> gzip_bytes(const std::vector<uint8_t>& raw) {
  TempDir tmp;
  gzFile f = gzopen(tmp.file("x.gz").c_str(), "wb");
  gzwrite(f, raw.data(), static_cast<unsigned>(raw.size()));
  gzclose(f);
  return read_file_bytes(tmp.file("x.gz"));
}

TEST(Idx, RoundTripRawAndGzipForEveryRank) {
  TempDir tmp;
  const std::vector<std::vector<int64_t>> shapes = {{17}, {3, 5}, {2, 3, 4}, {2, 1, 3, 5}};
  for (size_t k = 0; k < shapes.size(); ++k) {
    int64_t numel = 1;
    for (int64_t d : shapes[k]) numel *= d;
    const IdxArray a{shapes[k], random_bytes(static_cast<size_t>(numel), 10 + k)};
    for (bool gz : {false, true}) {
      std::string name = std::to_string(k);
      if (gz) name += ".gz";
      const std::string path = tmp.file(name);
      write_idx(path, a, gz);
      const IdxArray b = read_idx(path);
      EXPECT_EQ(b.dims, a.dims);
      EXPECT_EQ(b.data, a.data);
      const std::vector<uint8_t> file = read_file_bytes(path);
      if (gz) {
        EXPECT_EQ(file[0], 0x1f);
        EXPECT_EQ(file[1], 0x8b);
      } else {
        EXPECT_EQ(file.size(), 4 + 4 * a.dims.size() + a.data.size());
        EXPECT_EQ(file[2], 0x08);
        EXPECT_EQ(file[3], a.dims.size());
      }
    }
  }
}

TEST(Idx, HeaderIsBigEndian) {
  TempDir tmp;
  const IdxArray a{{300, 2}, std::vector<uint8_t>(600, 9)};
  write_idx(tmp.file("a"), a, false);
  const std::vector<uint8_t> file = read_file_bytes(tmp.file("a"));
  EXPECT_EQ(file[4], 0);
  EXPECT_EQ(file[5], 0);
  EXPECT_EQ(file[6], 1);  // 300 = 0x012C
  EXPECT_EQ(file[7], 0x2C);
}

TEST(Idx, DetectsGzipByMagicNotByName) {
  TempDir tmp;
  const IdxArray a{{4, 4}, random_bytes(16, 3)};
  write_idx(tmp.file("compressed.idx"), a, true);
  write_idx(tmp.file("plain.gz"), a, false);
  EXPECT_EQ(read_idx(tmp.file("compressed.idx")).data, a.data);
  EXPECT_EQ(read_idx(tmp.file("plain.gz")).data, a.data);
}

TEST(Idx, ReadsConcatenatedGzipMembers) {
  TempDir tmp;
  const std::vector<uint8_t> raw = idx_bytes(0x08, {2, 50}, 100);
  std::vector<uint8_t> first(raw.begin(), raw.begin() + 37), second(raw.begin() + 37, raw.end());
  std::vector<uint8_t> both = gzip_bytes(first);
  const std::vector<uint8_t> tail = gzip_bytes(second);
  both.insert(both.end(), tail.begin(), tail.end());
  write_bytes(tmp.file("cat.gz"), both);
  const IdxArray a = read_idx(tmp.file("cat.gz"));
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 50}));
  EXPECT_EQ(a.data, std::vector<uint8_t>(raw.begin() + 12, raw.end()));
}

TEST(Idx, ZeroSizedDimensionIsEmpty) {
  TempDir tmp;
  write_idx(tmp.file("e"), {{0, 28, 28}, {}}, false);
  const IdxArray a = read_idx(tmp.file("e"));
  EXPECT_EQ(a.dims, (std::vector<int64_t>{0, 28, 28}));
  EXPECT_TRUE(a.data.empty());
}

TEST(Idx, MissingFileNamesPath) {
  TempDir tmp;
  const std::string path = tmp.file("nope-idx3-ubyte");
  const std::string msg = error_of([&] { read_idx(path); });
  EXPECT_TRUE(starts_with(msg, path + ": cannot open")) << msg;
  EXPECT_TRUE(contains(msg, "No such file")) << msg;
  const std::string dir_msg = error_of([&] { read_idx(tmp.path()); });
  EXPECT_TRUE(starts_with(dir_msg, tmp.path() + ": is a directory")) << dir_msg;
}

TEST(Idx, WrongMagic) {
  TempDir tmp;
  write_bytes(tmp.file("m"), idx_bytes(0x08, {4}, 4, /*magic1=*/0x01));
  const std::string msg = error_of([&] { read_idx(tmp.file("m")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("m") + ": not an IDX file")) << msg;
  EXPECT_TRUE(contains(msg, "0x00 0x01, expected 0x00 0x00")) << msg;
  // A text file is not an IDX file either.
  write_bytes(tmp.file("t"), {'h', 'e', 'l', 'l', 'o'});
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("t")); }), "not an IDX file"));
}

TEST(Idx, WrongTypeByteIsNamed) {
  TempDir tmp;
  write_bytes(tmp.file("f"), idx_bytes(0x0D, {2}, 8));
  std::string msg = error_of([&] { read_idx(tmp.file("f")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("f") + ": ")) << msg;
  EXPECT_TRUE(contains(msg, "0x0D (float32)")) << msg;
  EXPECT_TRUE(contains(msg, "expected 0x08 (unsigned byte)")) << msg;
  write_bytes(tmp.file("s"), idx_bytes(0x09, {2}, 2));
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("s")); }), "0x09 (signed byte)"));
  write_bytes(tmp.file("u"), idx_bytes(0x42, {2}, 2));
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("u")); }), "0x42 (unknown type)"));
}

TEST(Idx, DimensionCountOutOfRange) {
  TempDir tmp;
  write_bytes(tmp.file("d0"), idx_bytes(0x08, {}, 0));
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("d0")); }), "has 0 dimensions, expected 1 to 4"));
  write_bytes(tmp.file("d5"), idx_bytes(0x08, {1, 1, 1, 1, 1}, 1));
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("d5")); }), "has 5 dimensions, expected 1 to 4"));
}

TEST(Idx, TruncatedHeader) {
  TempDir tmp;
  write_bytes(tmp.file("h3"), {0, 0, 8});
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("h3")); }), "too short for the 4-byte header"));
  std::vector<uint8_t> b = idx_bytes(0x08, {2, 3, 4}, 0);
  b.resize(10);
  write_bytes(tmp.file("hd"), b);
  const std::string msg = error_of([&] { read_idx(tmp.file("hd")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("hd") + ": truncated: the header needs 16 bytes, found 10")) << msg;
}

TEST(Idx, TruncatedPayload) {
  TempDir tmp;
  write_bytes(tmp.file("p"), idx_bytes(0x08, {2, 3, 4}, 20));
  EXPECT_EQ(error_of([&] { read_idx(tmp.file("p")); }),
            tmp.file("p") + ": truncated: expected 24 bytes of data, found 20");
  // The same inside a gzip stream: the check runs on the decompressed bytes.
  write_bytes(tmp.file("p.gz"), gzip_bytes(idx_bytes(0x08, {2, 3, 4}, 23)));
  EXPECT_EQ(error_of([&] { read_idx(tmp.file("p.gz")); }),
            tmp.file("p.gz") + ": truncated: expected 24 bytes of data, found 23");
  // Dimensions whose product cannot fit in memory are a truncation too, not an overflow.
  write_bytes(tmp.file("big"), idx_bytes(0x08, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, 5));
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("big")); }), "truncated"));
}

TEST(Idx, TrailingBytes) {
  TempDir tmp;
  write_bytes(tmp.file("t"), idx_bytes(0x08, {2, 3}, 9));
  const std::string msg = error_of([&] { read_idx(tmp.file("t")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("t") + ": 3 trailing bytes after the 6 bytes of data")) << msg;
}

TEST(Idx, CorruptGzip) {
  TempDir tmp;
  const std::vector<uint8_t> gz = gzip_bytes(idx_bytes(0x08, {64, 64}, 4096));
  ASSERT_GT(gz.size(), 40u);

  std::vector<uint8_t> flipped = gz;  // damage the compressed data
  for (size_t i = 15; i < 25; ++i) flipped[i] ^= 0x5A;
  write_bytes(tmp.file("flip.gz"), flipped);
  std::string msg = error_of([&] { read_idx(tmp.file("flip.gz")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("flip.gz") + ": corrupt gzip stream")) << msg;

  std::vector<uint8_t> crc = gz;  // damage only the CRC-32 in the trailer
  crc[crc.size() - 6] ^= 0xFF;
  write_bytes(tmp.file("crc.gz"), crc);
  msg = error_of([&] { read_idx(tmp.file("crc.gz")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("crc.gz") + ": corrupt gzip stream")) << msg;

  const std::vector<uint8_t> cut(gz.begin(), gz.begin() + static_cast<long>(gz.size() / 2));
  write_bytes(tmp.file("cut.gz"), cut);
  msg = error_of([&] { read_idx(tmp.file("cut.gz")); });
  EXPECT_TRUE(starts_with(msg, tmp.file("cut.gz") + ": corrupt gzip stream")) << msg;
  EXPECT_TRUE(contains(msg, "ends before the compressed data")) << msg;

  write_bytes(tmp.file("magic-only.gz"), {0x1f, 0x8b});
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("magic-only.gz")); }), "corrupt gzip"));

  std::vector<uint8_t> garbage = gz;
  garbage.push_back('x');
  garbage.push_back('y');
  write_bytes(tmp.file("garbage.gz"), garbage);
  msg = error_of([&] { read_idx(tmp.file("garbage.gz")); });
  EXPECT_TRUE(contains(msg, "2 bytes of garbage after the compressed stream")) << msg;
}

// Peak resident memory of this process so far, in bytes.
int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

TEST(Idx, GzipBombStopsAtTheSizeTheHeaderImplies) {
  TempDir tmp;
  // A label file whose header says 100 labels, followed by 256 MiB of zeros: ~250 KB compressed.
  const std::string path = tmp.file("bomb-labels.gz");
  const std::vector<uint8_t> header = idx_bytes(0x08, {100}, 0);
  gzFile f = gzopen(path.c_str(), "wb9");
  ASSERT_NE(f, nullptr);
  gzwrite(f, header.data(), static_cast<unsigned>(header.size()));
  const std::vector<uint8_t> zeros(size_t{1} << 20, 0);
  for (int i = 0; i < 256; ++i) gzwrite(f, zeros.data(), static_cast<unsigned>(zeros.size()));
  gzclose(f);
  ASSERT_LT(read_file_bytes(path).size(), size_t{2} << 20);

  const int64_t before = peak_rss_bytes();
  EXPECT_EQ(error_of([&] { read_idx(path); }),
            path + ": the gzip data inflates to more than the 108 bytes its IDX header implies; refused");
  // Inflating it all took 512 MiB (the buffer doubles); bounded, it costs next to nothing.
  EXPECT_LT(peak_rss_bytes() - before, int64_t{32} << 20);

  // A header asking for more than any dataset file holds is refused before inflating anything.
  write_bytes(tmp.file("huge.gz"), gzip_bytes(idx_bytes(0x08, {0xFFFFFFFF, 0xFFFFFFFF}, 5)));
  EXPECT_TRUE(contains(error_of([&] { read_idx(tmp.file("huge.gz")); }), "bytes of data; refused"));
}

TEST(Idx, WriterRejectsMalformedArrays) {
  TempDir tmp;
  EXPECT_THROW(write_idx(tmp.file("a"), {{}, {}}, false), std::invalid_argument);
  EXPECT_THROW(write_idx(tmp.file("a"), {{1, 1, 1, 1, 1}, {0}}, false), std::invalid_argument);
  EXPECT_THROW(write_idx(tmp.file("a"), {{-1}, {}}, false), std::invalid_argument);
  const std::string msg = error_of([&] { write_idx(tmp.file("a"), {{2, 3}, std::vector<uint8_t>(5)}, false); });
  EXPECT_TRUE(contains(msg, "(2, 3)") && contains(msg, "found 5")) << msg;
  EXPECT_THROW(write_idx(tmp.file("no-such-dir/a"), {{1}, {0}}, false), std::runtime_error);
  EXPECT_THROW(write_idx(tmp.file("no-such-dir/a.gz"), {{1}, {0}}, true), std::runtime_error);
}

}  // namespace
}  // namespace qatlab
