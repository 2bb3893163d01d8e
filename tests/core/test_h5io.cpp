// test_h5io.cpp: H5File round trips (every element type and shape, strings, scalar and array attributes),
// navigation, the one-line errors for missing, foreign, truncated and mistyped data, and the file
// settings (1.8 format, compact small objects, reproducible bytes).
#include "core/h5io.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace qatlab {
namespace {

namespace fs = std::filesystem;

// Each test gets its own empty directory, removed afterwards.
class H5IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("qatlab_h5io_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// Runs f, which must throw std::runtime_error with exactly `expected` as its message.
template <typename F>
void expect_error(F&& f, const std::string& expected) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected: " << expected;
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), expected);
  }
}

// Runs f, which must throw std::runtime_error whose message contains `part` and is one line.
template <typename F>
void expect_error_containing(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one containing: " << part;
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(part), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

std::vector<float> ramp(int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = 0.5f * static_cast<float>(i) - 3.25f;
  return v;
}

// "s0", "s1", ... (built by appending: GCC 12 warns falsely about "s" + std::to_string(i)).
std::string dataset_name(size_t i) {
  std::string name = "s";
  name += std::to_string(i);
  return name;
}

// --------------------------------------------------------------------------------------- round trips

TEST_F(H5IoTest, FloatsRoundTripEveryShape) {
  const std::vector<Shape> shapes = {{}, {0}, {7}, {2, 3}, {2, 0, 3}, {2, 3, 4, 5}};
  {
    H5File f = H5File::create(file("f.h5"));
    for (size_t i = 0; i < shapes.size(); ++i)
      f.write_floats(dataset_name(i), shapes[i], ramp(shape_numel(shapes[i])));
    f.close();
  }
  H5File f = H5File::open_read(file("f.h5"));
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::string name = dataset_name(i);
    SCOPED_TRACE(shape_str(shapes[i]));
    EXPECT_EQ(f.dataset_shape(name), shapes[i]);
    Shape shape = {99};
    EXPECT_EQ(f.read_floats(name, &shape), ramp(shape_numel(shapes[i])));
    EXPECT_EQ(shape, shapes[i]);
    const Tensor t = f.read_tensor(name);
    EXPECT_EQ(t.shape(), shapes[i]);
    EXPECT_EQ(t.to_vector(), ramp(shape_numel(shapes[i])));
  }
}

TEST_F(H5IoTest, TensorRoundTripIsBitExactWithDottedNames) {
  // Values that a decimal or double detour could change: -0, denormals, extremes, infinities, NaN.
  const std::vector<float> values = {-0.0f,
                                     std::numeric_limits<float>::denorm_min(),
                                     std::numeric_limits<float>::max(),
                                     std::numeric_limits<float>::lowest(),
                                     std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(),
                                     std::numeric_limits<float>::quiet_NaN(),
                                     1.0f / 3.0f};
  const Tensor w = Tensor::from_vector({2, 4}, values);
  {
    H5File f = H5File::create(file("t.h5"));
    f.write_tensor("model/params/features.0.weight", w);
    f.write_tensor("/model/params/features.0.bias", Tensor::scalar(2.5f));  // leading '/' is optional
  }  // the destructor closes too
  H5File f = H5File::open_read(file("t.h5"));
  const Tensor r = f.read_tensor("/model/params/features.0.weight");
  ASSERT_EQ(r.shape(), (Shape{2, 4}));
  EXPECT_EQ(std::memcmp(r.data(), values.data(), values.size() * sizeof(float)), 0);
  const Tensor b = f.read_tensor("model/params/features.0.bias");
  EXPECT_EQ(b.dim(), 0);
  EXPECT_EQ(b.item(), 2.5f);
  EXPECT_EQ(f.list("model/params"), (std::vector<std::string>{"features.0.bias", "features.0.weight"}));
}

TEST_F(H5IoTest, DoublesRoundTrip) {
  const std::vector<double> v = {1e-300, -2.0, 3.141592653589793, std::numeric_limits<double>::max(), 0.1, -0.0};
  {
    H5File f = H5File::create(file("d.h5"));
    f.write_doubles("opt/lr_history", {3, 2}, v);
    f.write_doubles("opt/step_size", {}, v.data() + 2);
    f.write_doubles("opt/none", {0, 4}, std::vector<double>{});
  }
  H5File f = H5File::open_read(file("d.h5"));
  Shape shape;
  const std::vector<double> r = f.read_doubles("opt/lr_history", &shape);
  EXPECT_EQ(shape, (Shape{3, 2}));
  ASSERT_EQ(r.size(), v.size());
  EXPECT_EQ(std::memcmp(r.data(), v.data(), v.size() * sizeof(double)), 0);
  EXPECT_EQ(f.read_doubles("opt/step_size", &shape), std::vector<double>{3.141592653589793});
  EXPECT_EQ(shape, Shape{});
  EXPECT_TRUE(f.read_doubles("opt/none", &shape).empty());
  EXPECT_EQ(shape, (Shape{0, 4}));
}

