// .npy reading and writing. The header is a Python dict literal; we parse the small subset NumPy writes
// ('descr', 'fortran_order', 'shape') with a strict hand-written parser and refuse everything else.
#include "splat/npy.hpp"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

#include "splat/error.hpp"

namespace splat {

namespace {

constexpr size_t kMaxHeaderBytes = 1 << 20;  // NumPy headers are tiny; anything larger is corrupt
constexpr int kMaxDims = 32;

// Text from a file quoted in a message, with control bytes escaped: a NUL would end the message early
// (what() is a C string) and other control bytes could garble a terminal.
std::string printable(const std::string& s) {
  std::string out;
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(u));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

[[noreturn]] void corrupt(const std::string& name, const std::string& what) {
  fail(ErrorCode::Io, name + ": corrupt .npy file: " + what);
}

struct DtypeName {
  const char* descr;
  NpyDType dtype;
};
// Single-byte types have no byte order ('|'); NumPy also accepts '<' and '=' for them.
constexpr DtypeName kDtypes[] = {
    {"<f4", NpyDType::F32},  {"<f2", NpyDType::F16}, {"|b1", NpyDType::Bool}, {"<b1", NpyDType::Bool},
    {"=b1", NpyDType::Bool}, {"|u1", NpyDType::U8},  {"<u1", NpyDType::U8},   {"=u1", NpyDType::U8},
    {"|i1", NpyDType::I8},   {"<i1", NpyDType::I8},  {"=i1", NpyDType::I8},   {"<i4", NpyDType::I32},
    {"<i8", NpyDType::I64},  {"<f8", NpyDType::F64},
};

// A cursor over the header dict text.
struct HeaderParser {
  const std::string& text;
  const std::string& name;
  size_t pos = 0;

  void skip_space() {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r'))
      ++pos;
  }
  bool peek(char c) {
    skip_space();
    return pos < text.size() && text[pos] == c;
  }
  void expect(char c) {
    if (!peek(c)) corrupt(name, std::string("header: expected '") + c + "' at offset " + std::to_string(pos));
    ++pos;
  }
  std::string string_literal() {
    skip_space();
    if (pos >= text.size() || (text[pos] != '\'' && text[pos] != '"'))
      corrupt(name, "header: expected a string at offset " + std::to_string(pos));
    const char quote = text[pos++];
    const size_t end = text.find(quote, pos);
    if (end == std::string::npos) corrupt(name, "header: unterminated string");
    std::string s = text.substr(pos, end - pos);
    pos = end + 1;
    return s;
  }
  bool boolean() {
    skip_space();
    if (text.compare(pos, 4, "True") == 0) return pos += 4, true;
    if (text.compare(pos, 5, "False") == 0) return pos += 5, false;
    corrupt(name, "header: fortran_order must be True or False");
  }
  int64_t integer() {
    skip_space();
    const size_t begin = pos;
    int64_t v = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      const int digit = text[pos++] - '0';
      if (v > (std::numeric_limits<int64_t>::max() - digit) / 10) corrupt(name, "header: shape dimension too large");
      v = v * 10 + digit;
    }
    if (pos == begin)
      corrupt(name, "header: expected a non-negative integer in shape at offset " + std::to_string(pos));
    // Python 2 era files write long integers as '3L'.
    if (pos < text.size() && text[pos] == 'L') ++pos;
    return v;
  }
  std::vector<int64_t> shape() {
    expect('(');
    std::vector<int64_t> dims;
    while (!peek(')')) {
      if (int(dims.size()) >= kMaxDims) corrupt(name, "header: too many dimensions");
      dims.push_back(integer());
      if (peek(','))
        ++pos;
      else if (!peek(')'))
        corrupt(name, "header: expected ',' or ')' in shape");
    }
    ++pos;
    return dims;
  }
};

NpyDType dtype_from_descr(const std::string& descr, const std::string& name) {
  for (const auto& d : kDtypes)
    if (descr == d.descr) return d.dtype;
  if (!descr.empty() && descr[0] == '>')
    fail(ErrorCode::InvalidArgument, name + ": big-endian .npy data ('" + printable(descr) + "') is not supported");
  fail(ErrorCode::InvalidArgument, name + ": unsupported .npy dtype '" + printable(descr) +
                                       "' (expected <f4, <f2, <f8, |b1, |u1, |i1, <i4 or <i8)");
}

uint64_t read_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int b = bytes - 1; b >= 0; --b) v = (v << 8) | p[b];
  return v;
}

}  // namespace

