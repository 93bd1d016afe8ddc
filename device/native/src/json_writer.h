// A tiny JSON writer (objects, arrays, numbers, strings, null) for result files.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace dlm {

class JsonWriter {
 public:
  JsonWriter& begin_object() { sep(); out_ += '{'; first_ = true; return *this; }
  JsonWriter& end_object() { out_ += '}'; first_ = false; return *this; }
  JsonWriter& begin_array() { sep(); out_ += '['; first_ = true; return *this; }
  JsonWriter& end_array() { out_ += ']'; first_ = false; return *this; }
  JsonWriter& key(const char* k) { sep(); str(k); out_ += ':'; first_ = true; return *this; }
  JsonWriter& value(const std::string& s) { sep(); str(s); return *this; }
  JsonWriter& value(const char* s) { return value(std::string(s)); }
  JsonWriter& value(bool b) { sep(); out_ += b ? "true" : "false"; return *this; }
  JsonWriter& value(long long v) { sep(); out_ += std::to_string(v); return *this; }
  JsonWriter& value(unsigned long long v) { sep(); out_ += std::to_string(v); return *this; }
  JsonWriter& value(int v) { return value(static_cast<long long>(v)); }
  JsonWriter& value(long v) { return value(static_cast<long long>(v)); }
  JsonWriter& value(unsigned long v) { return value(static_cast<unsigned long long>(v)); }
  JsonWriter& value(double v) {
    sep();
    if (!std::isfinite(v)) { out_ += "null"; return *this; }
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    out_ += buf;
    return *this;
  }
  JsonWriter& null() { sep(); out_ += "null"; return *this; }
  JsonWriter& raw(const std::string& json) { sep(); out_ += json; return *this; }
  template <typename T>
  JsonWriter& array(const std::vector<T>& xs) {
    begin_array();
    for (const auto& x : xs) value(x);
    return end_array();
  }
  const std::string& str() const { return out_; }

 private:
  void sep() {
    if (!first_) out_ += ',';
    first_ = false;
  }
  void str(const std::string& s) {
    out_ += '"';
    for (unsigned char c : s) {
      if (c == '"' || c == '\\') { out_ += '\\'; out_ += static_cast<char>(c); }
      else if (c == '\n') out_ += "\\n";
      else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out_ += b; }
      else out_ += static_cast<char>(c);
    }
    out_ += '"';
  }
  std::string out_;
  bool first_ = true;
};

}  // namespace dlm
