// Helpers for tests that run the llmtune binary: shell quoting, a per-test scratch folder, small file
// I/O, run_llmtune (stdout through a pipe, so progress is plain; stderr captured through a file) and
// REQUIRE_BINARY.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace llmtune::cli_test {

namespace fs = std::filesystem;

struct CliRun {
  int exit_code = -1;  // -1: killed by a signal
  std::string out, err;
};

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void put(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << bytes;
}

// A fresh temp folder named after the prefix, the process and the running test; removed afterwards.
struct Scratch {
  fs::path path;
  explicit Scratch(const std::string& prefix) {
    path = fs::temp_directory_path() / (prefix + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  // Writes `content` to the file `name` inside the folder; returns that file's path.
  std::string file(const std::string& name, const std::string& content) const {
    put(path / name, content);
    return (path / name).string();
  }
};

inline CliRun run_llmtune(const std::vector<std::string>& args, const fs::path& scratch) {
  std::string cmd = quote(LLMTUNE_BINARY);
  // Appended piece by piece: `" " + quote(a)` trips a false GCC 12 -Wrestrict warning at -O3.
  for (const auto& a : args) {
    cmd += ' ';
    cmd += quote(a);
  }
  const fs::path err = scratch / "stderr.txt";
  cmd += " 2>";
  cmd += quote(err.string());
  CliRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    ADD_FAILURE() << "popen failed: " << cmd;
    return r;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.err = slurp(err);
  return r;
}

// The one-error-line contract of every command: exit code 1 (not a signal), stderr exactly one line
// "error: ...\n" containing every one of `needles`.
inline void expect_one_error_line(const CliRun& r, const std::vector<std::string>& needles) {
  SCOPED_TRACE("stderr: " + r.err);
  EXPECT_NE(r.exit_code, -1) << "killed by a signal";
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << "stderr must start with 'error: '";
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n');
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "exactly one line";
  for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "'";
}

}  // namespace llmtune::cli_test

// Skips the test when the binary is missing: with LLMTUNE_ONLY cmake does not build it (a full build always
// has it, llmtune_tests depends on it).
#define REQUIRE_BINARY() \
  if (!std::filesystem::exists(LLMTUNE_BINARY)) GTEST_SKIP() << LLMTUNE_BINARY << " not built (LLMTUNE_ONLY build?)"
