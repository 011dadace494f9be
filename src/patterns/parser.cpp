// Recursive-descent parser for pattern specs:
//   expr := term ('+' term)*      union
//   term := atom ('&' atom)*      intersection ('&' binds tighter)
//   atom := '(' expr ')' | NAME [':' key=value (',' key=value)*] | 'mask:' PATH | 'mask:' '"' QUOTED '"'
#include <algorithm>
#include <cctype>
#include <map>
#include <string>

#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "splat/pattern.hpp"

namespace splat {
namespace {

struct KindInfo {
  PatternKind kind;
  const char* required;  // parameter names, in canonical order
  const char* optional;
};

const std::map<std::string, KindInfo>& kinds() {
  static const std::map<std::string, KindInfo> k = {
      {"dense", {PatternKind::Dense, "", ""}},
      {"causal", {PatternKind::Causal, "", ""}},
      {"window", {PatternKind::Window, "w", ""}},
      {"causal_window", {PatternKind::CausalWindow, "w", ""}},
      {"dilated", {PatternKind::Dilated, "w,d", ""}},
      {"causal_dilated", {PatternKind::CausalDilated, "w,d", ""}},
      {"strided", {PatternKind::Strided, "s", ""}},
      {"fixed", {PatternKind::Fixed, "l,c", ""}},
      {"blocked", {PatternKind::Blocked, "b", ""}},
      {"global", {PatternKind::Global, "g", ""}},
      {"sink", {PatternKind::Sink, "g", ""}},
      {"longformer", {PatternKind::Longformer, "w,g", ""}},
      {"bigbird", {PatternKind::BigBird, "b,w,g,r", "seed"}},
  };
  return k;
}

bool listed(const char* list, const std::string& name) {
  std::string s(list);
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    if (s.substr(pos, comma - pos) == name) return true;
    pos = comma + 1;
  }
  return false;
}

class Parser {
 public:
  // load: nullptr checks the syntax only (masks are left empty).
  Parser(std::string_view s, const MaskLoader* load) : s_(s), load_(load) {}

  Pattern parse() {
    skip_ws();
    if (pos_ >= s_.size()) error("empty pattern");
    Pattern p = expr();
    skip_ws();
    if (pos_ != s_.size()) error("unexpected '" + char_here() + "'");
    return p;
  }

 private:
  [[noreturn]] void error(const std::string& msg) const { error_at(pos_, msg); }
  // Messages echo user text through printable(): a NUL would end them early (tokens in msg are
  // already printable).
  [[noreturn]] void error_at(size_t at, const std::string& msg) const {
    fail(ErrorCode::InvalidArgument,
         "invalid pattern '" + printable(s_) + "' at position " + std::to_string(at) + ": " + msg);
  }
  // The character at pos_ (a whole UTF-8 sequence where there is one), printable.
  std::string char_here() const {
    const size_t len = std::max<size_t>(1, utf8_sequence(s_, pos_));
    return printable(s_.substr(pos_, len));
  }
  // A name or parameter token: everything up to the next separator, so that a bad byte inside a name
  // (e.g. a non-ASCII letter) is reported with the whole name, not as a name cut short.
  static bool separator(char c) {
    return c == ':' || c == '+' || c == '&' || c == '(' || c == ')' || c == ',' || c == '=' ||
           std::isspace(static_cast<unsigned char>(c));
  }
  std::string token() {
    std::string t;
    while (pos_ < s_.size() && !separator(s_[pos_])) t += s_[pos_++];
    return t;
  }
  void skip_ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    skip_ws();
    if (pos_ >= s_.size() || s_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  Pattern combine(PatternKind kind, Pattern a, Pattern b) {
    if (a.kind == kind) {
      a.children.push_back(std::move(b));
      return a;
    }
    Pattern p;
    p.kind = kind;
    p.children.push_back(std::move(a));
    p.children.push_back(std::move(b));
    return p;
  }

  Pattern expr() {
    Pattern p = term();
    while (eat('+')) p = combine(PatternKind::Union, std::move(p), term());
    return p;
  }
  Pattern term() {
    Pattern p = atom();
    while (eat('&')) p = combine(PatternKind::Intersection, std::move(p), atom());
    return p;
  }

  Pattern atom() {
    skip_ws();
    if (++depth_ > 64) error("nesting too deep");
    if (eat('(')) {
      Pattern p = expr();
      if (!eat(')')) error("expected ')'");
      --depth_;
      return p;
    }
    const size_t name_at = pos_;
    const std::string name = token();
    if (name.empty())
      error(pos_ < s_.size() ? "expected a pattern name, got '" + char_here() + "'"
                             : std::string("expected a pattern name"));
    --depth_;
    if (name == "mask") return mask_atom(name_at);
    auto it = kinds().find(name);
    if (it == kinds().end()) error_at(name_at, "unknown pattern '" + printable(name) + "'");
    Pattern p;
    p.kind = it->second.kind;
    std::map<std::string, bool> seen;
    if (eat(':')) {
      do {
        skip_ws();
        const size_t key_at = pos_;
        const std::string key = token();
        if (key.empty())
          error(pos_ < s_.size() ? "expected a parameter name, got '" + char_here() + "'"
                                 : std::string("expected a parameter name"));
        if (!listed(it->second.required, key) && !listed(it->second.optional, key))
          error_at(key_at, "unknown parameter '" + printable(key) + "' for '" + name + "'");
        if (seen[key]) error_at(key_at, "parameter '" + key + "' given twice");
        seen[key] = true;
        if (!eat('=')) error("expected '=' after '" + key + "'");
        skip_ws();
        set_param(p, key, number());
      } while (eat(','));
    }
    std::string req(it->second.required);
    size_t q = 0;
    while (q < req.size()) {
      size_t comma = req.find(',', q);
      if (comma == std::string::npos) comma = req.size();
      std::string key = req.substr(q, comma - q);
      if (!seen[key]) error_at(name_at, "'" + name + "' needs parameter '" + key + "'");
      q = comma + 1;
    }
    return p;
  }

  uint64_t number() {
    const size_t at = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') error("parameters are non-negative integers");
    uint64_t v = 0;
    size_t digits = 0;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
      v = v * 10 + uint64_t(s_[pos_++] - '0');
      if (++digits > 18) error_at(at, "number too large");
    }
    if (digits == 0)
      error(pos_ < s_.size() ? "expected a non-negative integer, got '" + char_here() + "'"
                             : std::string("expected a non-negative integer"));
    return v;
  }

