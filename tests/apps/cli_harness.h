// cli_harness.h: running the real `qatlab` binary from tests: spawning it with captured output, temp
// directories, a synthetic MNIST-format dataset that a model can learn, and small file helpers.
//
// Shape letters: N images, H height, W width.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/rng.h"
#include "data/idx.h"

extern char** environ;

namespace qatlab::testing {

namespace fs = std::filesystem;

#ifndef QATLAB_BINARY
#error "tests in tests/apps need QATLAB_BINARY (the path of the built qatlab executable)"
#endif
inline const char* kQatlab = QATLAB_BINARY;

// A fresh directory under the system temp directory, removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& stem) {
    std::string templ = (fs::temp_directory_path() / ("qatlab_cli_" + stem + "_XXXXXX")).string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed for " + templ);
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// What one run of the binary did.
struct RunResult {
  int wait_status = 0;
  bool exited = false;   // ended by exit(), not by a signal
  int exit_code = -1;    // when exited
  std::string out, err;  // everything written to stdout / stderr
  std::string command;   // for failure messages

  // For gtest messages: how it ended and what it printed.
  std::string describe() const {
    std::string s = "command: " + command + "\n";
    s +=
        exited ? "exit code " + std::to_string(exit_code) : "killed by signal " + std::to_string(WTERMSIG(wait_status));
    return s + "\n--- stdout:\n" + out + "--- stderr:\n" + err;
  }
};

// Starts `program args...` (a path, or a name looked up on PATH) with stdout and stderr sent to the given
// files (stdin from /dev/null); returns its pid.
inline pid_t spawn_program(const std::string& program, const std::vector<std::string>& args,
                           const std::string& out_path, const std::string& err_path) {
  std::vector<std::string> argv_s{program};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  // The children share two cores with each other, with the test and with whatever else runs. libgomp's
  // default spin-waiting then burns the time slices a descheduled partner thread needs (training ran 20x
  // slower under load); passive waiting changes only how threads wait, never a result.
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) env_s.push_back(*e);
  if (!std::getenv("OMP_WAIT_POLICY")) env_s.push_back("OMP_WAIT_POLICY=PASSIVE");
  std::vector<char*> env;
  for (auto& e : env_s) env.push_back(e.data());
  env.push_back(nullptr);

  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("posix_spawn " + program + " failed: error " + std::to_string(rc));
  return pid;
}

// Starts `qatlab args...` as spawn_program does.
inline pid_t spawn_qatlab(const std::vector<std::string>& args, const std::string& out_path,
                          const std::string& err_path) {
  return spawn_program(kQatlab, args, out_path, err_path);
}

inline std::string join_command(const std::vector<std::string>& args) {
  std::string s = "qatlab";
  for (const auto& a : args) s += " " + a;
  return s;
}

