// The files of a checkpoint-N folder (HF Trainer's layout plus llmtune_state.json) and the steps the
// Trainer and the RL checkpointer share around them: finding and rotating checkpoint folders, noticing
// an earlier run in output_dir, and reading a checkpoint back with one clear error per problem.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmtune {

inline constexpr const char* kOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kSchedulerFile = "scheduler.json";
inline constexpr const char* kRngFile = "rng_state.json";
inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kLlmtuneStateFile = "llmtune_state.json";
inline constexpr const char* kMetricsFile = "metrics.jsonl";

// checkpoint-N folders directly in output_dir, sorted by N ("" / missing dir → empty).
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir);
// Deletes the oldest checkpoint-N folders until at most `save_total_limit` remain (unset: keeps all).
void remove_oldest_checkpoints(const std::string& output_dir, std::optional<int64_t> save_total_limit);

// What an earlier run left in output_dir (checkpoint folders, metrics.jsonl, trainer_state.json), as a
// short comma-separated list for an error message; "" when none. Fails when output_dir is a file.
std::string previous_run_entries(const std::string& output_dir);
// The error for an output_dir that holds another run (`entries` from previous_run_entries).
[[noreturn]] void fail_output_dir_in_use(const std::string& output_dir, const std::string& entries);

// `file` of checkpoint folder `dir`, parsed; fails naming the folder when the file is missing.
nlohmann::json read_checkpoint_json(const std::string& dir, const char* file);
// Fails unless llmtune_state.json (`llmtune_state`, read from `dir`) was saved for `fingerprint`
// (model_fingerprint), naming the first line where the two differ.
void check_checkpoint_fingerprint(const std::string& dir, const nlohmann::json& llmtune_state,
                                  const std::string& fingerprint);
// trainer_state.json of `dir` with global_step (a non-negative integer) and log_history (a list) checked.
nlohmann::json read_checkpoint_trainer_state(const std::string& dir);

}  // namespace llmtune