template <typename T>
class H5IntTest : public H5IoTest {};
using IntTypes = ::testing::Types<int8_t, uint8_t, int16_t, int32_t, int64_t>;
TYPED_TEST_SUITE(H5IntTest, IntTypes);

TYPED_TEST(H5IntTest, RoundTripKeepsExtremesAndType) {
  using T = TypeParam;
  using L = std::numeric_limits<T>;
  const std::vector<T> v = {L::min(), L::max(), T(0), T(1), T(L::max() / 3), T(L::min() / 2)};
  const std::string path = this->file("i.h5");
  {
    H5File f = H5File::create(path);
    f.write_ints<T>("q/weight.int", {2, 3}, v.data());
    f.write_ints("q/one", Shape{}, std::vector<T>{L::max()});
    f.write_ints("q/empty", Shape{3, 0}, std::vector<T>{});
  }
  H5File f = H5File::open_read(path);
  Shape shape;
  EXPECT_EQ(f.read_ints<T>("q/weight.int", &shape), v);
  EXPECT_EQ(shape, (Shape{2, 3}));
  EXPECT_EQ(f.read_ints<T>("q/one", &shape), std::vector<T>{L::max()});
  EXPECT_EQ(shape, Shape{});
  EXPECT_TRUE(f.read_ints<T>("q/empty", &shape).empty());
  EXPECT_EQ(shape, (Shape{3, 0}));
  // The stored type is the real integer type: reading it as a float fails and names it.
  const std::string stored = (std::is_signed_v<T> ? "int" : "uint") + std::to_string(8 * sizeof(T));
  expect_error([&] { f.read_tensor("q/weight.int"); }, path + ": q/weight.int: stored as " + stored + ", expected float32");
}

TEST_F(H5IoTest, TypeMismatchesNameBothTypes) {
  const std::string path = file("m.h5");
  {
    H5File f = H5File::create(path);
    f.write_floats("f32", {2}, ramp(2));
    f.write_doubles("f64", {2}, std::vector<double>{1, 2});
    f.write_ints("i32", {2}, std::vector<int32_t>{1, 2});
    f.write_ints("u8", {2}, std::vector<uint8_t>{1, 2});
    f.write_string("s", "text");
  }
  H5File f = H5File::open_read(path);
  expect_error([&] { f.read_ints<int8_t>("f32"); }, path + ": f32: stored as float32, expected int8");
  expect_error([&] { f.read_ints<int32_t>("f32"); }, path + ": f32: stored as float32, expected int32");
  expect_error([&] { f.read_ints<int64_t>("i32"); }, path + ": i32: stored as int32, expected int64");
  expect_error([&] { f.read_ints<int8_t>("u8"); }, path + ": u8: stored as uint8, expected int8");
  expect_error([&] { f.read_tensor("i32"); }, path + ": i32: stored as int32, expected float32");
  expect_error([&] { f.read_tensor("f64"); }, path + ": f64: stored as float64, expected float32");
  expect_error([&] { f.read_doubles("f32"); }, path + ": f32: stored as float32, expected float64");
  expect_error([&] { f.read_floats("s"); }, path + ": s: stored as string, expected float32");
  expect_error([&] { f.read_string("f32"); }, path + ": f32: stored as float32, expected a string");
}

TEST_F(H5IoTest, StringsRoundTrip) {
  const std::string unicode = "r\xC3\xA9sum\xC3\xA9 \xE2\x9C\x93 \xCE\xBC";  // "résumé ✓ μ" in UTF-8
  const std::string long_text(10000, 'x');
  {
    H5File f = H5File::create(file("s.h5"));
    f.write_string("meta/format", "qatlab-checkpoint");
    f.write_string("meta/empty", "");
    f.write_string("meta/unicode", unicode);
    f.write_string("meta/long", long_text);
    f.write_string("meta/json", "{\n  \"lr\": 0.1\n}\n");
  }
  H5File f = H5File::open_read(file("s.h5"));
  EXPECT_EQ(f.read_string("meta/format"), "qatlab-checkpoint");
  EXPECT_EQ(f.read_string("meta/empty"), "");
  EXPECT_EQ(f.read_string("meta/unicode"), unicode);
  EXPECT_EQ(f.read_string("meta/long"), long_text);
  EXPECT_EQ(f.read_string("meta/json"), "{\n  \"lr\": 0.1\n}\n");
  EXPECT_EQ(f.dataset_shape("meta/format"), Shape{});
}

