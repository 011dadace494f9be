// .npy reading and writing: round trips for every dtype, byte-exact agreement with files NumPy wrote,
// every kind of corrupt or unsupported input, and atomic writes that leave an existing file untouched.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "splat/pattern.hpp"

namespace fs = std::filesystem;
using namespace splat;

namespace {

// A per-process scratch directory, removed at exit.
struct Scratch {
  fs::path dir = fs::temp_directory_path() / ("splat_test_npy_" + std::to_string(getpid()));
  Scratch() { fs::create_directories(dir); }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};
fs::path scratch_dir() {
  static const Scratch s;
  return s.dir;
}

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void dump(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// A .npy image with the given header dict (padded like NumPy) and data bytes.
std::vector<uint8_t> npy_bytes(const std::string& dict, size_t data_bytes, int major = 1) {
  std::string h = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::vector<uint8_t> b = {0x93, 'N', 'U', 'M', 'P', 'Y', uint8_t(major), 0};
  for (size_t i = 0; i < prefix - 8; ++i) b.push_back(uint8_t(h.size() >> (8 * i)));
  b.insert(b.end(), h.begin(), h.end());
  for (size_t i = 0; i < data_bytes; ++i) b.push_back(uint8_t(i * 7));
  return b;
}

NpyArray random_array(NpyDType t, std::vector<int64_t> shape, uint32_t seed) {
  NpyArray a;
  a.dtype = t;
  a.shape = std::move(shape);
  a.data.resize(size_t(a.elements()) * npy_item_size(t));
  std::mt19937 rng(seed);
  for (auto& b : a.data) b = uint8_t(rng());
  if (t == NpyDType::Bool)
    for (auto& b : a.data) b &= 1;
  return a;
}

// Expects parse_npy to throw `code` with a message containing `needle`.
void expect_error(const std::vector<uint8_t>& bytes, ErrorCode code, const std::string& needle) {
  try {
    parse_npy(bytes.data(), bytes.size(), "x.npy");
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(int(e.code()), int(code)) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  // The file reader must agree with the in-memory parser.
  const fs::path p = scratch_dir() / "bad.npy";
  dump(p, bytes);
  try {
    read_npy(p.string());
    ADD_FAILURE() << "read_npy: no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_EQ(int(e.code()), int(code)) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

const std::string kF32 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

}  // namespace

TEST(Npy, RoundTripEveryDtypeAndShape) {
  const NpyDType types[] = {NpyDType::F32, NpyDType::F16, NpyDType::Bool, NpyDType::U8,
                            NpyDType::I8,  NpyDType::I32, NpyDType::I64};
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {1}, {7}, {3, 5}, {2, 0, 4}, {1, 2, 3, 4}, {2, 1, 17, 3}};
  uint32_t seed = 1;
  for (NpyDType t : types)
    for (const auto& s : shapes) {
      const NpyArray a = random_array(t, s, seed++);
      const fs::path p = scratch_dir() / "rt.npy";
      write_npy(p.string(), a);
      const NpyArray b = read_npy(p.string());
      EXPECT_EQ(int(b.dtype), int(a.dtype));
      EXPECT_EQ(b.shape, a.shape);
      EXPECT_EQ(b.data, a.data);
      const std::vector<uint8_t> bytes = slurp(p);
      EXPECT_EQ((bytes.size() - a.data.size()) % 64, 0u) << "data must start 64-byte aligned";
      EXPECT_EQ(bytes, encode_npy(a));
    }
}

TEST(Npy, MatchesFilesWrittenByNumpy) {
  // The fuzz seed corpus holds files written by numpy.save; re-encoding a file we accept must
  // reproduce it byte for byte (same header text and padding).
  const fs::path dir = fs::path(__FILE__).parent_path() / ".." / "fuzz" / "corpus" / "npy";
  ASSERT_TRUE(fs::exists(dir)) << dir;
  int accepted = 0;
  for (const char* name : {"f32_4d.npy", "f16_4d.npy", "mask_bool.npy", "mask_u1.npy", "mask_i4.npy", "mask_i8.npy",
                           "i1_1d.npy", "scalar_f4.npy", "empty_f4.npy"}) {
    const NpyArray a = read_npy((dir / name).string());
    EXPECT_EQ(encode_npy(a), slurp(dir / name)) << name;
    ++accepted;
  }
  EXPECT_EQ(accepted, 9);
  const NpyArray v2 = read_npy((dir / "v2_f4.npy").string());
  EXPECT_EQ(v2.shape, (std::vector<int64_t>{2, 2}));
  float one;
  std::memcpy(&one, v2.data.data(), 4);
  EXPECT_EQ(one, 1.0f);
  const NpyArray f16 = read_npy((dir / "f16_4d.npy").string());
  EXPECT_EQ(int(f16.dtype), int(NpyDType::F16));
  EXPECT_EQ(f16.shape, (std::vector<int64_t>{1, 1, 5, 2}));
}

TEST(Npy, RejectsNumpyFilesSplatDoesNotTake) {
  const fs::path dir = fs::path(__FILE__).parent_path() / ".." / "fuzz" / "corpus" / "npy";
  const auto code_of = [&](const char* name) {
    try {
      read_npy((dir / name).string());
    } catch (const Error& e) {
      return std::make_pair(int(e.code()), std::string(e.what()));
    }
    return std::make_pair(-1, std::string());
  };
  auto r = code_of("fortran.npy");
  EXPECT_EQ(r.first, int(ErrorCode::InvalidArgument));
  EXPECT_NE(r.second.find("fortran_order"), std::string::npos) << r.second;
  r = code_of("big_endian.npy");
  EXPECT_EQ(r.first, int(ErrorCode::InvalidArgument));
  EXPECT_NE(r.second.find("big-endian"), std::string::npos) << r.second;
  // float64 (NumPy's default) is read; other dtypes are named in the refusal.
  EXPECT_EQ(code_of("f8.npy").first, -1);
  EXPECT_EQ(int(read_npy((dir / "f8.npy").string()).dtype), int(NpyDType::F64));
  const auto c8 = npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", 16);
  expect_error(c8, ErrorCode::InvalidArgument, "<c8");
  r = code_of("truncated.npy");
  EXPECT_EQ(r.first, int(ErrorCode::Io));
  EXPECT_NE(r.second.find("truncated"), std::string::npos) << r.second;
}

TEST(Npy, ParsesVersion2And3Headers) {
  for (int major : {2, 3}) {
    const auto b = npy_bytes(kF32, 24, major);
    const NpyArray a = parse_npy(b.data(), b.size());
    EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  }
  // Key order, quotes and spacing vary between writers.
  const auto b = npy_bytes("{\"shape\":(4,),\"fortran_order\":False,\"descr\":\"|b1\"}", 4);
  const NpyArray a = parse_npy(b.data(), b.size());
  EXPECT_EQ(int(a.dtype), int(NpyDType::Bool));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{4}));
}

TEST(Npy, CorruptInputs) {
  auto good = npy_bytes(kF32, 24);
  ASSERT_NO_THROW(parse_npy(good.data(), good.size()));

  expect_error({}, ErrorCode::Io, "magic");
  expect_error({'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'}, ErrorCode::Io, "magic");
  auto b = good;
  b[6] = 9;
  expect_error(b, ErrorCode::Io, "version");
  b = good;
  b[7] = 1;
  expect_error(b, ErrorCode::Io, "version");
  expect_error(std::vector<uint8_t>(good.begin(), good.begin() + 9), ErrorCode::Io, "magic");
  expect_error(std::vector<uint8_t>(good.begin(), good.begin() + 40), ErrorCode::Io, "truncated header");
  b = good;
  b[8] = 0xff, b[9] = 0xff;  // header length 65535 > file
  expect_error(b, ErrorCode::Io, "truncated header");
  b = npy_bytes(kF32, 24, 2);
  b[11] = 0x7f;  // v2 header length ~2 GiB
  expect_error(b, ErrorCode::Io, "implausibly large");
  // Truncated and overlong data.
  expect_error(std::vector<uint8_t>(good.begin(), good.end() - 1), ErrorCode::Io, "truncated data");
  b = good;
  b.push_back(0);
  expect_error(b, ErrorCode::Io, "unexpected bytes");

  // Broken dictionaries.
  expect_error(npy_bytes("not a dict", 0), ErrorCode::Io, "expected '{'");
  expect_error(npy_bytes("{'descr': '<f4', 'shape': (2, 3), }", 24), ErrorCode::Io, "lacks");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24), ErrorCode::Io,
               "unexpected or repeated key 'x'");
  expect_error(npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", 24),
               ErrorCode::Io, "repeated key");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3)}", 24), ErrorCode::Io,
               "True or False");
  expect_error(npy_bytes("{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}", 24), ErrorCode::Io, "expected");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}", 24), ErrorCode::Io,
               "non-negative integer");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", 24), ErrorCode::Io,
               "expected ',' or ')'");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk", 24), ErrorCode::Io,
               "trailing");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 0),
               ErrorCode::Io, "too large");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 0),
               ErrorCode::Io, "too large");
  std::string many = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < 40; ++i) many += "1, ";
  expect_error(npy_bytes(many + ")}", 4), ErrorCode::Io, "too many dimensions");
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3", 0), ErrorCode::Io, "expected");

  // Well-formed files splat does not take.
  expect_error(npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24), ErrorCode::InvalidArgument,
               "fortran_order");
  expect_error(npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3), }", 48), ErrorCode::InvalidArgument,
               "unsupported .npy dtype '<c8'");
  expect_error(npy_bytes("{'descr': '>i4', 'fortran_order': False, 'shape': (2, 3), }", 24), ErrorCode::InvalidArgument,
               "big-endian");
  expect_error(npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8),
               ErrorCode::InvalidArgument, "structured");
}

