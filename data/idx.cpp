// idx.cpp: IDX reader and writer, with gzip handled by zlib.
#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include "data/file_io.h"

namespace qatlab {

namespace {

constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr int kMaxDims = 4;

bool has_gzip_magic(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown type";
  }
}

std::string hex_byte(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", b);
  return buf;
}

// Larger IDX payloads are refused before they are read or inflated (MNIST's largest file is 47 MB).
constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 31;

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

// The whole file size an IDX header implies, once enough of it is there: 0 while the bytes so far are
// too few to tell, or when they are no unsigned-byte IDX header (read_idx reports those). Throws when
// the dimensions ask for more than kMaxIdxBytes.
uint64_t implied_idx_size(const std::string& path, const uint8_t* bytes, size_t size) {
  if (size < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != kTypeUnsignedByte) return 0;
  const int ndims = bytes[3];
  if (ndims < 1 || ndims > kMaxDims) return 0;
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (size < header) return 0;
  std::vector<int64_t> dims(static_cast<size_t>(ndims));
  unsigned __int128 count = 1;
  for (int d = 0; d < ndims; ++d) {
    dims[d] = read_be32(bytes + 4 + 4 * d);
    count *= static_cast<uint64_t>(dims[d]);
  }
  if (count > kMaxIdxBytes)
    throw std::runtime_error(path + ": IDX dimensions " + dims_str(dims) + " ask for more than " +
                             std::to_string(kMaxIdxBytes) + " bytes of data; refused");
  return header + static_cast<uint64_t>(count);
}

// Decompresses a whole gzip file held in memory. Several concatenated gzip members (what `cat a.gz
// b.gz` gives) decompress to the concatenation, as with gunzip. As soon as the IDX header is out,
// inflation stops at the size it implies (plus one byte, to tell "more data than the header says"):
// a small file that inflates to gigabytes (a "gzip bomb") costs no more memory than an honest one.
std::vector<uint8_t> gunzip(const std::string& path, const std::vector<uint8_t>& in) {
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip wrapper (header, CRC-32 and length trailer are all checked).
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error(path + ": cannot start zlib");

  // zlib counts in uInt, so very large buffers are fed and drained in pieces of at most this size.
  constexpr size_t kMaxPiece = std::numeric_limits<uInt>::max();
  // The gzip trailer ends with the uncompressed size mod 2^32: a good first guess for the output
  // buffer (one byte more, so that a correct guess never triggers a doubling before Z_STREAM_END).
  size_t guess = in.size() * 4;
  if (in.size() >= 18) {
    const uint8_t* t = in.data() + in.size() - 4;
    guess = (size_t{t[0]} | size_t{t[1]} << 8 | size_t{t[2]} << 16 | size_t{t[3]} << 24) + 1;
    // A corrupt trailer must not make us allocate gigabytes up front; past this the buffer doubles.
    guess = std::min(guess, in.size() * 32);
  }
  std::vector<uint8_t> out(std::max<size_t>(guess, size_t{1} << 16));
  size_t in_pos = 0, out_pos = 0;
  uint64_t limit = 0;  // the file size the IDX header implies, once known
  zs.avail_in = 0;
  zs.avail_out = 0;
  for (;;) {
    if (zs.avail_in == 0 && in_pos < in.size()) {
      zs.next_in = const_cast<Bytef*>(in.data() + in_pos);
      zs.avail_in = static_cast<uInt>(std::min(in.size() - in_pos, kMaxPiece));
      in_pos += zs.avail_in;
    }
    if (limit == 0) limit = implied_idx_size(path, out.data(), out_pos);
    if (limit != 0 && out_pos > limit) {
      inflateEnd(&zs);
      throw std::runtime_error(path + ": the gzip data inflates to more than the " + std::to_string(limit) +
                               " bytes its IDX header implies; refused");
    }
    // Until the header is out, 64 KB at a time (it is in the first block).
    const size_t cap = limit != 0 ? static_cast<size_t>(limit) + 1 : out_pos + (size_t{1} << 16);
    if (out.size() > cap) out.resize(std::max(cap, out_pos));
    if (out_pos == out.size()) out.resize(std::min(out.size() * 2, std::max(cap, out.size() + 1)));
    const size_t room = std::min(out.size() - out_pos, kMaxPiece);
    zs.next_out = out.data() + out_pos;
    zs.avail_out = static_cast<uInt>(room);

    const int ret = inflate(&zs, Z_NO_FLUSH);
    out_pos += room - zs.avail_out;

    if (ret == Z_STREAM_END) {
      const size_t pos = in_pos - zs.avail_in;  // where the compressed stream ended in `in`
      const size_t left = in.size() - pos;
      if (left == 0) break;
      if (left >= 2 && in[pos] == 0x1f && in[pos + 1] == 0x8b) {
        inflateReset(&zs);
        continue;
      }
      inflateEnd(&zs);
      throw std::runtime_error(path + ": corrupt gzip file: " + std::to_string(left) +
                               " bytes of garbage after the compressed stream");
    }
    if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT || ret == Z_STREAM_ERROR) {
      const std::string why = zs.msg ? zs.msg : "invalid data";
      inflateEnd(&zs);
      throw std::runtime_error(path + ": corrupt gzip stream (" + why + ")");
    }
    if (ret == Z_MEM_ERROR) {
      inflateEnd(&zs);
      throw std::bad_alloc();
    }
    // Z_OK or Z_BUF_ERROR: no progress is possible only when the input is used up before the end.
    if (zs.avail_in == 0 && in_pos == in.size() && zs.avail_out > 0) {
      inflateEnd(&zs);
      throw std::runtime_error(path + ": corrupt gzip stream (the file ends before the compressed "
                               "data does; truncated download?)");
    }
  }
  inflateEnd(&zs);
  // A stream that ended within its first block: its header's dimensions are checked all the same.
  if (limit == 0) implied_idx_size(path, out.data(), out_pos);
  out.resize(out_pos);
  return out;
}