TEST_F(H5IoTest, StringWithNulIsRejected) {
  const std::string path = file("n.h5");
  H5File f = H5File::create(path);
  expect_error([&] { f.write_string("s", std::string("a\0b", 3)); }, path + ": s: string value contains a NUL byte");
  EXPECT_FALSE(f.exists("s"));
}

TEST_F(H5IoTest, StringsAreStoredFixedLengthAndLongAttributesFit) {
  const std::string path = file("fixed.h5");
  const std::string long_value(100000, 'c');  // past the 64 KB an object header message holds
  {
    H5File f = H5File::create(path);
    f.write_string("config", "epochs = 3\n");
    f.set_attr("/", "format", "qatlab-checkpoint");
    f.set_attr("/", "command", long_value);
  }
  {
    const hid_t fid = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(fid, 0);
    const hid_t d = H5Dopen2(fid, "config", H5P_DEFAULT);
    const hid_t dt = H5Dget_type(d);
    EXPECT_EQ(H5Tis_variable_str(dt), 0);
    EXPECT_EQ(H5Tget_size(dt), 12u);  // the 11 bytes and their NUL
    const hid_t a = H5Aopen(fid, "format", H5P_DEFAULT);
    const hid_t at = H5Aget_type(a);
    EXPECT_EQ(H5Tis_variable_str(at), 0);
    H5Tclose(at);
    H5Aclose(a);
    H5Tclose(dt);
    H5Dclose(d);
    H5Fclose(fid);
  }
  H5File f = H5File::open_read(path);
  EXPECT_EQ(f.read_string("config"), "epochs = 3\n");
  EXPECT_EQ(f.get_attr_string("/", "command"), long_value);
}

TEST_F(H5IoTest, StringsLongerThanTheLimitAreRefusedOnWrite) {
  const std::string path = file("big.h5");
  H5File f = H5File::create(path);
  const std::string huge(size_t{1} << 20, 'x');
  expect_error_containing([&] { f.write_string("s", huge); }, path + ": s: string of 1048576 bytes, longer than");
  expect_error_containing([&] { f.set_attr("/", "a", huge); }, path + ": /: attribute 'a': string of 1048576 bytes");
  EXPECT_FALSE(f.exists("s"));
}

// Files qatlab wrote before strings were fixed-length (and h5py's str values) hold variable-length
// strings: HDF5 reads those from the global heap, which a hostile file turns into overflows and
// endless loops, so they are refused, with one line saying the file must be made again.
TEST_F(H5IoTest, VariableLengthStringsAreRefusedWithOneLine) {
  const std::string path = file("vlen.h5");
  {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    const hid_t sp = H5Screate(H5S_SCALAR);
    const char* value = "qatlab-checkpoint";
    const hid_t a = H5Acreate2(f, "format", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Awrite(a, t, &value), 0);
    const hid_t d = H5Dcreate2(f, "config", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value), 0);
    H5Dclose(d);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
  }
  H5File f = H5File::open_read(path);
  const std::string refusal =
      ": stored as a variable-length string, which this qatlab no longer reads: the file predates the current "
      "format (fixed-length strings) and must be made again with this qatlab";
  expect_error([&] { f.get_attr_string("/", "format"); }, path + ": /: attribute 'format'" + refusal);
  expect_error([&] { f.read_string("config"); }, path + ": config" + refusal);
}

// A string type may declare any size up to 4 GB: the size is checked before the reader allocates it.
TEST_F(H5IoTest, AbsurdStringSizesAreRefusedBeforeAllocating) {
  const std::string path = file("size.h5");
  {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, (size_t{1} << 20) + 1);
    const hid_t sp = H5Screate(H5S_SCALAR);
    const hid_t d = H5Dcreate2(f, "s", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);  // never written
    H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
  }
  H5File f = H5File::open_read(path);
  expect_error([&] { f.read_string("s"); },
               path + ": s: stored string type of 1048577 bytes, expected 1 to 1048576");
}

