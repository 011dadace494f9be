// Output helpers: aligned text tables and minimal JSON formatting.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

namespace splat::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Columns right-aligned except the first (names).
  void print(FILE* to) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

std::string fmt(const char* format, double v);  // snprintf of one number
std::string json_string(const std::string& s);  // quoted and escaped
std::string json_number(double v);              // null for NaN/Inf (JSON has neither)

}  // namespace splat::cli
