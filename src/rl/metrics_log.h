// The RL trainers' log sink: each entry goes to output_dir/metrics.jsonl (one flushed line, the
// contract the run report reads), to the run's log_history and to the caller's on_log hook.
#pragma once
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmtune {

struct MetricsLog {
  // output_dir "" = no file. history and on_log must outlive the log.
  MetricsLog(const std::string& output_dir, std::vector<nlohmann::json>& history,
             const std::function<void(const nlohmann::json&)>& on_log);
  void emit(const nlohmann::json& entry);
  // Resume: rewrites a checkpoint's history into metrics.jsonl and log_history WITHOUT calling on_log
  // (the caller already showed those lines in the interrupted run).
  void replay(const std::vector<nlohmann::json>& entries);

 private:
  void record(const nlohmann::json& entry);  // file + history
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file_;
  std::vector<nlohmann::json>& history_;
  const std::function<void(const nlohmann::json&)>& on_log_;
};

}  // namespace llmtune
