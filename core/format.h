// format.h: numbers in messages, written the way a person would write them ("0.05", "1e-09", "3"),
// durations, text made safe for the JSON files the commands write and for one-line messages, and the
// small text records files keep (lists of names, "key = value" lines).
#pragma once

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace qatlab {

inline std::string num_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// v with `digits` digits after the point ("90.05"), as tables of results show it.
inline std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// "mm:ss" or "h:mm:ss", to the nearest second.
inline std::string format_duration(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
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

// Text read from a file, made safe to echo in a one-line message: control bytes (newlines, escape
// sequences) and bytes outside ASCII become \xNN, and it is cut to max_chars (then ends in "...").
inline std::string printable(const std::string& s, size_t max_chars = 120) {
  std::string out;
  for (const char c : s) {
    if (out.size() >= max_chars) return out + "...";
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(b));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// Lists of names stored as one string in a file (class names: one per line).
inline std::string join_lines(const std::vector<std::string>& items) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? "\n" : "") + items[i];
  return s;
}
// The reverse: "a\nb" -> {"a", "b"}; "" -> {""}.
inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t end = text.find('\n', start);
    out.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

// The value of `key` in text of "key = value" lines, as settings and result files hold them (the first
// such line; "" if there is none).
inline std::string ini_value(const std::string& ini, const std::string& key) {
  std::istringstream in(ini);
  std::string line;
  const std::string prefix = key + " = ";
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
  return "";
}

}  // namespace qatlab