TEST(Npy, MissingOrUnreadableFiles) {
  for (const std::string& path :
       std::vector<std::string>{"/nonexistent/dir/x.npy", (scratch_dir() / "nope.npy").string()}) {
    try {
      read_npy(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      EXPECT_EQ(int(e.code()), int(ErrorCode::Io));
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_npy(scratch_dir().string()), Error);  // a directory
}

TEST(Npy, TextQuotedFromAFileHasItsControlBytesEscaped) {
  // A NUL in the quoted dtype would end the message (what() is a C string); ESC could garble a terminal.
  const char text[] = "{'descr': '<x\0y\x1b[2J', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string dict(text, sizeof text - 1);  // with the NUL
  const auto b = npy_bytes(dict, 24);
  try {
    parse_npy(b.data(), b.size(), "nul.npy");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'<x\\x00y\\x1b[2J'"), std::string::npos) << m;
    EXPECT_NE(m.find("(expected <f4"), std::string::npos) << m << ": the message goes on after the NUL";
  }
}

TEST(Npy, NonRegularInputsAreRefusedWithoutBlocking) {
  // Opening a FIFO blocks until a writer comes: read_npy must refuse it without opening. Each read runs in
  // a child with an alarm, so a regression fails the test instead of hanging it.
  const fs::path fifo = scratch_dir() / "in.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& spec : {std::string("npy"), std::string("mask")}) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      alarm(5);
      try {
        if (spec == "npy")
          read_npy(fifo.string());
        else
          parse_pattern("mask:" + fifo.string());
      } catch (const Error& e) {
        _exit(std::string(e.what()).find("not a regular file") != std::string::npos ? 0 : 2);
      }
      _exit(3);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << spec << ": " << (WIFSIGNALED(status) ? "blocked (killed by the alarm)" : "wrong error");
  }
}

TEST(Npy, FailedWritesLeaveTheExistingFileUntouched) {
  const fs::path target = scratch_dir() / "keep.npy";
  const NpyArray old = random_array(NpyDType::F32, {4}, 7);
  write_npy(target.string(), old);
  const std::vector<uint8_t> before = slurp(target);

  // A write that fails half-way (the file size limit stops it): the target is unchanged, no temp file
  // is left behind. SIGXFSZ is ignored so write() fails with EFBIG instead of killing the process.
  const NpyArray big = random_array(NpyDType::F32, {1 << 16}, 8);
  rlimit saved{};
  getrlimit(RLIMIT_FSIZE, &saved);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  bool threw = false;
  try {
    write_npy(target.string(), big);
  } catch (const Error& e) {
    threw = true;
    EXPECT_EQ(int(e.code()), int(ErrorCode::Io));
    EXPECT_NE(std::string(e.what()).find("cannot write"), std::string::npos) << e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(threw);
  EXPECT_EQ(slurp(target), before);
  int files = 0;
  for (auto& e : fs::directory_iterator(scratch_dir()))
    files += e.path().filename().string().find(".tmp-") != std::string::npos;
  EXPECT_EQ(files, 0) << "temporary file left behind";

  // Paths that cannot be written at all.
  for (const std::string& path :
       std::vector<std::string>{"/nonexistent/dir/out.npy", (target / "child.npy").string(), scratch_dir().string()}) {
    try {
      write_npy(path, old);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      EXPECT_EQ(int(e.code()), int(ErrorCode::Io)) << e.what();
    }
  }
  EXPECT_EQ(slurp(target), before);
  EXPECT_TRUE(fs::is_directory(scratch_dir()));
}

TEST(Npy, Masks) {
  NpyArray a;
  a.dtype = NpyDType::Bool;
  a.shape = {3, 3};
  a.data = {1, 0, 0, 1, 1, 0, 1, 1, 1};
  const MaskData m = mask_from_npy(a, "m.npy");
  EXPECT_EQ(m.n, 3);
  EXPECT_EQ(m.bits, a.data);
  // Integer masks: little-endian 0/1 values of every width.
  for (NpyDType t : {NpyDType::U8, NpyDType::I8, NpyDType::I32, NpyDType::I64}) {
    NpyArray b;
    b.dtype = t;
    b.shape = {3, 3};
    b.data.assign(9 * npy_item_size(t), 0);
    for (int i = 0; i < 9; ++i) b.data[size_t(i) * npy_item_size(t)] = a.data[size_t(i)];
    EXPECT_EQ(mask_from_npy(b, "m.npy").bits, a.data);
    b.data[npy_item_size(t) * 4 + (npy_item_size(t) > 1 ? 1 : 0)] = 2;  // entry (1, 1) is not 0/1
    try {
      mask_from_npy(b, "m.npy");
      ADD_FAILURE() << "accepted a non-0/1 mask";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("(1, 1)"), std::string::npos) << e.what();
    }
  }
  NpyArray f = random_array(NpyDType::F32, {3, 3}, 3);
  EXPECT_THROW(mask_from_npy(f, "m.npy"), Error);
  NpyArray rect = random_array(NpyDType::Bool, {3, 4}, 3);
  EXPECT_THROW(mask_from_npy(rect, "m.npy"), Error);
  NpyArray empty = random_array(NpyDType::Bool, {0, 0}, 3);
  EXPECT_THROW(mask_from_npy(empty, "m.npy"), Error);

  // The pattern parser reads masks through load_mask_npy.
  NpyArray causal;
  causal.dtype = NpyDType::Bool;
  causal.shape = {5, 5};
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) causal.data.push_back(j <= i);
  const fs::path p = scratch_dir() / "causal.npy";
  write_npy(p.string(), causal);
  const Pattern pat = parse_pattern("mask:" + p.string());
  EXPECT_EQ(dense_mask(pat, 5), dense_mask(parse_pattern("causal"), 5));
}