// Waits for a spawned run and collects its output files.
inline RunResult wait_qatlab(pid_t pid, const std::string& out_path, const std::string& err_path,
                             const std::string& command) {
  RunResult r;
  r.command = command;
  while (::waitpid(pid, &r.wait_status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  }
  r.exited = WIFEXITED(r.wait_status);
  if (r.exited) r.exit_code = WEXITSTATUS(r.wait_status);
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

// Runs `qatlab args...` to completion; its stdout/stderr are kept in `log_dir`/<tag>.out and .err.
inline RunResult run_qatlab(const std::vector<std::string>& args, const fs::path& log_dir,
                            const std::string& tag = "run") {
  const std::string out = (log_dir / (tag + ".out")).string(), err = (log_dir / (tag + ".err")).string();
  return wait_qatlab(spawn_qatlab(args, out, err), out, err, join_command(args));
}

// ------------------------------------------------------------------------------- outcomes of a run

// Exit codes documented in apps/main.cpp.
inline constexpr int kRuntimeFailure = 1;
inline constexpr int kUsageError = 2;

// Passes when the run exited on its own (no signal) with `code` and wrote exactly one line to stderr,
// "qatlab <command>: ...", containing every one of `needles`.
inline ::testing::AssertionResult FailedWith(const RunResult& r, int code, const std::string& command,
                                      std::initializer_list<std::string> needles) {
  if (!r.exited) return ::testing::AssertionFailure() << "the run crashed\n" << r.describe();
  if (r.exit_code != code)
    return ::testing::AssertionFailure() << "expected exit code " << code << "\n" << r.describe();
  const std::vector<std::string> lines = split_lines(r.err);
  if (lines.size() != 1)
    return ::testing::AssertionFailure() << "expected one stderr line, got " << lines.size() << "\n" << r.describe();
  const std::string prefix = "qatlab " + command + ": ";
  if (lines[0].rfind(prefix, 0) != 0)
    return ::testing::AssertionFailure() << "stderr does not start with '" << prefix << "'\n" << r.describe();
  for (const std::string& n : needles)
    if (lines[0].find(n) == std::string::npos)
      return ::testing::AssertionFailure() << "stderr lacks '" << n << "'\n" << r.describe();
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult Succeeded(const RunResult& r) {
  if (r.exited && r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "expected success\n" << r.describe();
}

// --------------------------------------------------------------------------------- synthetic data

inline constexpr int kImageSize = 28;

// Writes an MNIST-format dataset (the four raw IDX files) to `dir`. Image i of class K is dark noise
// (0..63) with a bright 5x5 block (200..255) whose place encodes K: row band K / 5, column band K % 5,
// jittered by up to one pixel. Any model that can see where the block is learns the task. One label in
// ten is then replaced by a random one, so accuracy stays below 100 % (about 91 % at best) and two
// evaluations that disagree on even one image show it.
inline void write_synthetic_mnist(const std::string& dir, int64_t n_train, int64_t n_test, uint64_t seed) {
  fs::create_directories(dir);
  Rng rng(seed);
  const auto make_split = [&](int64_t n, const std::string& images_file, const std::string& labels_file) {
    IdxArray images{{n, kImageSize, kImageSize}, std::vector<uint8_t>(n * kImageSize * kImageSize)};  // (N, H, W)
    IdxArray labels{{n}, std::vector<uint8_t>(n)};                                                    // (N)
    for (int64_t i = 0; i < n; ++i) {
      const int label = static_cast<int>(rng.below(10));
      const bool flipped = rng.below(10) == 0;
      const int stored = flipped ? static_cast<int>(rng.below(10)) : label;
      labels.data[i] = static_cast<uint8_t>(stored);
      uint8_t* img = images.data.data() + i * kImageSize * kImageSize;
      for (int p = 0; p < kImageSize * kImageSize; ++p) img[p] = static_cast<uint8_t>(rng.below(64));
      const int y0 = 4 + 12 * (label / 5) + static_cast<int>(rng.below(3)) - 1;
      const int x0 = 2 + 5 * (label % 5) + static_cast<int>(rng.below(3)) - 1;
      for (int y = y0; y < y0 + 5; ++y)
        for (int x = x0; x < x0 + 5; ++x) img[y * kImageSize + x] = static_cast<uint8_t>(200 + rng.below(56));
    }
    write_idx(dir + "/" + images_file, images, /*gzip=*/false);
    write_idx(dir + "/" + labels_file, labels, /*gzip=*/false);
  };
  make_split(n_train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte");
  make_split(n_test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");
}

// ------------------------------------------------------------------------------- the test fixture

// The base of the CLI test suites: one synthetic MNIST set per suite in a temp directory, with
// QATLAB_DATA_DIR pointed at it for the suite's lifetime (every run passes --data-dir; one falling back
// to the default data directory then finds this set instead of fetching MNIST), and a fresh work
// directory per test. A suite's SetUpTestSuite calls set_up_suite first, its TearDownTestSuite
// tear_down_suite last.
class CliSuite : public ::testing::Test {
 protected:
  static void set_up_suite(const std::string& stem, int64_t n_train, int64_t n_test, uint64_t seed) {
    suite_dir_ = new TempDir(stem);
    data_dir_ = *suite_dir_ / "data/mnist";
    write_synthetic_mnist(data_dir_, n_train, n_test, seed);
    if (const char* old = std::getenv("QATLAB_DATA_DIR")) saved_data_env_ = old;
    ::setenv("QATLAB_DATA_DIR", (*suite_dir_ / "data").c_str(), 1);
  }
  static void tear_down_suite() {
    if (saved_data_env_)
      ::setenv("QATLAB_DATA_DIR", saved_data_env_->c_str(), 1);
    else
      ::unsetenv("QATLAB_DATA_DIR");
    saved_data_env_.reset();
    delete suite_dir_;
    suite_dir_ = nullptr;
  }

  void SetUp() override {
    work_ = std::make_unique<TempDir>(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }

  // A path in this test's work directory.
  std::string work(const std::string& name) const { return *work_ / name; }
  // Runs qatlab; its output is kept in the test's work directory under `tag`.
  RunResult qatlab(const std::vector<std::string>& args, const std::string& tag = "run") {
    return run_qatlab(args, work_->path(), tag);
  }

  static inline TempDir* suite_dir_ = nullptr;
  static inline std::string data_dir_;  // the synthetic set (MNIST's four IDX files)
  static inline std::optional<std::string> saved_data_env_;
  std::unique_ptr<TempDir> work_;
};

// ------------------------------------------------------------------------------------ metrics.csv

// metrics.csv as rows of named columns; the header is checked to name every column once.
struct Csv {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;

  int column(const std::string& name) const {
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return static_cast<int>(i);
    throw std::runtime_error("metrics.csv has no column '" + name + "'");
  }
  double value(size_t row, const std::string& name) const { return std::stod(rows.at(row).at(column(name))); }
};

inline std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) cells.push_back(cell);
  return cells;
}

inline Csv read_csv(const std::string& path) {
  Csv csv;
  const std::vector<std::string> lines = split_lines(read_text(path));
  if (lines.empty()) return csv;
  csv.header = split_commas(lines[0]);
  for (size_t i = 1; i < lines.size(); ++i) csv.rows.push_back(split_commas(lines[i]));
  return csv;
}

}  // namespace qatlab::testing
