// format.h: numbers in messages, written the way a person would write them ("0.05", "1e-09", "3").
#pragma once

#include <cstdio>
#include <string>

namespace qatlab {

inline std::string num_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace qatlab