const char* npy_descr(NpyDType t) {
  switch (t) {
    case NpyDType::F32: return "<f4";
    case NpyDType::F16: return "<f2";
    case NpyDType::Bool: return "|b1";
    case NpyDType::U8: return "|u1";
    case NpyDType::I8: return "|i1";
    case NpyDType::I32: return "<i4";
    case NpyDType::I64: return "<i8";
    case NpyDType::F64: return "<f8";
  }
  return "?";
}

size_t npy_item_size(NpyDType t) {
  switch (t) {
    case NpyDType::F32:
    case NpyDType::I32: return 4;
    case NpyDType::F16: return 2;
    case NpyDType::I64:
    case NpyDType::F64: return 8;
    default: return 1;
  }
}

int64_t NpyArray::elements() const {
  int64_t e = 1;
  for (int64_t d : shape) e *= d;
  return e;
}

NpyHeader parse_npy_header(const uint8_t* bytes, size_t size, const std::string& name) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(bytes, kMagic, 6) != 0) corrupt(name, "missing the \\x93NUMPY magic (not a .npy file?)");
  const int major = bytes[6], minor = bytes[7];
  if (major < 1 || major > 3 || minor != 0)
    corrupt(name, "unknown format version " + std::to_string(major) + "." + std::to_string(minor));
  const int len_bytes = major == 1 ? 2 : 4;
  if (size < size_t(8 + len_bytes)) corrupt(name, "truncated header");
  const uint64_t header_len = read_le(bytes + 8, len_bytes);
  if (header_len > kMaxHeaderBytes)
    corrupt(name, "header length " + std::to_string(header_len) + " is implausibly large");
  const size_t data_offset = 8 + len_bytes + size_t(header_len);
  if (size < data_offset) corrupt(name, "truncated header");
  const std::string text(reinterpret_cast<const char*>(bytes) + 8 + len_bytes, size_t(header_len));

  HeaderParser p{text, name};
  p.expect('{');
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  std::string descr;
  std::vector<int64_t> shape;
  while (!p.peek('}')) {
    const std::string key = p.string_literal();
    p.expect(':');
    if (key == "descr" && !have_descr) {
      if (p.peek('[')) fail(ErrorCode::InvalidArgument, name + ": structured .npy dtypes are not supported");
      descr = p.string_literal(), have_descr = true;
    } else if (key == "fortran_order" && !have_order) {
      fortran = p.boolean(), have_order = true;
    } else if (key == "shape" && !have_shape) {
      shape = p.shape(), have_shape = true;
    } else {
      corrupt(name, "header: unexpected or repeated key '" + printable(key) + "'");
    }
    if (p.peek(','))
      ++p.pos;
    else if (!p.peek('}'))
      corrupt(name, "header: expected ',' or '}' at offset " + std::to_string(p.pos));
  }
  ++p.pos;
  p.skip_space();
  if (p.pos != text.size()) corrupt(name, "header: trailing characters after the dict");
  if (!have_descr || !have_order || !have_shape) corrupt(name, "header lacks one of 'descr', 'fortran_order', 'shape'");

  NpyHeader h;
  h.dtype = dtype_from_descr(descr, name);
  if (fortran) fail(ErrorCode::InvalidArgument, name + ": fortran_order (column-major) .npy files are not supported");
  h.shape = shape;
  h.data_offset = data_offset;
  // Element count and byte size must not overflow: cap at 2^62 bytes.
  const uint64_t limit = uint64_t(1) << 62;
  uint64_t bytes_total = npy_item_size(h.dtype);
  for (int64_t d : shape) {
    if (d != 0 && bytes_total > limit / uint64_t(d)) corrupt(name, "shape is too large (size overflows)");
    bytes_total *= uint64_t(d);
  }
  h.data_bytes = size_t(bytes_total);
  return h;
}

