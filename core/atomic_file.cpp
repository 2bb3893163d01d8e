// atomic_file.cpp: write-to-temporary, fsync, rename, fsync-directory, with cleanup on every failure.
#include "core/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>
#include <typeinfo>

#include "core/h5io.h"

namespace qatlab {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

std::string errno_text(int err) { return std::strerror(err); }

// Flushes a file's (or a directory's) data and metadata to the disk. Returns 0 or an errno value.
int fsync_path(const std::string& p, bool directory) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return errno;
  int err = 0;
  if (::fsync(fd) != 0) err = errno;
  ::close(fd);
  return err;
}

void remove_quietly(const std::string& p) {
  std::error_code ec;
  std::filesystem::remove(p, ec);
}

// A process killed while writing (kill -9, power loss) leaves "<name>.tmp-<pid>" behind, and nothing
// else would ever remove it. Removes those of `target` whose process is gone; a live pid (a concurrent
// writer, or an unrelated process that reuses the number) keeps its file.
void remove_stale_temporaries(const std::filesystem::path& dir, const std::string& name) {
  namespace fs = std::filesystem;
  const std::string prefix = name + ".tmp-";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string entry = it->path().filename().string();
    if (entry.size() <= prefix.size() || entry.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = entry.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to know (EPERM): keep
    std::error_code rm;
    if (it->is_regular_file(rm)) fs::remove(it->path(), rm);
  }
}

}  // namespace

void atomic_write_file(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path target(path);
  if (path.empty() || !target.has_filename()) fail(path, "cannot write: not a file name");
  const std::string dir = target.parent_path().empty() ? std::string(".") : target.parent_path().string();
  if (!fs::is_directory(dir, ec)) fail(path, "cannot write: directory '" + dir + "' does not exist");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) fail(path, "cannot write: directory '" + dir + "' is not writable");
  if (fs::is_directory(target, ec)) fail(path, "cannot write: is a directory");

  // Same directory as the target, so that the rename stays within one filesystem and is atomic.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  remove_quietly(tmp);  // a leftover of an earlier process that had our pid and was killed
  remove_stale_temporaries(dir, target.filename().string());
  try {
    write(tmp);
  } catch (...) {
    remove_quietly(tmp);
    throw;
  }
  if (!fs::is_regular_file(tmp, ec)) {
    remove_quietly(tmp);
    fail(path, "the writer did not create '" + tmp + "'");
  }
  // The data must be on disk before the rename makes it visible; otherwise a crash could leave the
  // new name pointing at an empty or partial file.
  if (const int err = fsync_path(tmp, false); err != 0) {
    remove_quietly(tmp);
    fail(path, "cannot sync '" + tmp + "': " + errno_text(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    remove_quietly(tmp);
    fail(path, "cannot rename '" + tmp + "' over it: " + errno_text(err));
  }
  // The rename itself lives in the directory; syncing it makes the new name durable. Some filesystems
  // cannot sync a directory (EINVAL); the content is in place by then, so that is not an error.
  if (const int err = fsync_path(dir, true); err != 0 && err != EINVAL)
    fail(path, "written, but cannot sync directory '" + dir + "': " + errno_text(err));
}

void atomic_write_text(const std::string& path, const std::string& content) {
  atomic_write_file(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, "cannot open '" + tmp + "' for writing: " + errno_text(errno));
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) fail(path, "cannot write '" + tmp + "' (disk full?)");
  });
}

void atomic_save_h5(const std::string& path, const std::function<void(H5File&)>& fill) {
  atomic_write_file(path, [&](const std::string& tmp) {
    try {
      H5File f = H5File::create(tmp);
      fill(f);
      f.close();  // flushes; an error here must fail the save, not be lost in a destructor
    } catch (const std::runtime_error& e) {
      // H5File names the file it has open, the temporary one; the user knows the file as `path`.
      const std::string msg = e.what();
      const std::string prefix = tmp + ":";
      if (typeid(e) != typeid(std::runtime_error) || msg.rfind(prefix, 0) != 0) throw;
      throw std::runtime_error(path + ":" + msg.substr(prefix.size()));
    }
  });
}

}  // namespace qatlab