// Files written by other tools (h5py writes NumPy 'S' strings as fixed-length, NUL-padded, and
// Python ints as int64 but NumPy scalars in their own width) must read too.
TEST_F(H5IoTest, ReadsFixedLengthStringsAndNarrowNumericAttributes) {
  const std::string path = file("foreign.h5");
  {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 8);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    const hid_t sp = H5Screate(H5S_SCALAR);
    const hid_t d = H5Dcreate2(f, "name", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    const char buf[8] = {'l', 'e', 'n', 'e', 't', 0, 0, 0};
    ASSERT_GE(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    const hid_t a = H5Acreate2(d, "bits", H5T_STD_I32BE, sp, H5P_DEFAULT, H5P_DEFAULT);
    const int32_t bits = -8;
    ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT32, &bits), 0);
    const hsize_t one = 1;
    const hid_t sp1 = H5Screate_simple(1, &one, nullptr);
    const hid_t a2 = H5Acreate2(d, "scale", H5T_IEEE_F32LE, sp1, H5P_DEFAULT, H5P_DEFAULT);
    const float scale = 0.25f;
    ASSERT_GE(H5Awrite(a2, H5T_NATIVE_FLOAT, &scale), 0);
    H5Aclose(a2);
    H5Sclose(sp1);
    H5Aclose(a);
    H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    H5Fclose(f);
  }
  H5File f = H5File::open_read(path);
  EXPECT_EQ(f.read_string("name"), "lenet");
  EXPECT_EQ(f.get_attr_int("name", "bits"), -8);
  EXPECT_EQ(f.get_attr_double("name", "scale"), 0.25);
}

// ---------------------------------------------------------------------------------------- attributes

TEST_F(H5IoTest, AttributesOfEveryKindOnRootGroupsAndDatasets) {
  const std::string path = file("a.h5");
  {
    H5File f = H5File::create(path);
    f.write_floats("model/fc.weight", {2}, ramp(2));
    f.set_attr("/", "format", "qatlab-checkpoint");
    f.set_attr("/", "version", int64_t{3});
    f.set_attr("/", "empty", std::string());
    f.set_attr("model", "lr", 0.125);
    f.set_attr("model", "epochs", 12);           // int goes to the int64 overload
    f.set_attr("model", "big", uint32_t{4000000000u});
    f.set_attr("model", "neg", int64_t{-9007199254740993});
    f.set_attr("model/fc.weight", "scale", 1e-30);
    f.set_attr("model/fc.weight", "zero_point", -128);
    f.set_attr("model/fc.weight", "scheme", "per-tensor");
    f.set_attr("model", "lr", 0.5);  // replacing keeps one attribute with the new value
    f.set_attr("model", "epochs", "twelve");  // and may change its type
  }
  H5File f = H5File::open_read(path);
  EXPECT_EQ(f.get_attr_string("/", "format"), "qatlab-checkpoint");
  EXPECT_EQ(f.get_attr_int("/", "version"), 3);
  EXPECT_EQ(f.get_attr_string("/", "empty"), "");
  EXPECT_EQ(f.get_attr_double("model", "lr"), 0.5);
  EXPECT_EQ(f.get_attr_string("model", "epochs"), "twelve");
  EXPECT_EQ(f.get_attr_int("model", "big"), 4000000000);
  EXPECT_EQ(f.get_attr_int("model", "neg"), -9007199254740993);
  EXPECT_EQ(f.get_attr_double("model/fc.weight", "scale"), 1e-30);
  EXPECT_EQ(f.get_attr_int("model/fc.weight", "zero_point"), -128);
  EXPECT_EQ(f.get_attr_string("model/fc.weight", "scheme"), "per-tensor");
  EXPECT_TRUE(f.has_attr("/", "version"));
  EXPECT_TRUE(f.has_attr("model/fc.weight", "scale"));
  EXPECT_FALSE(f.has_attr("model/fc.weight", "bias"));
  EXPECT_FALSE(f.has_attr("/", ""));
  // Attributes do not show up as children.
  EXPECT_EQ(f.list("/"), std::vector<std::string>{"model"});

  expect_error([&] { f.get_attr_int("model", "lr"); }, path + ": model: attribute 'lr': stored as float64, expected an integer");
  expect_error([&] { f.get_attr_double("/", "version"); }, path + ": /: attribute 'version': stored as int64, expected a float");
  expect_error([&] { f.get_attr_string("/", "version"); }, path + ": /: attribute 'version': stored as int64, expected a string");
  expect_error([&] { f.get_attr_int("/", "format"); }, path + ": /: attribute 'format': stored as string, expected an integer");
  expect_error([&] { f.get_attr_int("model", "missing"); }, path + ": model: attribute 'missing': not found");
  expect_error([&] { f.get_attr_int("nope/x", "a"); }, path + ": nope/x: not found");
  expect_error([&] { f.has_attr("nope", "a"); }, path + ": nope: not found");
}

TEST_F(H5IoTest, SetAttrNeedsAnExistingObject) {
  const std::string path = file("a.h5");
  H5File f = H5File::create(path);
  expect_error([&] { f.set_attr("model", "x", 1.0); }, path + ": model: not found");
  expect_error([&] { f.set_attr("/", "", 1.0); }, path + ": /: empty attribute name");
}

