// One error type for everything a user can get wrong (bad files, bad options, bad data).
// The CLI catches it at the top, prints the message once and exits nonzero — never a crash.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace llmtune {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Concatenates its arguments with operator<< (g++ 12 has no <format>).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

#define LLMTUNE_CHECK(cond, ...)                 \
  do {                                           \
    if (!(cond)) ::llmtune::fail(__VA_ARGS__);   \
  } while (0)

}  // namespace llmtune
