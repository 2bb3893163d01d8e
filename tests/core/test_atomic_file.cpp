// test_atomic_file.cpp: atomic writes replace a file only on success and leave no temporary behind.
#include "core/atomic_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/h5io.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("qatlab_atomic_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(dir_);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // The names in the test directory, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// An exception type of our own, to check that the writer's exception comes back unchanged.
struct WriterFailed : std::exception {
  const char* what() const noexcept override { return "writer failed on purpose"; }
};

TEST_F(AtomicFileTest, TextCreatesThenReplaces) {
  const std::string path = file("log.txt");
  atomic_write_text(path, "first version\n");
  EXPECT_EQ(read_all(path), "first version\n");
  const std::string binary("\0\x01\xff second\n\0", 12);
  atomic_write_text(path, binary);
  EXPECT_EQ(read_all(path), binary);
  atomic_write_text(path, "");
  EXPECT_EQ(read_all(path), "");
  EXPECT_EQ(entries(), std::vector<std::string>{"log.txt"});
}

TEST_F(AtomicFileTest, WriterGetsATemporaryBesideTheTarget) {
  const std::string path = file("model.bin");
  std::string seen;
  atomic_write_file(path, [&](const std::string& tmp) {
    seen = tmp;
    EXPECT_FALSE(fs::exists(path));  // nothing is visible under the real name while writing
    std::ofstream(tmp, std::ios::binary) << "payload";
  });
  EXPECT_EQ(seen, path + ".tmp-" + std::to_string(::getpid()));
  EXPECT_EQ(read_all(path), "payload");
  EXPECT_EQ(entries(), std::vector<std::string>{"model.bin"});
}

TEST_F(AtomicFileTest, ThrowingWriterLeavesOldFileIntact) {
  const std::string path = file("ckpt.bin");
  const std::string old_content("old\0bytes\xfe\n", 11);
  atomic_write_text(path, old_content);
  const auto old_time = fs::last_write_time(path);

  bool thrown = false;
  try {
    atomic_write_file(path, [&](const std::string& tmp) {
      std::ofstream out(tmp, std::ios::binary);
      out << "half of the new cont";  // a partial write, then the failure
      out.close();
      throw WriterFailed();
    });
  } catch (const WriterFailed& e) {
    thrown = true;
    EXPECT_STREQ(e.what(), "writer failed on purpose");
  }
  EXPECT_TRUE(thrown);
  EXPECT_EQ(read_all(path), old_content);
  EXPECT_EQ(fs::last_write_time(path), old_time);
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.bin"});
}

TEST_F(AtomicFileTest, ThrowingWriterWithoutOldFileLeavesNothing) {
  const std::string path = file("new.bin");
  EXPECT_THROW(atomic_write_file(path,
                                 [](const std::string& tmp) {
                                   std::ofstream(tmp) << "partial";
                                   throw std::runtime_error("disk on fire");
                                 }),
               std::runtime_error);
  EXPECT_TRUE(entries().empty());
}

TEST_F(AtomicFileTest, WriterThatCreatesNothingIsAnError) {
  const std::string path = file("x.bin");
  atomic_write_text(path, "keep");
  try {
    atomic_write_file(path, [](const std::string&) {});
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": the writer did not create '" + path + ".tmp-" + std::to_string(::getpid()) + "'");
  }
  EXPECT_EQ(read_all(path), "keep");
}

TEST_F(AtomicFileTest, MissingDirectoryFailsBeforeWriting) {
  const std::string path = file("no/such/dir/out.txt");
  bool called = false;
  try {
    atomic_write_file(path, [&](const std::string&) { called = true; });
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": cannot write: directory '" + file("no/such/dir") + "' does not exist");
  }
  EXPECT_FALSE(called);
  EXPECT_THROW(atomic_write_text(path, "x"), std::runtime_error);
  EXPECT_THROW(atomic_save_h5(file("no/x.h5"), [](H5File&) {}), std::runtime_error);
}