  static void set_param(Pattern& p, const std::string& key, uint64_t v) {
    const auto x = static_cast<int64_t>(v);
    if (key == "w")
      p.w = x;
    else if (key == "d")
      p.d = x;
    else if (key == "s")
      p.s = x;
    else if (key == "l")
      p.l = x;
    else if (key == "c")
      p.c = x;
    else if (key == "b")
      p.b = x;
    else if (key == "g")
      p.g = x;
    else if (key == "r")
      p.r = x;
    else if (key == "seed")
      p.seed = v;
  }

  // mask:PATH runs to the next '+', '&' or ')' (surrounding whitespace dropped); mask:"PATH" takes any
  // path, with \" and \\ for a quote and a backslash.
  Pattern mask_atom(size_t name_at) {
    const char* usage = "'mask' needs a path: mask:PATH.npy or mask:\"PATH.npy\"";
    if (pos_ >= s_.size() || s_[pos_] != ':') error_at(name_at, usage);
    ++pos_;
    skip_ws();
    std::string path;
    if (pos_ < s_.size() && s_[pos_] == '"') {
      const size_t open = pos_++;
      for (;;) {
        if (pos_ >= s_.size()) error_at(open, "unterminated quoted mask path");
        const char c = s_[pos_++];
        if (c == '"') break;
        if (c == '\\') {
          if (pos_ >= s_.size()) error_at(open, "unterminated quoted mask path");
          if (s_[pos_] != '"' && s_[pos_] != '\\')
            error_at(pos_ - 1, "in a quoted mask path a backslash escapes only '\"' and '\\'");
          path += s_[pos_++];
        } else {
          path += c;
        }
      }
    } else {
      while (pos_ < s_.size() && s_[pos_] != '+' && s_[pos_] != '&' && s_[pos_] != ')') path += s_[pos_++];
      while (!path.empty() && std::isspace(static_cast<unsigned char>(path.back()))) path.pop_back();
    }
    if (path.empty()) error(usage);
    // The file system would see only the part before a NUL: refuse rather than open another file.
    if (path.find('\0') != std::string::npos) error_at(name_at, "a mask path must not contain a NUL byte");
    Pattern p;
    p.kind = PatternKind::Mask;
    if (load_) {
      p.mask = (*load_)(path);
      require(p.mask != nullptr, "mask loader returned no mask for " + printable(path));
    }
    return p;
  }

  std::string_view s_;
  size_t pos_ = 0;
  int depth_ = 0;
  const MaskLoader* load_ = nullptr;
};

}  // namespace

std::shared_ptr<const MaskData> load_mask_file(const std::string& path) {
  MaskData m;
  try {
    m = mask_from_npy(read_npy(path), path);
  } catch (const Error& e) {  // the reader's message names the path as given
    fail(e.code(), printable(e.what()));
  }
  m.hash = mask_hash(m.bits.data(), m.n);  // cached plans are keyed by content (pattern_key)
  return std::make_shared<const MaskData>(std::move(m));
}

Pattern parse_pattern(std::string_view spec, const MaskLoader& load) {
  Parser(spec, nullptr).parse();  // syntax first: a bad spec is reported as such, whatever its mask files
  return Parser(spec, &load).parse();
}

Pattern parse_pattern(std::string_view spec) {
  return parse_pattern(spec, MaskLoader(load_mask_file));
}

}  // namespace splat
