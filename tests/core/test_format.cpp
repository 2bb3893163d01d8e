// test_format.cpp: numbers and text in messages: printable() makes text read from a file safe to echo.
#include "core/format.h"

#include <gtest/gtest.h>

#include <string>

namespace qatlab {
namespace {

TEST(Printable, EscapesControlAndNonAsciiBytesAndKeepsTheRest) {
  EXPECT_EQ(printable("body.features.0"), "body.features.0");
  // A terminal escape sequence and a newline would forge output or a second error line.
  EXPECT_EQ(printable("mlp\x1b[2J\nx"), "mlp\\x1b[2J\\x0ax");
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(printable("\x7f\xc3\xa9"), "\\x7f\\xc3\\xa9");
}

TEST(Printable, CutsLongTextAtTheLimit) {
  EXPECT_EQ(printable(std::string(10, 'a'), 4), "aaaa...");
  EXPECT_EQ(printable(std::string(4, 'a'), 4), "aaaa");
  EXPECT_EQ(printable(std::string(300, 'z')).size(), 123u);  // 120 characters and "..."
}

}  // namespace
}  // namespace qatlab