// ---------------------------------------------------------------------------------------- navigation

TEST_F(H5IoTest, ExistsIsGroupAndSortedList) {
  const std::string path = file("n.h5");
  H5File f = H5File::create(path);
  // Written out of order; list() returns names sorted.
  f.write_ints("model/params/layer2.bias", {1}, std::vector<int32_t>{5});
  f.write_ints("model/params/layer10.bias", {1}, std::vector<int32_t>{5});
  f.write_floats("model/params/a.weight", {1}, ramp(1));
  f.write_string("model/name", "mlp");
  f.write_floats("optimizer/state/0/momentum", {1}, ramp(1));

  EXPECT_TRUE(f.exists("/"));
  EXPECT_TRUE(f.exists(""));
  EXPECT_TRUE(f.exists("model"));
  EXPECT_TRUE(f.exists("/model/params"));
  EXPECT_TRUE(f.exists("model/params/layer2.bias"));
  EXPECT_TRUE(f.exists("optimizer/state/0/momentum"));
  EXPECT_FALSE(f.exists("model/params/layer2"));
  EXPECT_FALSE(f.exists("missing/intermediate/groups/x"));
  EXPECT_FALSE(f.exists("model/name/below_a_dataset"));

  EXPECT_TRUE(f.is_group("/"));
  EXPECT_TRUE(f.is_group("optimizer/state/0"));
  EXPECT_FALSE(f.is_group("model/name"));
  EXPECT_FALSE(f.is_group("missing/x"));

  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"model", "optimizer"}));
  EXPECT_EQ(f.list("model"), (std::vector<std::string>{"name", "params"}));
  EXPECT_EQ(f.list("model/params"), (std::vector<std::string>{"a.weight", "layer10.bias", "layer2.bias"}));
  EXPECT_EQ(f.list("optimizer/state"), std::vector<std::string>{"0"});

  expect_error([&] { f.list("model/name"); }, path + ": model/name: is a dataset, not a group");
  expect_error([&] { f.list("model/missing"); }, path + ": model/missing: not found");
}

TEST_F(H5IoTest, EmptyGroupListsNothing) {
  H5File f = H5File::create(file("e.h5"));
  EXPECT_TRUE(f.list("/").empty());
}

// ------------------------------------------------------------------------------------ write errors

TEST_F(H5IoTest, WriteErrors) {
  const std::string path = file("w.h5");
  H5File f = H5File::create(path);
  f.write_floats("model/w", {2}, ramp(2));
  expect_error([&] { f.write_floats("model/w", {2}, ramp(2)); }, path + ": model/w: already exists");
  expect_error([&] { f.write_floats("model", {2}, ramp(2)); }, path + ": model: already exists");
  expect_error([&] { f.write_floats("model/w/x", {2}, ramp(2)); }, path + ": model/w/x: 'model/w' is a dataset, not a group");
  expect_error([&] { f.write_floats("model/v", {2, 3}, ramp(5)); }, path + ": model/v: 5 values for shape (2, 3)");
  expect_error([&] { f.write_doubles("model/v", {4}, std::vector<double>(3)); }, path + ": model/v: 3 values for shape (4)");
  expect_error([&] { f.write_ints("model/v", {2}, std::vector<int8_t>(3)); }, path + ": model/v: 3 values for shape (2)");
  expect_error([&] { f.write_floats("model/v", {2, -1}, ramp(2).data()); }, path + ": model/v: negative dimension in shape (2, -1)");
  expect_error([&] { f.write_floats("model//v", {2}, ramp(2)); }, path + ": model//v: bad object path (empty or '.' component)");
  expect_error([&] { f.write_floats("model/v/", {2}, ramp(2)); }, path + ": model/v/: bad object path (empty or '.' component)");
  expect_error([&] { f.write_floats("/", {2}, ramp(2)); }, path + ": /: the root group cannot be written as a dataset");
  expect_error([&] { f.write_tensor("model/t", Tensor()); }, path + ": model/t: cannot write an undefined tensor");
  // None of the failed writes left anything behind.
  EXPECT_EQ(f.list("model"), std::vector<std::string>{"w"});
}

TEST_F(H5IoTest, ReadOnlyFileRejectsWrites) {
  const std::string path = file("r.h5");
  H5File::create(path).write_floats("x", {1}, ramp(1));  // the temporary closes the file
  H5File f = H5File::open_read(path);
  expect_error([&] { f.write_floats("y", {1}, ramp(1)); }, path + ": y: file is open read-only");
  expect_error([&] { f.set_attr("x", "a", 1.0); }, path + ": x: file is open read-only");
  EXPECT_EQ(f.read_floats("x"), ramp(1));
}