void write_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  if (has_gzip_magic(bytes)) bytes = gunzip(path, bytes);

  if (bytes.size() < 4) {
    throw std::runtime_error(path + ": not an IDX file: " + std::to_string(bytes.size()) +
                             " bytes, too short for the 4-byte header");
  }
  if (bytes[0] != 0 || bytes[1] != 0) {
    throw std::runtime_error(path + ": not an IDX file: magic starts with " + hex_byte(bytes[0]) + " " +
                             hex_byte(bytes[1]) + ", expected 0x00 0x00");
  }
  const uint8_t type = bytes[2];
  if (type != kTypeUnsignedByte) {
    throw std::runtime_error(path + ": IDX element type " + hex_byte(type) + " (" + idx_type_name(type) +
                             ") is not supported, expected 0x08 (unsigned byte)");
  }
  const int ndims = bytes[3];
  if (ndims < 1 || ndims > kMaxDims) {
    throw std::runtime_error(path + ": IDX file has " + std::to_string(ndims) +
                             " dimensions, expected 1 to 4");
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (bytes.size() < header) {
    throw std::runtime_error(path + ": truncated: the header needs " + std::to_string(header) +
                             " bytes, found " + std::to_string(bytes.size()));
  }

  IdxArray out;
  out.dims.resize(ndims);
  // Four dims below 2^32 each cannot overflow 128 bits; anything beyond int64 cannot fit a file anyway.
  unsigned __int128 count = 1;
  for (int d = 0; d < ndims; ++d) {
    out.dims[d] = read_be32(bytes.data() + 4 + 4 * d);
    count *= static_cast<uint64_t>(out.dims[d]);
  }
  const size_t found = bytes.size() - header;
  if (count > static_cast<unsigned __int128>(std::numeric_limits<int64_t>::max())) {
    throw std::runtime_error(path + ": truncated: dimensions " + dims_str(out.dims) +
                             " need more bytes of data than any file holds, found " + std::to_string(found));
  }
  const uint64_t expected = static_cast<uint64_t>(count);
  if (found < expected) {
    throw std::runtime_error(path + ": truncated: expected " + std::to_string(expected) +
                             " bytes of data, found " + std::to_string(found));
  }
  if (found > expected) {
    throw std::runtime_error(path + ": " + std::to_string(found - expected) +
                             " trailing bytes after the " + std::to_string(expected) +
                             " bytes of data of dimensions " + dims_str(out.dims));
  }
  // Drop the header in place rather than copying the payload into a second buffer.
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  out.data = std::move(bytes);
  return out;
}

void write_idx(const std::string& path, const IdxArray& array, bool gzip) {
  const size_t ndims = array.dims.size();
  if (ndims < 1 || ndims > kMaxDims) {
    throw std::invalid_argument("write_idx " + path + ": " + std::to_string(ndims) +
                                " dimensions, expected 1 to 4");
  }
  unsigned __int128 count = 1;
  for (int64_t d : array.dims) {
    if (d < 0 || d > int64_t{0xFFFFFFFF}) {
      throw std::invalid_argument("write_idx " + path + ": dimension " + std::to_string(d) +
                                  " in " + dims_str(array.dims) + " does not fit an IDX uint32");
    }
    count *= static_cast<uint64_t>(d);
  }
  if (count != array.data.size()) {
    throw std::invalid_argument("write_idx " + path + ": dimensions " + dims_str(array.dims) +
                                " need prod(dims) bytes of data, found " + std::to_string(array.data.size()));
  }

  std::vector<uint8_t> header(4 + 4 * ndims);  // magic, then one big-endian uint32 per dimension
  header[2] = kTypeUnsignedByte;
  header[3] = static_cast<uint8_t>(ndims);
  for (size_t d = 0; d < ndims; ++d) write_be32(header.data() + 4 + 4 * d, static_cast<uint32_t>(array.dims[d]));

  if (!gzip) {
    std::vector<uint8_t> bytes;
    bytes.reserve(header.size() + array.data.size());
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.insert(bytes.end(), array.data.begin(), array.data.end());
    write_file_bytes(path, bytes.data(), bytes.size());
    return;
  }

  gzFile f = gzopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error(path + ": cannot create gzip file");
  auto put = [&](const uint8_t* p, size_t n) {
    // gzwrite counts in unsigned int: write in pieces.
    constexpr size_t kPiece = size_t{1} << 30;
    while (n > 0) {
      const unsigned piece = static_cast<unsigned>(std::min(n, kPiece));
      if (gzwrite(f, p, piece) != static_cast<int>(piece)) {
        gzclose(f);
        throw std::runtime_error(path + ": gzip write error");
      }
      p += piece;
      n -= piece;
    }
  };
  put(header.data(), header.size());
  put(array.data.data(), array.data.size());
  if (gzclose(f) != Z_OK) throw std::runtime_error(path + ": gzip write error on close");
}

}  // namespace qatlab
