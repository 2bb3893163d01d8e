// file_seal.cpp: writing and checking the tag + SHA-256 header of our HDF5 files.
#include "core/file_seal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "core/sha256.h"

namespace qatlab {

namespace {

constexpr char kTag[] = "qatlab-h5 ";
constexpr int kVersion = 1;
constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

// Closes the descriptor on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads exactly n bytes at offset; false on a short read (the file ends first).
bool read_at(int fd, void* buf, size_t n, int64_t offset) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    const ssize_t got = ::pread(fd, p, n, offset);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= static_cast<size_t>(got);
    offset += got;
  }
  return true;
}

// The SHA-256 of bytes [from, from + count) of the file.
std::string hash_range(int fd, const std::string& path, int64_t from, int64_t count) {
  Sha256 h;
  std::vector<char> chunk(size_t{1} << 20);
  while (count > 0) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(count, static_cast<int64_t>(chunk.size())));
    if (!read_at(fd, chunk.data(), n, from)) fail(path, std::string("read error: ") + std::strerror(errno));
    h.update(chunk.data(), n);
    from += static_cast<int64_t>(n);
    count -= static_cast<int64_t>(n);
  }
  return to_hex(h.digest());
}

int64_t file_size(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, std::string("cannot stat: ") + std::strerror(errno));
  return static_cast<int64_t>(st.st_size);
}

// The value after "key " on its own line in the header text, or "" when missing.
std::string field(const std::string& header, const std::string& key) {
  const std::string prefix = "\n" + key + " ";
  const size_t at = header.find(prefix);
  if (at == std::string::npos) return "";
  const size_t start = at + prefix.size(), end = header.find('\n', start);
  return end == std::string::npos ? "" : header.substr(start, end - start);
}

}  // namespace

void seal_file(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDWR | O_CLOEXEC)};
  if (f.fd < 0) fail(path, std::string("cannot open to write its header: ") + std::strerror(errno));
  const int64_t size = file_size(f.fd, path);
  if (size < kSealBytes) fail(path, "cannot write its header: the file has " + std::to_string(size) +
                                        " bytes, fewer than the " + std::to_string(kSealBytes) + " reserved for it");
  const int64_t content = size - kSealBytes;
  std::string header = std::string(kTag) + std::to_string(kVersion) + "\nsha256 " +
                       hash_range(f.fd, path, kSealBytes, content) + "\nbytes " + std::to_string(content) + "\n";
  header.resize(static_cast<size_t>(kSealBytes), '\0');
  if (::pwrite(f.fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size()))
    fail(path, std::string("cannot write its header: ") + std::strerror(errno));
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) fail(path, std::string("cannot write its header: ") + std::strerror(errno));
}

SealState verify_sealed_file(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  const int64_t size = file_size(f.fd, path);
  // As many bytes as the longer of the two things a file may start with.
  unsigned char start[16] = {};
  static_assert(sizeof kHdf5Signature <= sizeof start && sizeof kTag - 1 <= sizeof start);
  if (size < static_cast<int64_t>(sizeof kHdf5Signature) ||
      !read_at(f.fd, start, static_cast<size_t>(std::min<int64_t>(size, sizeof start)), 0))
    fail(path, "not an HDF5 file (or truncated)");
  if (std::memcmp(start, kHdf5Signature, sizeof kHdf5Signature) == 0) return SealState::kUnsealed;

  std::string header(static_cast<size_t>(kSealBytes), '\0');
  if (std::memcmp(start, kTag, sizeof kTag - 1) != 0) {
    // HDF5 content after a header that is not ours: our header, damaged.
    unsigned char after[sizeof kHdf5Signature] = {};
    if (read_at(f.fd, after, sizeof after, kSealBytes) && std::memcmp(after, kHdf5Signature, sizeof after) == 0)
      fail(path, "damaged header: the 'qatlab-h5' tag at its start is missing or changed");
    fail(path, "not an HDF5 file (or truncated)");
  }
  if (size < kSealBytes || !read_at(f.fd, header.data(), header.size(), 0))
    fail(path, "truncated: " + std::to_string(size) + " bytes, shorter than its " + std::to_string(kSealBytes) +
                   "-byte header");
  header.resize(header.find('\0') == std::string::npos ? header.size() : header.find('\0'));
  const std::string first_line = header.substr(0, header.find('\n'));
  const std::string version = first_line.substr(sizeof kTag - 1);
  if (version != std::to_string(kVersion)) {
    // Digits only in the message: the bytes come from the file.
    const bool numeric = !version.empty() && version.size() < 10 &&
                         version.find_first_not_of("0123456789") == std::string::npos;
    if (numeric && std::stoi(version) > kVersion)
      fail(path, "written in qatlab-h5 format version " + version + ", this qatlab reads version " +
                     std::to_string(kVersion) + ": use a newer qatlab");
    fail(path, "damaged header: bad format line (expected 'qatlab-h5 " + std::to_string(kVersion) + "')");
  }
  const std::string digest = field(header, "sha256"), bytes = field(header, "bytes");
  if (digest.size() != 64 || digest.find_first_not_of("0123456789abcdef") != std::string::npos)
    fail(path, "damaged header: no valid 'sha256' line");
  if (bytes.empty() || bytes.size() > 18 || bytes.find_first_not_of("0123456789") != std::string::npos)
    fail(path, "damaged header: no valid 'bytes' line");
  const int64_t expected = std::stoll(bytes), found = size - kSealBytes;
  if (found != expected)
    fail(path, "damaged: its header records " + bytes + " bytes of content, the file has " + std::to_string(found) +
                   (found < expected ? " (cut short)" : " (something was appended)"));
  if (hash_range(f.fd, path, kSealBytes, found) != digest)
    fail(path, "damaged: its content does not match the SHA-256 recorded in its header (changed after it was written)");
  return SealState::kVerified;
}

}  // namespace qatlab
