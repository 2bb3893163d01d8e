// format.h: numbers in messages, written the way a person would write them ("0.05", "1e-09", "3"), and
// text made safe for the JSON files the commands write.
#pragma once

#include <cstdio>
#include <string>

namespace qatlab {

inline std::string num_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// s as the inside of a JSON string: quotes and backslashes escaped, control characters as \uXXXX.
inline std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace qatlab