// ------------------------------------------------------------------------------------- read errors

TEST_F(H5IoTest, ReadingMissingOrWrongObjects) {
  const std::string path = file("r.h5");
  {
    H5File f = H5File::create(path);
    f.write_floats("model/w", {2}, ramp(2));
  }
  H5File f = H5File::open_read(path);
  expect_error([&] { f.read_tensor("model/nope"); }, path + ": model/nope: not found");
  expect_error([&] { f.read_tensor("missing/group/w"); }, path + ": missing/group/w: not found");
  expect_error([&] { f.read_ints<int8_t>("model/w/below"); }, path + ": model/w/below: not found");
  expect_error([&] { f.dataset_shape("nope"); }, path + ": nope: not found");
  expect_error([&] { f.read_string("nope"); }, path + ": nope: not found");
  expect_error([&] { f.read_tensor("model"); }, path + ": model: is a group, not a dataset");
  expect_error([&] { f.dataset_shape("/"); }, path + ": /: is a group, not a dataset");
}

TEST_F(H5IoTest, MissingFile) {
  const std::string path = file("does_not_exist.h5");
  expect_error([&] { H5File::open_read(path); }, path + ": no such file");
  EXPECT_FALSE(fs::exists(path));
}

TEST_F(H5IoTest, CreateInMissingDirectory) {
  const std::string path = file("no/such/dir/x.h5");
  expect_error([&] { H5File::create(path); }, path + ": cannot create: directory '" + file("no/such/dir") + "' does not exist");
}

TEST_F(H5IoTest, NotAnHdf5File) {
  const std::string text = file("notes.txt");
  std::ofstream(text) << "epoch 1: loss 0.5\n";
  expect_error([&] { H5File::open_read(text); }, text + ": not an HDF5 file (or truncated)");
  const std::string empty = file("empty.h5");
  std::ofstream{empty};
  expect_error([&] { H5File::open_read(empty); }, empty + ": not an HDF5 file (or truncated)");
  expect_error([&] { H5File::open_read(dir_.string()); }, dir_.string() + ": is a directory, not a file");
}

TEST_F(H5IoTest, TruncatedHdf5File) {
  const std::string path = file("cut.h5");
  {
    H5File f = H5File::create(path);
    f.write_floats("model/big", {64, 64}, ramp(64 * 64));
  }
  const auto size = fs::file_size(path);
  ASSERT_GT(size, 64u * 64u * 4u);
  ASSERT_NO_THROW(H5File::open_read(path));
  // Cut in half (the header survives, the data does not) and cut inside the header: the header's
  // byte count catches both before HDF5 reads anything.
  fs::resize_file(path, size / 2);
  expect_error([&] { H5File::open_read(path); },
               path + ": damaged: its header records " + std::to_string(size - 512) + " bytes of content, the file has " +
                   std::to_string(size / 2 - 512) + " (cut short)");
  fs::resize_file(path, 20);
  expect_error([&] { H5File::open_read(path); }, path + ": truncated: 20 bytes, shorter than its 512-byte header");
}

// ------------------------------------------------------------------------------------------ lifetime

TEST_F(H5IoTest, MoveAndClose) {
  const std::string path = file("m.h5");
  H5File a = H5File::create(path);
  a.write_floats("x", {3}, ramp(3));
  H5File b = std::move(a);
  EXPECT_FALSE(a.is_open());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_TRUE(b.is_open());
  EXPECT_EQ(b.path(), path);
  b.write_floats("y", {1}, ramp(1));
  expect_error([&] { a.read_floats("x"); }, "H5File: x: file is not open");

  H5File c;
  EXPECT_FALSE(c.is_open());
  c = std::move(b);
  c.close();
  c.close();  // closing twice is harmless
  EXPECT_FALSE(c.is_open());
  expect_error([&] { c.exists("x"); }, path + ": x: file is not open");

  H5File r = H5File::open_read(path);
  EXPECT_EQ(r.read_floats("x"), ramp(3));
  EXPECT_EQ(r.read_floats("y"), ramp(1));
  r = H5File::open_read(path);  // move-assigning over an open file closes the old one
  EXPECT_EQ(r.list("/"), (std::vector<std::string>{"x", "y"}));
}

TEST_F(H5IoTest, CreateTruncatesAnExistingFile) {
  const std::string path = file("t.h5");
  {
    H5File f = H5File::create(path);
    f.write_floats("old", {1}, ramp(1));
  }
  {
    H5File f = H5File::create(path);
    f.write_floats("new", {1}, ramp(1));
  }
  EXPECT_EQ(H5File::open_read(path).list("/"), std::vector<std::string>{"new"});
}

// ------------------------------------------------------------------------ array and fixed attributes