TEST(Npy, Tensors) {
  NpyArray a = random_array(NpyDType::F16, {2, 3, 5, 4}, 11);
  const TensorView v = npy_tensor_view(a, "q.npy");
  EXPECT_EQ(int(v.dtype), int(DType::F16));
  EXPECT_EQ(v.B(), 2);
  EXPECT_EQ(v.N(), 5);
  const NpyArray back = npy_from_tensor(v);
  EXPECT_EQ(back.data, a.data);
  EXPECT_EQ(back.shape, a.shape);
  // float64 tensors (CPU: computed in float64) round-trip bit for bit.
  NpyArray d = random_array(NpyDType::F64, {1, 2, 3, 4}, 12);
  const TensorView dv = npy_tensor_view(d, "q.npy");
  EXPECT_EQ(int(dv.dtype), int(DType::F64));
  EXPECT_EQ(npy_from_tensor(dv).data, d.data);
  EXPECT_EQ(npy_descr(NpyDType::F64), std::string("<f8"));
  NpyArray three = random_array(NpyDType::F32, {3, 5, 4}, 1);
  EXPECT_THROW(npy_tensor_view(three, "q.npy"), Error);
  NpyArray ints = random_array(NpyDType::I32, {1, 1, 2, 2}, 1);
  EXPECT_THROW(npy_tensor_view(ints, "q.npy"), Error);
  NpyArray zero = random_array(NpyDType::F32, {1, 0, 2, 2}, 1);
  EXPECT_THROW(npy_tensor_view(zero, "q.npy"), Error);
}
