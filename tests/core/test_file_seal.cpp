// test_file_seal.cpp: the tag + SHA-256 header of our HDF5 files: written by H5File::close, checked by
// H5File::open_read before HDF5 parses anything; damaged files refused with one line, old files still read.
#include "core/file_seal.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/h5io.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

class FileSealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("qatlab_seal_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // A small file with a string, some floats and an attribute.
  std::string write_sample(const std::string& name) const {
    const std::string path = file(name);
    H5File f = H5File::create(path);
    f.write_string("meta/config", "model = lenet5\nepochs = 3\n");
    f.write_floats("model/w", {4, 8}, std::vector<float>(32, 0.25f));
    f.set_attr("/", "classes", int64_t{10});
    f.close();
    return path;
  }

  fs::path dir_;
};

std::string bytes_of(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(FileSealTest, HeaderHoldsTagChecksumAndSize) {
  const std::string path = write_sample("a.h5");
  const std::string all = bytes_of(path);
  ASSERT_GT(all.size(), 512u);
  EXPECT_EQ(all.substr(0, 12), "qatlab-h5 1\n");
  EXPECT_NE(all.find("\nbytes " + std::to_string(all.size() - 512) + "\n"), std::string::npos);
  // HDF5's own signature follows the header.
  EXPECT_EQ(all.substr(512, 4), "\x89HDF");
  EXPECT_EQ(verify_sealed_file(path), SealState::kVerified);
  const H5File f = H5File::open_read(path);
  EXPECT_EQ(f.read_string("meta/config"), "model = lenet5\nepochs = 3\n");
  EXPECT_EQ(f.get_attr_int("/", "classes"), 10);
}

TEST_F(FileSealTest, EveryFlippedBitAfterTheHeaderIsRefusedBeforeParsing) {
  const std::string path = write_sample("a.h5");
  const std::string good = bytes_of(path);
  // The global heap holds the string: flipping bits in it crashed or hung the HDF5 library.
  const size_t heap = good.find("model = lenet5");
  ASSERT_NE(heap, std::string::npos);
  // A sample of positions over the whole content, the heap and HDF5's superblock among them.
  std::vector<size_t> positions = {512, 513, 520, 560, heap, heap + 3, good.size() - 1};
  for (size_t p = 600; p < good.size(); p += 397) positions.push_back(p);
  for (const size_t pos : positions) {
    SCOPED_TRACE(pos);
    std::string bad = good;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x10);
    put_bytes(path, bad);
    EXPECT_EQ(error_of([&] { H5File::open_read(path); }),
              path + ": damaged: its content does not match the SHA-256 recorded in its header (changed after it was "
                     "written)");
  }
}

TEST_F(FileSealTest, DamagedHeaderIsRefused) {
  const std::string path = write_sample("a.h5");
  const std::string good = bytes_of(path);
  std::string bad = good;
  bad[0] = 'Q';  // the tag itself
  put_bytes(path, bad);
  EXPECT_EQ(error_of([&] { H5File::open_read(path); }),
            path + ": damaged header: the 'qatlab-h5' tag at its start is missing or changed");
  bad = good;
  bad[10] = '7';  // a newer version
  put_bytes(path, bad);
  EXPECT_EQ(error_of([&] { H5File::open_read(path); }),
            path + ": written in qatlab-h5 format version 7, this qatlab reads version 1: use a newer qatlab");
  bad = good;
  bad[10] = '\x01';  // a control byte: not echoed
  put_bytes(path, bad);
  EXPECT_EQ(error_of([&] { H5File::open_read(path); }), path + ": damaged header: bad format line (expected 'qatlab-h5 1')");
  bad = good;
  bad[20] = 'z';  // inside the checksum
  put_bytes(path, bad);
  EXPECT_EQ(error_of([&] { H5File::open_read(path); }), path + ": damaged header: no valid 'sha256' line");
  bad = good + "x";
  put_bytes(path, bad);
  EXPECT_NE(error_of([&] { H5File::open_read(path); }).find("(something was appended)"), std::string::npos);
}

TEST_F(FileSealTest, FilesWithoutTheHeaderStillLoadUnverified) {
  // Written the way qatlab wrote files before the header: plain HDF5 from byte 0.
  const std::string path = file("old.h5");
  const hid_t fid = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(fid, 0);
  const hsize_t dims[1] = {3};
  const hid_t sp = H5Screate_simple(1, dims, nullptr);
  const hid_t ds = H5Dcreate2(fid, "x", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const float v[3] = {1, 2, 3};
  ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
  H5Dclose(ds);
  H5Sclose(sp);
  H5Fclose(fid);
  EXPECT_EQ(verify_sealed_file(path), SealState::kUnsealed);
  const H5File f = H5File::open_read(path);
  EXPECT_EQ(f.read_floats("x"), (std::vector<float>{1, 2, 3}));
}

TEST_F(FileSealTest, AFileClosedByItsDestructorIsSealedToo) {
  const std::string path = file("d.h5");
  {
    H5File f = H5File::create(path);
    f.write_floats("x", {2}, std::vector<float>{1, 2});
  }
  EXPECT_EQ(verify_sealed_file(path), SealState::kVerified);
}

}  // namespace
}  // namespace qatlab