TEST_F(AtomicFileTest, TargetThatIsADirectoryFails) {
  fs::create_directory(file("sub"));
  EXPECT_THROW(atomic_write_text(file("sub"), "x"), std::runtime_error);
  EXPECT_TRUE(fs::is_directory(file("sub")));
}

TEST_F(AtomicFileTest, ReadOnlyDirectoryFails) {
  if (::geteuid() == 0) GTEST_SKIP() << "root may write into any directory";
  const std::string sub = file("ro");
  fs::create_directory(sub);
  fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec);
  try {
    atomic_write_text(sub + "/x.txt", "x");
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), sub + "/x.txt: cannot write: directory '" + sub + "' is not writable");
  }
  fs::permissions(sub, fs::perms::owner_all);
}

// ------------------------------------------------------------------------------------------- HDF5

TEST_F(AtomicFileTest, SaveH5WritesAndReplaces) {
  const std::string path = file("ckpt.h5");
  atomic_save_h5(path, [](H5File& f) {
    f.write_floats("model/w", {2}, std::vector<float>{1.5f, -2.0f});
    f.set_attr("/", "version", 1);
  });
  atomic_save_h5(path, [](H5File& f) {
    f.write_floats("model/w", {3}, std::vector<float>{4.0f, 5.0f, 6.0f});
    f.set_attr("/", "version", 2);
  });
  H5File f = H5File::open_read(path);
  EXPECT_EQ(f.get_attr_int("/", "version"), 2);
  EXPECT_EQ(f.read_floats("model/w"), (std::vector<float>{4.0f, 5.0f, 6.0f}));
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.h5"});
}

TEST_F(AtomicFileTest, FailedSaveH5KeepsOldCheckpointByteForByte) {
  const std::string path = file("ckpt.h5");
  atomic_save_h5(path, [](H5File& f) { f.write_ints("q/w", {3}, std::vector<int8_t>{-128, 0, 127}); });
  const std::string before = read_all(path);
  ASSERT_FALSE(before.empty());

  // The fill fails halfway (an HDF5 error: the same dataset twice). The error names the target, not
  // the temporary file.
  try {
    atomic_save_h5(path, [](H5File& f) {
      f.write_ints("q/w", {3}, std::vector<int8_t>{1, 2, 3});
      f.write_ints("q/w", {3}, std::vector<int8_t>{1, 2, 3});
    });
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": q/w: already exists");
  }
  // A failure of the caller's own code comes back as it was thrown.
  EXPECT_THROW(atomic_save_h5(path, [](H5File& f) {
                 f.write_floats("x", {1}, std::vector<float>{1.0f});
                 throw WriterFailed();
               }),
               WriterFailed);

  EXPECT_EQ(read_all(path), before);
  EXPECT_EQ(entries(), std::vector<std::string>{"ckpt.h5"});
  EXPECT_EQ(H5File::open_read(path).read_ints<int8_t>("q/w"), (std::vector<int8_t>{-128, 0, 127}));
}

// A pid no process has: a child that has exited and been reaped.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

TEST_F(AtomicFileTest, StaleTemporariesOfDeadWritersAreRemoved) {
  const std::string path = file("checkpoint.h5");
  const pid_t dead = dead_pid();
  ASSERT_GT(dead, 0);
  // Left by a writer killed with -9: nothing but the next write of the same path can clean it up.
  const std::string stale = path + ".tmp-" + std::to_string(dead);
  // A live writer's temporary (our parent is alive), another target's, and names that are not ours.
  const std::string live = path + ".tmp-" + std::to_string(::getppid());
  const std::string other = file("model.int8.h5.tmp-" + std::to_string(dead));
  const std::string odd = path + ".tmp-notapid";
  for (const std::string& p : {stale, live, other, odd}) std::ofstream(p) << "partial";
  atomic_write_text(path, "complete\n");
  EXPECT_EQ(read_all(path), "complete\n");
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(fs::exists(odd));
}

}  // namespace
}  // namespace qatlab
