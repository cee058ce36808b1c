// Atomic file/folder writes: the target is complete or untouched, and no temporary is left behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <set>

#include "io/atomic_file.h"
#include "io_test_util.h"

using namespace llmtune;
using llmtune::testing::error_of;
using llmtune::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

}  // namespace

TEST(AtomicFile, WriteReadRoundTripBinary) {
  TempDir dir;
  std::string bytes("a\0b\xff\n", 5);
  write_file_atomic(dir.file("f.bin"), bytes);
  EXPECT_EQ(read_file(dir.file("f.bin")), bytes);
  write_file_atomic(dir.file("empty"), "");
  EXPECT_EQ(read_file(dir.file("empty")), "");
  write_file_atomic_parts(dir.file("parts"), {"head", "", "-tail"});
  EXPECT_EQ(read_file(dir.file("parts")), "head-tail");
}

TEST(AtomicFile, OverwriteLeavesOnlyTheTarget) {
  TempDir dir;
  write_file_atomic(dir.file("f.txt"), "old contents that are longer");
  write_file_atomic(dir.file("f.txt"), "new");
  EXPECT_EQ(read_file(dir.file("f.txt")), "new");
  EXPECT_EQ(listing(dir.path), (std::set<std::string>{"f.txt"}));
}

// A write that fails half-way (file size limit hit) must leave the old target intact and remove
// the temporary file.
TEST(AtomicFile, FailedWriteKeepsOldTargetAndRemovesTemp) {
  TempDir dir;
  std::string path = dir.file("f.txt");
  write_file_atomic(path, "old");
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
  struct rlimit small = saved;
  small.rlim_cur = 1000;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string e = error_of([&] { write_file_atomic(path, std::string(5000, 'x')); });
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);
  EXPECT_NE(e.find("cannot write " + path + ": write failed: File too large"), std::string::npos) << e;
  EXPECT_EQ(read_file(path), "old");
  EXPECT_EQ(listing(dir.path), (std::set<std::string>{"f.txt"}));
}

TEST(AtomicFile, FailedRenameRemovesTemp) {
  TempDir dir;
  fs::create_directories(dir.file("target/sub"));  // a non-empty folder cannot be replaced by a file
  std::string e = error_of([&] { write_file_atomic(dir.file("target"), "x"); });
  EXPECT_NE(e.find("rename"), std::string::npos) << e;
  EXPECT_EQ(listing(dir.path), (std::set<std::string>{"target"}));
  EXPECT_NE(error_of([&] { write_file_atomic(dir.file("no/such/dir/f"), "x"); }).find("cannot write"),
            std::string::npos);
}

TEST(AtomicFile, ReadFileErrorsNameTheFile) {
  TempDir dir;
  std::string e = error_of([&] { read_file(dir.file("missing.json")); });
  EXPECT_EQ(e, "cannot open " + dir.file("missing.json") + ": No such file or directory");
  e = error_of([&] { read_file(dir.path); });
  EXPECT_NE(e.find("cannot read " + dir.path + ": Is a directory"), std::string::npos) << e;
}

TEST(AtomicDir, CreatesNewFolder) {
  TempDir dir;
  std::string target = dir.file("out/checkpoint-10");  // parent is created too
  write_dir_atomic(target, [](const std::string& tmp) {
    EXPECT_NE(tmp.find("checkpoint-10.tmp."), std::string::npos);
    write_file_atomic(tmp + "/a.txt", "A");
  });
  EXPECT_EQ(read_file(target + "/a.txt"), "A");
  EXPECT_EQ(listing(dir.file("out")), (std::set<std::string>{"checkpoint-10"}));
}

TEST(AtomicDir, ReplacesExistingFolderCompletely) {
  TempDir dir;
  std::string target = dir.file("ckpt");
  write_dir_atomic(target, [](const std::string& tmp) {
    write_file_atomic(tmp + "/old_only.txt", "1");
    fs::create_directories(tmp + "/nested");
    write_file_atomic(tmp + "/nested/x", "2");
  });
  write_dir_atomic(target + "/", [](const std::string& tmp) { write_file_atomic(tmp + "/new.txt", "3"); });
  EXPECT_EQ(listing(target), (std::set<std::string>{"new.txt"}));
  EXPECT_EQ(read_file(target + "/new.txt"), "3");
  EXPECT_EQ(listing(dir.path), (std::set<std::string>{"ckpt"}));
}

TEST(AtomicDir, FillThatThrowsLeavesOldFolderAndNoTemp) {
  TempDir dir;
  std::string target = dir.file("ckpt");
  write_dir_atomic(target, [](const std::string& tmp) { write_file_atomic(tmp + "/good.txt", "good"); });
  std::string e = error_of([&] {
    write_dir_atomic(target, [](const std::string& tmp) {
      write_file_atomic(tmp + "/half.txt", "half");
      fail("disk full (simulated)");
    });
  });
  EXPECT_EQ(e, "disk full (simulated)");
  EXPECT_EQ(listing(target), (std::set<std::string>{"good.txt"}));
  EXPECT_EQ(listing(dir.path), (std::set<std::string>{"ckpt"}));
}

TEST(AtomicDir, RefusesToReplaceAFile) {
  TempDir dir;
  write_file_atomic(dir.file("f"), "x");
  std::string e = error_of([&] { write_dir_atomic(dir.file("f"), [](const std::string&) {}); });
  EXPECT_NE(e.find("exists and is not a folder"), std::string::npos) << e;
  EXPECT_EQ(read_file(dir.file("f")), "x");
}
