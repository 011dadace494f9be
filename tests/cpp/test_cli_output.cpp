// Where outputs go: the temp-file + rename writer behind --out, --json and --png (and the kernel cache)
// replaces regular files only. Anything else that exists (directory, FIFO, socket, device) is refused
// and left as it was; a symlink to a regular file is written through (the link stays a link); a
// symlink to anything else, or to nothing, is refused. Every node here is made in a scratch directory.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "splat/error.hpp"
#include "splat/npy.hpp"
#include "test_cli_util.hpp"

using namespace splat;
using namespace splat_test;

namespace {

fs::path fresh(const std::string& name) {
  const fs::path p = scratch() / name;
  std::error_code ec;
  fs::remove_all(p, ec);
  return p;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

mode_t kind_of(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & S_IFMT;
}

// A Unix-domain socket node bound at p (the socket is closed; the node stays).
bool make_socket(const fs::path& p) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (p.string().size() >= sizeof addr.sun_path) return close(fd), false;
  std::strcpy(addr.sun_path, p.c_str());
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// The refused targets, each made fresh; the callback checks one of them. Kinds that cannot be made
// here (a character device needs CAP_MKNOD) are left out.
struct Node {
  std::string what;
  fs::path path;
  mode_t kind;
};
std::vector<Node> refused_nodes(const std::string& tag) {
  std::vector<Node> n;
  const fs::path fifo = fresh(tag + "-fifo");
  if (mkfifo(fifo.c_str(), 0644) == 0) n.push_back({"FIFO", fifo, S_IFIFO});
  const fs::path dir = fresh(tag + "-dir");
  fs::create_directory(dir);
  n.push_back({"directory", dir, S_IFDIR});
  const fs::path sock = fresh(tag + "-sock");
  if (make_socket(sock)) n.push_back({"socket", sock, S_IFSOCK});
  // A character device node of our own (the null device's numbers), made only where allowed.
  const fs::path chr = fresh(tag + "-chr");
  if (mknod(chr.c_str(), S_IFCHR | 0600, makedev(1, 3)) == 0) n.push_back({"character device", chr, S_IFCHR});
  const fs::path link = fresh(tag + "-link-to-fifo");
  if (!n.empty() && n[0].kind == S_IFIFO) {
    fs::create_symlink(n[0].path, link);
    n.push_back({"symlink to a FIFO", link, S_IFLNK});
  }
  const fs::path dangling = fresh(tag + "-dangling");
  fs::create_symlink(scratch() / (tag + "-nothing-here"), dangling);
  n.push_back({"dangling symlink", dangling, S_IFLNK});
  return n;
}

void expect_no_temporaries() {
  for (auto& e : fs::directory_iterator(scratch()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

}  // namespace

TEST(AtomicWrite, RefusesEveryTargetThatIsNotARegularFile) {
  for (const Node& n : refused_nodes("lib")) {
    try {
      write_file_atomic(n.path.string(), "data", 4);
      ADD_FAILURE() << n.what << " was accepted as an output";
    } catch (const Error& e) {
      EXPECT_EQ(int(e.code()), int(ErrorCode::Io)) << n.what;
      EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << n.what << ": " << e.what();
    }
    EXPECT_EQ(kind_of(n.path), n.kind) << n.what << " was replaced";
  }
  expect_no_temporaries();
}

TEST(AtomicWrite, WritesThroughASymlinkToARegularFile) {
  const fs::path target = fresh("real.txt"), link = fresh("link.txt"), link2 = fresh("link2.txt");
  write_text(target, "old");
  fs::permissions(target, fs::perms(0640));
  fs::create_symlink(target.filename(), link);  // relative link, resolved against its own directory
  fs::create_symlink(link, link2);              // a chain of links
  write_file_atomic(link2.string(), "new contents", 12);
  EXPECT_EQ(kind_of(link), S_IFLNK);
  EXPECT_EQ(kind_of(link2), S_IFLNK);
  EXPECT_EQ(slurp(target), "new contents");
  EXPECT_EQ(slurp(link2), "new contents");
  // The replaced file keeps its permissions.
  EXPECT_EQ(int(fs::status(target).permissions() & fs::perms::all), 0640);
  // A plain missing or regular target is still simply written.
  const fs::path plain = fresh("plain.txt");
  write_file_atomic(plain.string(), "a", 1);
  write_file_atomic(plain.string(), "bb", 2);
  EXPECT_EQ(slurp(plain), "bb");
  expect_no_temporaries();
}

TEST(CliOutputs, OutJsonAndPngRefuseNonRegularTargets) {
  const std::string q = write_tmp("oq.npy", random_tensor(NpyDType::F32, {1, 1, 16, 4}, 1));
  for (const Node& n : refused_nodes("cli")) {
    const std::string p = n.path.string();
    expect_usage_error({"run", "window:w=2", "--q", q, "--k", q, "--v", q, "--out", p}, "not a regular file");
    expect_usage_error({"inspect", "causal", "--seq-len", "16", "--png", p}, "not a regular file");
    expect_usage_error(
        {"bench", "--backend", "cpu", "--seq-len", "64", "--heads", "1", "--head-dim", "8", "--reps", "1", "--json", p},
        "not a regular file");
    EXPECT_EQ(kind_of(n.path), n.kind) << n.what << " was replaced";
  }
  // Through a symlink to a regular file: the file gets the output, the link stays.
  const fs::path target = fresh("o-real.npy"), link = fresh("o-link.npy");
  write_text(target, "precious");
  fs::create_symlink(target, link);
  const CliResult r = run_cli({"run", "window:w=2", "--q", q, "--k", q, "--v", q, "--out", link.string()});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(kind_of(link), S_IFLNK);
  EXPECT_EQ(read_npy(target.string()).shape, (std::vector<int64_t>{1, 1, 16, 4}));
  expect_no_temporaries();
}
