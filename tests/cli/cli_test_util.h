// Helpers for tests that run the llmtune binary: shell quoting, a per-test scratch folder, small file
// I/O, run_llmtune (stdout through a pipe, so progress is plain; stderr captured through a file) and
// REQUIRE_BINARY.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

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

}  // namespace llmtune::cli_test

// Skips the test when the binary is missing: with LLMTUNE_ONLY cmake does not build it (a full build always
// has it, llmtune_tests depends on it).
#define REQUIRE_BINARY() \
  if (!std::filesystem::exists(LLMTUNE_BINARY)) GTEST_SKIP() << LLMTUNE_BINARY << " not built (LLMTUNE_ONLY build?)"
