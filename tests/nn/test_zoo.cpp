// test_zoo.cpp: the zoo refuses model sizes that a damaged file or a typing mistake would ask for,
// before allocating anything, with a message naming the field and its range.
#include "nn/zoo.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace qatlab {
namespace {

std::string error_of(const ModelSpec& spec) {
  Rng rng(1);
  try {
    make_model("mlp", spec, rng);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(built)";
}

TEST(Zoo, BuildsTheDatasetsShapes) {
  EXPECT_EQ(error_of(ModelSpec{1, 28, 28, 10}), "(built)");
  EXPECT_EQ(error_of(ModelSpec{3, 32, 32, 10}), "(built)");
  EXPECT_NO_THROW(validate_model_spec(ModelSpec{kMaxModelChannels, kMaxModelImageSide, kMaxModelImageSide, 2}));
}

TEST(Zoo, RefusesSpecsOutOfRangeBeforeBuilding) {
  // A class count of 2^62 segfaulted, a height of INT64_MAX overflowed the first layer's size.
  EXPECT_EQ(error_of(ModelSpec{1, 28, 28, int64_t{1} << 62}), "num_classes = 4611686018427387904, expected 2..1000");
  EXPECT_EQ(error_of(ModelSpec{1, 65535, 28, 10}), "height = 65535, expected 1..256");
  EXPECT_EQ(error_of(ModelSpec{1, INT64_MAX, 28, 10}), "height = 9223372036854775807, expected 1..256");
  EXPECT_EQ(error_of(ModelSpec{1, 28, 0, 10}), "width = 0, expected 1..256");
  EXPECT_EQ(error_of(ModelSpec{-1, 28, 28, 10}), "channels = -1, expected 1..4");
  EXPECT_EQ(error_of(ModelSpec{1, 28, 28, 1}), "num_classes = 1, expected 2..1000");
  // An unknown name from a file is echoed with its control bytes escaped.
  Rng rng(1);
  try {
    make_model("mlp\x1b[2J", ModelSpec{}, rng);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()).find('\x1b'), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mlp\\x1b[2J"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qatlab
