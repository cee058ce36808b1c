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
#include "rl/reward_model.h"

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
  } else if (kind == "model") {
    r.kind = RewardKind::model;
    if (rest.empty()) fail("reward '", spec, "': model needs a folder, e.g. model:outputs/reward_model");
    r.text = rest;
    try {
      r.model = load_reward_model(rest);
    } catch (const Error& e) {
      fail("reward '", spec, "': ", e.what());
    }
  } else {
    fail("reward '", spec, "': unknown kind '", kind,
         "' (keyword:WORD, regex:PATTERN, length:MIN:MAX, gsm8k, command:CMD, model:DIR)");
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
  if (status != -1 && WIFSIGNALED(status))
    fail("reward command '", spec.text, "' was killed by signal ", WTERMSIG(status),
         ": fix the command; no update was made for this batch");
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("reward command '", spec.text, "' failed (exit status ", status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1,
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

std::vector<std::vector<float>> compute_reward_terms(const std::vector<RewardSpec>& specs,
                                                     const std::vector<RewardInput>& inputs) {
  if (specs.empty())
    fail("no reward given: pass --reward (keyword:WORD, regex:PATTERN, length:MIN:MAX, gsm8k, command:CMD, model:DIR)");
  std::vector<std::vector<float>> terms;
  for (const auto& spec : specs) {
    std::vector<float> r(inputs.size(), 0.f);
    if (spec.kind == RewardKind::command) {
      r = run_command(spec, inputs);
    } else if (spec.kind == RewardKind::model) {
      if (!spec.model) fail("reward '", spec.source, "': the reward model is not loaded (use parse_reward_spec)");
      r = score_with_reward_model(*spec.model, inputs, spec.source);
    } else {
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
              fail("reward 'gsm8k': prompt ", i, " of the batch has no \"answer\" field to compare with (give every "
                   "prompt row an \"answer\")");
            std::string want = inputs[i].answer.find("####") != std::string::npos ? gsm8k_final_answer(inputs[i].answer)
                                                                                   : inputs[i].answer;
            std::string got = gsm8k_final_answer(resp);
            v = !got.empty() && got == want;
            break;
          }
          case RewardKind::command:
          case RewardKind::model: break;
        }
        r[i] = v;
      }
    }
    for (size_t i = 0; i < r.size(); i++)
      if (!std::isfinite(r[i]))
        fail("reward '", spec.source, "' gave ", r[i], " for response ", i, " of the batch: rewards must be finite");
    terms.push_back(std::move(r));
  }
  return terms;
}

std::vector<float> compute_rewards(const std::vector<RewardSpec>& specs, const std::vector<RewardInput>& inputs) {
  const std::vector<std::vector<float>> terms = compute_reward_terms(specs, inputs);
  std::vector<float> total(inputs.size(), 0.f);
  for (size_t k = 0; k < specs.size(); k++) {
    const bool unit = specs[k].weight == 1.0;
    for (size_t i = 0; i < total.size(); i++)
      total[i] += unit ? terms[k][i] : float(specs[k].weight * double(terms[k][i]));
  }
  for (size_t i = 0; i < total.size(); i++)
    if (!std::isfinite(total[i]))
      fail("the total reward of response ", i, " of the batch is ", total[i],
           " (the weighted sum overflowed): rewards must be finite");
  return total;
}

}  // namespace llmtune::rl