TEST_F(H5IoTest, ArrayAndScalarNumericAttributesRoundTrip) {
  const std::string path = file("arrays.h5");
  {
    H5File f = H5File::create(path);
    f.create_group("op");
    f.set_attr_floats("op", "scale", {3}, {0.5f, -1e-30f, 3.25f});
    f.set_attr_floats("op", "one", {}, {0.125f});  // a scalar
    f.set_attr_ints<int8_t>("op", "i8", {2}, {-128, 127});
    f.set_attr_ints<uint8_t>("op", "u8", {2}, {0, 255});
    f.set_attr_ints<int16_t>("op", "i16", {1}, {-32768});
    f.set_attr_ints<int32_t>("op", "i32", {2, 2}, {INT32_MIN, -1, 0, INT32_MAX});
    f.set_attr_ints<int64_t>("op", "i64", {1}, {INT64_MIN});
    f.set_attr_ints<int32_t>("op", "empty", {0}, {});
    f.set_attr_ints<int32_t>("op", "scalar", {}, {-7});
    f.set_attr_ints<int32_t>("op", "scalar", {}, {8});  // replacing keeps one attribute
    f.close();
  }
  const H5File f = H5File::open_read(path);
  EXPECT_EQ(f.get_attr_floats("op", "scale"), (std::vector<float>{0.5f, -1e-30f, 3.25f}));
  EXPECT_EQ(f.get_attr_floats("op", "one"), (std::vector<float>{0.125f}));
  EXPECT_EQ(f.get_attr_ints<int8_t>("op", "i8"), (std::vector<int8_t>{-128, 127}));
  EXPECT_EQ(f.get_attr_ints<uint8_t>("op", "u8"), (std::vector<uint8_t>{0, 255}));
  EXPECT_EQ(f.get_attr_ints<int16_t>("op", "i16"), (std::vector<int16_t>{-32768}));
  EXPECT_EQ(f.get_attr_ints<int32_t>("op", "i32"), (std::vector<int32_t>{INT32_MIN, -1, 0, INT32_MAX}));
  EXPECT_EQ(f.get_attr_ints<int64_t>("op", "i64"), (std::vector<int64_t>{INT64_MIN}));
  EXPECT_TRUE(f.get_attr_ints<int32_t>("op", "empty").empty());
  EXPECT_EQ(f.get_attr_ints<int32_t>("op", "scalar"), (std::vector<int32_t>{8}));
  EXPECT_EQ(f.get_attr_int("op", "scalar"), 8);  // a scalar int32 reads as any integer
  EXPECT_EQ(f.get_attr_double("op", "one"), 0.125);
  EXPECT_TRUE(f.is_group("op"));
  EXPECT_TRUE(f.list("op").empty());

  // Mistyped reads name both types; arrays of several values are no scalars.
  expect_error([&] { f.get_attr_ints<int64_t>("op", "i32"); },
               path + ": op: attribute 'i32': stored as int32, expected int64");
  expect_error([&] { f.get_attr_floats("op", "i8"); }, path + ": op: attribute 'i8': stored as int8, expected float32");
  expect_error([&] { f.get_attr_ints<uint8_t>("op", "i8"); },
               path + ": op: attribute 'i8': stored as int8, expected uint8");
  expect_error([&] { f.get_attr_int("op", "i8"); }, path + ": op: attribute 'i8': holds shape (2), expected one value");
  expect_error([&] { f.get_attr_ints<int32_t>("op", "missing"); }, path + ": op: attribute 'missing': not found");
}

TEST_F(H5IoTest, ArrayAttributeErrors) {
  const std::string path = file("bad_arrays.h5");
  H5File f = H5File::create(path);
  f.create_group("g");
  expect_error([&] { f.set_attr_floats("g", "s", {3}, {1.0f}); }, path + ": g: attribute 's': 1 values for shape (3)");
  expect_error([&] { f.set_attr_ints<int32_t>("g", "z", {}, {}); }, path + ": g: attribute 'z': 0 values for shape ()");
  expect_error([&] { f.set_attr_ints<int32_t>("nope", "z", {1}, {1}); }, path + ": nope: not found");
  expect_error([&] { f.create_group("g"); }, path + ": g: already exists");
  f.write_floats("d", {1}, ramp(1));
  expect_error([&] { f.create_group("d/sub"); }, path + ": d/sub: 'd' is a dataset, not a group");
  EXPECT_FALSE(f.has_attr("g", "s"));
}

