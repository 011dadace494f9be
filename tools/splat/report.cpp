#include "report.hpp"

#include <algorithm>
#include <cmath>

namespace splat::cli {

void Table::print(FILE* to) const {
  std::vector<size_t> width(header_.size(), 0);
  for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
  for (const auto& r : rows_)
    for (size_t c = 0; c < r.size() && c < width.size(); ++c) width[c] = std::max(width[c], r[c].size());
  const auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string& cell = c < r.size() ? r[c] : std::string();
      const std::string pad(width[c] - std::min(width[c], cell.size()), ' ');
      s += (c ? "  " : "") + (c == 0 ? cell + pad : pad + cell);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    std::fprintf(to, "%s\n", s.c_str());
  };
  line(header_);
  size_t total = 0;
  for (size_t w : width) total += w + 2;
  std::fprintf(to, "%s\n", std::string(total > 2 ? total - 2 : 0, '-').c_str());
  for (const auto& r : rows_) line(r);
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      out += '\\', out += char(c);
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
      out += buf;
    } else
      out += char(c);
  }
  return out + "\"";
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  return fmt("%.10g", v);
}

}  // namespace splat::cli
