// The options of `llmtune train` (Hugging Face names: TrainingArguments + LoraConfig + data keys)
// and their translation into the structs of the peft / data / train layers.
#pragma once
#include <string>
#include <vector>

#include "cli/options.h"
#include "data/dataset.h"
#include "peft/freeze.h"
#include "peft/lora_config.h"
#include "train/trainer.h"

namespace llmtune::cli {

struct TrainPlan {
  std::string model_dir, train_file, eval_file;
  std::string method;  // lora | freeze | full
  LoraConfig lora;
  FreezeOptions freeze;
  TrainingArguments args;
  DatasetOptions data;
  int64_t max_seq_length = 1024;
  bool packing = false;
  std::vector<std::string> sample_prompts;
};

void add_train_options(CommandSpec& s);
TrainPlan resolve_train_plan(const ResolvedOptions& o);
// A relative path that does not exist from the current folder but does from the llmtune source
// tree (the bundled model and data) resolves there, so the main job runs from any folder.
std::string resolve_bundled_path(const std::string& path);
std::string default_config_path();

}  // namespace llmtune::cli
