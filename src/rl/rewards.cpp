// Built-in rule rewards and the external reward command (JSONL on stdin → one float per line on stdout).
#include "rl/rewards.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace llmtune::rl {

RewardSpec parse_reward_spec(const std::string& spec) {
  RewardSpec r;
  r.source = spec;
  const size_t colon = spec.find(':');
  const std::string kind = spec.substr(0, colon);
  const std::string rest = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind == "keyword") {
    r.kind = RewardKind::keyword;
    if (rest.empty()) fail("reward '", spec, "': keyword needs a word, e.g. keyword:cat");
    r.text = rest;
  } else if (kind == "regex") {
    r.kind = RewardKind::regex;
    try {
      std::regex test(rest);
    } catch (const std::regex_error& e) {
      fail("reward '", spec, "': invalid regex (", e.what(), ")");
    }
    r.text = rest;
  } else if (kind == "length") {
    r.kind = RewardKind::length;
    char* end = nullptr;
    r.min_len = std::strtoll(rest.c_str(), &end, 10);
    if (*end != ':') fail("reward '", spec, "': expected length:MIN:MAX (characters)");
    const char* s2 = end + 1;
    r.max_len = std::strtoll(s2, &end, 10);
    if (*end != '\0' || end == s2 || r.min_len < 0 || r.max_len < r.min_len)
      fail("reward '", spec, "': expected length:MIN:MAX with 0 <= MIN <= MAX");
  } else if (kind == "gsm8k") {
    r.kind = RewardKind::gsm8k;
  } else if (kind == "command") {
    r.kind = RewardKind::command;
    if (rest.empty()) fail("reward '", spec, "': command needs a shell command, e.g. command:python3 score.py");
    r.text = rest;
  } else {
    fail("reward '", spec, "': unknown kind '", kind, "' (keyword:WORD, regex:PATTERN, length:MIN:MAX, gsm8k, command:CMD)");
  }
  return r;
}

std::string gsm8k_final_answer(const std::string& text) {
  const size_t at = text.rfind("####");
  if (at == std::string::npos) return "";
  std::string out;
  size_t i = at + 4;
  while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) i++;
  for (; i < text.size(); i++) {
    const char c = text[i];
    if (c == ',') continue;
    if ((c >= '0' && c <= '9') || c == '.' || (c == '-' && out.empty())) out += c;
    else break;
  }
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

namespace {

std::vector<float> run_command(const RewardSpec& spec, const std::vector<RewardInput>& inputs) {
  std::string payload;
  for (const auto& in : inputs) payload += nlohmann::json{{"prompt", in.prompt}, {"response", in.response}}.dump() + "\n";
  char path[] = "/tmp/llmtune_reward_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) fail("reward '", spec.source, "': cannot create a temporary file for the command's input");
  const bool wrote = write(fd, payload.data(), payload.size()) == ssize_t(payload.size());
  close(fd);
  if (!wrote) {
    unlink(path);
    fail("reward '", spec.source, "': cannot write the command's input");
  }
  const std::string cmd = "( " + spec.text + " ) < " + path;
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    unlink(path);
    fail("reward '", spec.source, "': cannot start the command");
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  unlink(path);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("reward command '", spec.text, "' failed (exit status ", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
         "): fix the command; no update was made for this batch");
  std::vector<float> r;
  size_t start = 0;
  int64_t line = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::string s = out.substr(start, end - start);
    start = end + 1;
    ++line;
    while (!s.empty() && (s.back() == '\r' || s.back() == ' ')) s.pop_back();
    if (s.empty()) continue;
    errno = 0;
    char* e = nullptr;
    const double v = std::strtod(s.c_str(), &e);
    if (e == s.c_str() || *e != '\0' || errno == ERANGE)
      fail("reward command '", spec.text, "': output line ", line, " is not a number: '", s,
           "' (print one float per input line)");
    if (!std::isfinite(v))
      fail("reward command '", spec.text, "': output line ", line, " is ", s, " (rewards must be finite)");
    r.push_back(float(v));
  }
  if (r.size() != inputs.size())
    fail("reward command '", spec.text, "' printed ", r.size(), " numbers for ", inputs.size(),
         " responses (one float per line, in input order)");
  return r;
}

}  // namespace

std::vector<float> compute_rewards(const std::vector<RewardSpec>& specs, const std::vector<RewardInput>& inputs) {
  if (specs.empty()) fail("no reward given: pass --reward (keyword:WORD, regex:PATTERN, length:MIN:MAX, gsm8k, command:CMD)");
  std::vector<float> total(inputs.size(), 0.f);
  for (const auto& spec : specs) {
    if (spec.kind == RewardKind::command) {
      std::vector<float> r = run_command(spec, inputs);
      for (size_t i = 0; i < r.size(); i++) total[i] += r[i];
      continue;
    }
    std::regex re;
    if (spec.kind == RewardKind::regex) re = std::regex(spec.text);
    for (size_t i = 0; i < inputs.size(); i++) {
      const std::string& resp = inputs[i].response;
      float v = 0;
      switch (spec.kind) {
        case RewardKind::keyword: v = resp.find(spec.text) != std::string::npos; break;
        case RewardKind::regex: v = std::regex_search(resp, re); break;
        case RewardKind::length: v = int64_t(resp.size()) >= spec.min_len && int64_t(resp.size()) <= spec.max_len; break;
        case RewardKind::gsm8k: {
          if (inputs[i].answer.empty())
            fail("reward 'gsm8k': prompt ", i, " has no \"answer\" field to compare with");
          std::string want = inputs[i].answer.find("####") != std::string::npos ? gsm8k_final_answer(inputs[i].answer)
                                                                                 : inputs[i].answer;
          std::string got = gsm8k_final_answer(resp);
          v = !got.empty() && got == want;
          break;
        }
        case RewardKind::command: break;
      }
      total[i] += v;
    }
  }
  for (size_t i = 0; i < total.size(); i++)
    if (!std::isfinite(total[i])) fail("reward of response ", i, " is ", total[i], ": rewards must be finite");
  return total;
}

}  // namespace llmtune::rl
