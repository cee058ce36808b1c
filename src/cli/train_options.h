// The options of `llmtune train` (Hugging Face names: TrainingArguments + LoraConfig + data keys)
// and their translation into the structs of the peft / data / train layers.
#pragma once
#include <string>
#include <vector>

#include "cli/options.h"
#include "data/dataset.h"
#include "model/model.h"
#include "model/quantize_model.h"
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
  QuantizeOptions quant;  // k-bit frozen base (load_in_4bit / load_in_8bit)
  bool bf16 = false;      // HF bf16=True (fp16=True maps here): frozen weights in bf16, bf16 products
  // Sequence classification / reward modelling (cli/cmd_train_seqcls.cpp).
  std::string task_type = "CAUSAL_LM";  // CAUSAL_LM | SEQ_CLS
  std::string task = "lm";              // lm | classification | reward
  int64_t num_labels = 0;               // 0 = from the data (reward: 1)
};

void add_train_options(CommandSpec& s);
TrainPlan resolve_train_plan(const ResolvedOptions& o);
// A relative path that does not exist from the current folder but does from the llmtune source
// tree (the bundled model and data) resolves there, so the main job runs from any folder.
std::string resolve_bundled_path(const std::string& path);
std::string default_config_path();
// Loads what a checkpoint's save_model wrote back into `m`: the adapter (lora) or every parameter.
void load_trained_weights(Model& m, bool lora, const std::string& dir);

}  // namespace llmtune::cli