NpyArray parse_npy(const uint8_t* bytes, size_t size, const std::string& name) {
  const NpyHeader h = parse_npy_header(bytes, size, name);
  const size_t have = size - h.data_offset;
  if (have < h.data_bytes)
    corrupt(name, "truncated data: expected " + std::to_string(h.data_bytes) + " bytes, found " + std::to_string(have));
  if (have > h.data_bytes) corrupt(name, std::to_string(have - h.data_bytes) + " unexpected bytes after the data");
  NpyArray a;
  a.dtype = h.dtype;
  a.shape = h.shape;
  a.data.assign(bytes + h.data_offset, bytes + size);
  return a;
}

NpyArray read_npy(const std::string& path) {
  // Only regular files: opening a FIFO would block until a writer comes (a hang), a device could
  // stream forever; stat first, then open.
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) fail(ErrorCode::Io, path + ": cannot open: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    fail(ErrorCode::Io, path + ": cannot read: not a regular file (" +
                            (S_ISDIR(st.st_mode)    ? "a directory"
                             : S_ISFIFO(st.st_mode) ? "a FIFO"
                             : S_ISSOCK(st.st_mode) ? "a socket"
                                                    : "a device") +
                            ")");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::Io, path + ": cannot open: " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff file_size = in.tellg();
  if (file_size < 0) fail(ErrorCode::Io, path + ": cannot read (not a regular file?)");
  in.seekg(0);
  // Read the fixed prefix and the header first, so the data size is validated before allocating it.
  std::vector<uint8_t> head(size_t(std::min<std::streamoff>(file_size, 12)));
  in.read(reinterpret_cast<char*>(head.data()), std::streamsize(head.size()));
  if (!in) fail(ErrorCode::Io, path + ": read error");
  if (head.size() >= 10 && head[6] >= 1 && head[6] <= 3) {
    const int len_bytes = head[6] == 1 ? 2 : 4;
    if (head.size() >= size_t(8 + len_bytes)) {
      const uint64_t header_len = read_le(head.data() + 8, len_bytes);
      const uint64_t want =
          std::min<uint64_t>(8 + len_bytes + std::min<uint64_t>(header_len, kMaxHeaderBytes + 1), uint64_t(file_size));
      if (want > head.size()) {
        const size_t old = head.size();
        head.resize(size_t(want));
        in.read(reinterpret_cast<char*>(head.data() + old), std::streamsize(head.size() - old));
        if (!in) fail(ErrorCode::Io, path + ": read error");
      }
    }
  }
  const NpyHeader h = parse_npy_header(head.data(), head.size(), path);
  const uint64_t have = uint64_t(file_size) - h.data_offset;
  if (have < h.data_bytes)
    corrupt(path, "truncated data: expected " + std::to_string(h.data_bytes) + " bytes, found " + std::to_string(have));
  if (have > h.data_bytes) corrupt(path, std::to_string(have - h.data_bytes) + " unexpected bytes after the data");
  NpyArray a;
  a.dtype = h.dtype;
  a.shape = h.shape;
  a.data.resize(h.data_bytes);
  in.seekg(std::streamoff(h.data_offset));
  in.read(reinterpret_cast<char*>(a.data.data()), std::streamsize(a.data.size()));
  if (!in) fail(ErrorCode::Io, path + ": read error in the data");
  return a;
}

std::vector<uint8_t> encode_npy(const NpyArray& a) {
  require(a.data.size() == size_t(a.elements()) * npy_item_size(a.dtype), "encode_npy: data size does not match shape");
  std::string dict = std::string("{'descr': '") + npy_descr(a.dtype) + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < a.shape.size(); ++i)
    dict += std::to_string(a.shape[i]) + (a.shape.size() == 1 ? "," : i + 1 < a.shape.size() ? ", " : "");
  dict += "), }";
  // Pad with spaces and a final newline so the data starts on a 64-byte boundary.
  int major = 1;
  size_t prefix = 10;
  if (dict.size() + 1 + 64 > 65535) major = 2, prefix = 12;
  const size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', uint8_t(major), 0};
  const uint64_t len = dict.size();
  for (size_t b = 0; b < prefix - 8; ++b) out.push_back(uint8_t(len >> (8 * b)));
  out.insert(out.end(), dict.begin(), dict.end());
  out.insert(out.end(), a.data.begin(), a.data.end());
  return out;
}

void write_npy(const std::string& path, const NpyArray& a) {
  const std::vector<uint8_t> bytes = encode_npy(a);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace splat
