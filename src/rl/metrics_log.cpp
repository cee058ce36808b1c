// MetricsLog: metrics.jsonl + log_history + on_log for the RL trainers.
#include "rl/metrics_log.h"

#include <filesystem>

#include "core/error.h"

namespace llmtune {

MetricsLog::MetricsLog(const std::string& output_dir, std::vector<nlohmann::json>& history,
                       const std::function<void(const nlohmann::json&)>& on_log)
    : file_(nullptr, &std::fclose), history_(history), on_log_(on_log) {
  if (output_dir.empty()) return;
  std::filesystem::create_directories(output_dir);
  file_.reset(std::fopen((output_dir + "/metrics.jsonl").c_str(), "w"));
  if (!file_) fail(output_dir, "/metrics.jsonl: cannot write");
}

void MetricsLog::record(const nlohmann::json& entry) {
  if (file_) {
    std::fprintf(file_.get(), "%s\n", entry.dump().c_str());
    std::fflush(file_.get());
  }
  history_.push_back(entry);
}

void MetricsLog::emit(const nlohmann::json& entry) {
  record(entry);
  if (on_log_) on_log_(entry);
}

void MetricsLog::replay(const std::vector<nlohmann::json>& entries) {
  for (const nlohmann::json& e : entries) record(e);
}

}  // namespace llmtune
