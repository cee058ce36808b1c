// checkpoint-N folders: listing, rotating, the earlier-run check and validated reads (checkpoint_files.h).
#include "train/checkpoint_files.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "io/json_file.h"

namespace llmtune {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// "checkpoint-123" → 123; anything else → -1.
int64_t checkpoint_number(const std::string& name) {
  static const std::string prefix = "checkpoint-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t n = 0;
  for (size_t i = prefix.size(); i < name.size(); i++) {
    if (name[i] < '0' || name[i] > '9' || n > (int64_t(1) << 50)) return -1;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

// The first line where two fingerprints differ, for the error message.
std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  while (true) {
    const bool ha = bool(std::getline(sa, la)), hb = bool(std::getline(sb, lb));
    if (!ha && !hb) return "";
    if (!ha) la = "(nothing)";
    if (!hb) lb = "(nothing)";
    if (!ha || !hb || la != lb) return cat("checkpoint has '", la, "', this model has '", lb, "'");
  }
}

}  // namespace

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (output_dir.empty() || !fs::is_directory(output_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    if (!entry.is_directory(ec)) continue;
    const int64_t n = checkpoint_number(entry.path().filename().string());
    if (n >= 0) out.emplace_back(n, entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void remove_oldest_checkpoints(const std::string& output_dir, std::optional<int64_t> save_total_limit) {
  if (!save_total_limit) return;
  auto cks = list_checkpoints(output_dir);
  const int64_t excess = int64_t(cks.size()) - *save_total_limit;
  for (int64_t i = 0; i < excess; i++) {
    std::error_code ec;
    fs::remove_all(cks[size_t(i)].second, ec);
    if (ec) fail("cannot remove old checkpoint ", cks[size_t(i)].second, ": ", ec.message());
  }
}

std::string previous_run_entries(const std::string& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_directory(out, ec)) fail("output_dir ", out, " exists and is not a folder");
  std::vector<std::string> found;
  for (auto& [n, path] : list_checkpoints(out)) found.push_back(fs::path(path).filename().string());
  for (const char* f : {kMetricsFile, kTrainerStateFile})
    if (fs::exists(join_path(out, f), ec)) found.push_back(f);
  std::string list;
  for (size_t i = 0; i < found.size() && i < 4; i++) list += (i ? ", " : "") + found[i];
  if (found.size() > 4) list += cat(", … (", found.size(), " entries)");
  return list;
}

void fail_output_dir_in_use(const std::string& out, const std::string& entries) {
  fail("output_dir ", out, " already holds another run (", entries,
       "); pass resume_from_checkpoint to continue it, or overwrite_output_dir to start over (this deletes its "
       "checkpoints and metrics)");
}

json read_checkpoint_json(const std::string& dir, const char* file) {
  const std::string path = join_path(dir, file);
  if (!fs::exists(path)) fail("checkpoint ", dir, " has no ", file, " (not a complete llmtune checkpoint)");
  return read_json_file(path);
}

void check_checkpoint_fingerprint(const std::string& dir, const json& ls, const std::string& fingerprint) {
  if (!ls.contains("model_fingerprint") || !ls["model_fingerprint"].is_string())
    fail(join_path(dir, kLlmtuneStateFile), ": field 'model_fingerprint' is missing");
  const std::string fp = ls["model_fingerprint"].get<std::string>();
  if (fp != fingerprint)
    fail("cannot resume from ", dir, ": it was saved for a different model or adapter (",
         first_difference(fp, fingerprint), ")");
}

json read_checkpoint_trainer_state(const std::string& dir) {
  json ts = read_checkpoint_json(dir, kTrainerStateFile);
  const std::string ts_name = join_path(dir, kTrainerStateFile);
  if (!ts.contains("global_step") || !ts["global_step"].is_number_integer() || ts["global_step"].get<int64_t>() < 0)
    fail(ts_name, ": field 'global_step' is missing or not a non-negative integer");
  if (!ts.contains("log_history") || !ts["log_history"].is_array())
    fail(ts_name, ": field 'log_history' is missing or not a list");
  return ts;
}

}  // namespace llmtune