TEST_F(H5IoTest, FixedLengthStringAttributes) {
  const std::string path = file("fixed.h5");
  {
    H5File f = H5File::create(path);
    f.set_attr_fixed("/", "format", "qatlab-int8-graph");
    f.set_attr_fixed("/", "empty", "");
    f.set_attr_fixed("/", "utf8", "\xc2\xb5-law");
    expect_error([&] { f.set_attr_fixed("/", "nul", std::string("a\0b", 3)); },
                 path + ": /: attribute 'nul': string value contains a NUL byte");
    f.close();
  }
  {
    const H5File f = H5File::open_read(path);
    EXPECT_EQ(f.get_attr_string("/", "format"), "qatlab-int8-graph");
    EXPECT_EQ(f.get_attr_string("/", "empty"), "");
    EXPECT_EQ(f.get_attr_string("/", "utf8"), "\xc2\xb5-law");
  }

  // Stored as a fixed-length NUL-terminated UTF-8 string, not in the global heap.
  const hid_t file_id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(file_id, 0);
  const hid_t a = H5Aopen_by_name(file_id, "/", "format", H5P_DEFAULT, H5P_DEFAULT);
  const hid_t t = H5Aget_type(a);
  EXPECT_EQ(H5Tis_variable_str(t), 0);
  EXPECT_EQ(H5Tget_size(t), std::string("qatlab-int8-graph").size() + 1);
  EXPECT_EQ(H5Tget_cset(t), H5T_CSET_UTF8);
  H5Tclose(t);
  H5Aclose(a);
  H5Fclose(file_id);
}

// -------------------------------------------------------------------------------------- file layout

// What create() promises older readers and what keeps small objects small: the 1.8 file format
// (superblock version 2; 1.10 would write 3), compact layout up to 4 KB and contiguous above, no
// object times (so equal content gives equal bytes), and many small objects without dense storage.
TEST_F(H5IoTest, FilesUseThe18FormatAndCompactSmallObjects) {
  const auto write = [&](const std::string& path) {
    H5File f = H5File::create(path);
    f.set_attr("/", "format", "test");
    for (int i = 0; i < 40; ++i) {
      const std::string g = "ops/" + dataset_name(static_cast<size_t>(i));
      f.write_ints<int32_t>(g + "/bias", {4}, std::vector<int32_t>{1, 2, 3, i});
      for (int k = 0; k < 20; ++k) f.set_attr(g, "attr_" + std::to_string(k), int64_t{k});
    }
    f.write_floats("small", {1024}, ramp(1024));  // 4096 bytes: compact
    f.write_floats("large", {1025}, ramp(1025));  // 4100 bytes: contiguous
    f.close();
  };
  const std::string a = file("a.h5"), b = file("b.h5");
  write(a);
  write(b);

  const hid_t fid = H5Fopen(a.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(fid, 0);
  H5F_info2_t info;
  ASSERT_GE(H5Fget_info2(fid, &info), 0);
  EXPECT_EQ(info.super.version, 2u);
  const auto layout = [&](const char* name) {
    const hid_t d = H5Dopen2(fid, name, H5P_DEFAULT);
    const hid_t dcpl = H5Dget_create_plist(d);
    const H5D_layout_t l = H5Pget_layout(dcpl);
    H5Pclose(dcpl);
    H5Dclose(d);
    return l;
  };
  EXPECT_EQ(layout("small"), H5D_COMPACT);
  EXPECT_EQ(layout("large"), H5D_CONTIGUOUS);
  EXPECT_EQ(layout("ops/s7/bias"), H5D_COMPACT);
  H5Fclose(fid);

  // 40 groups of one 16-byte dataset and 20 int64 attributes, plus 8 KB of floats: with HDF5's
  // defaults (dense link and attribute storage past 8, 256-byte dataset headers, timestamps) this
  // took 110 KB; the settings bring it to ~59 KB, near the ~48 bytes each attribute needs.
  const auto size = fs::file_size(a);
  EXPECT_LT(size, 64000u) << size;
  // Byte-identical when written twice.
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  const std::string ca((std::istreambuf_iterator<char>(fa)), std::istreambuf_iterator<char>());
  const std::string cb((std::istreambuf_iterator<char>(fb)), std::istreambuf_iterator<char>());
  EXPECT_EQ(ca.size(), size);
  EXPECT_TRUE(ca == cb);

  const H5File f = H5File::open_read(a);
  EXPECT_EQ(f.read_ints<int32_t>("ops/s39/bias"), (std::vector<int32_t>{1, 2, 3, 39}));
  EXPECT_EQ(f.get_attr_int("ops/s39", "attr_19"), 19);
  EXPECT_EQ(f.list("ops").size(), 40u);
  EXPECT_EQ(f.read_floats("large"), ramp(1025));
  EXPECT_EQ(f.read_floats("small"), ramp(1024));
}

}  // namespace
}  // namespace qatlab
