// A thin facade with the names a PEFT + transformers user knows (get_peft_model, PeftModel
// .save_pretrained / .from_pretrained / .print_trainable_parameters, Trainer(...).train(), generate),
// over apply_lora / save_adapter / load_adapter / llmtune::Trainer. examples/peft_style.cpp uses it.
// Nothing here adds behaviour: every call forwards to the functions named in its comment.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"
#include "peft/lora_config.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace llmtune::hf {

// AutoModelForCausalLM.from_pretrained(dir) → load_model(dir).
Model from_pretrained(const std::string& dir);

// The model with adapters attached (it refers to the Model, which must outlive it).
struct PeftModel {
  Model* model = nullptr;
  LoraConfig peft_config;  // resolved (what adapter_config.json holds)

  // print_trainable_parameters(): PEFT's line, printed and returned.
  std::string print_trainable_parameters() const;
  // save_pretrained(dir): adapter_config.json + adapter_model.safetensors (save_adapter).
  void save_pretrained(const std::string& dir) const;
  // PeftModel.from_pretrained(base, dir, is_trainable): load_adapter onto `base`.
  static PeftModel from_pretrained(Model& base, const std::string& dir, bool is_trainable = false);
};

// get_peft_model(model, config): apply_lora with the LoRA init drawn from `seed`.
PeftModel get_peft_model(Model& model, const LoraConfig& config, uint64_t seed = 42);

// A text (a .txt-style corpus) tokenised and cut into max_seq_length chunks (tokenize_plain_text).
Dataset dataset_from_text(const Tokenizer& tokenizer, std::string_view text, int64_t max_seq_length);

// Trainer(model=..., args=..., train_dataset=..., eval_dataset=..., processing_class=tokenizer).train().
// Log entries are printed as HF prints them (one JSON object per line) and written to
// output_dir/metrics.jsonl; checkpoints hold the adapter (or the full model without adapters).
struct Trainer {
  PeftModel& model;
  TrainingArguments args;
  const Dataset& train_dataset;
  const Dataset* eval_dataset = nullptr;
  const Tokenizer* processing_class = nullptr;  // its pad/eos id pads the batches (else id 0)
  int64_t max_seq_length = 1024;
  bool print_logs = true;

  // Runs llmtune::Trainer::train and returns its summary entry (train_loss, train_runtime, ...).
  nlohmann::json train();
};

// model.generate(**tokenizer(prompt), max_new_tokens, do_sample=False) then decode: greedy, the
// prompt followed by the continuation (special tokens skipped).
std::string generate(Model& model, const Tokenizer& tokenizer, const std::string& prompt, int64_t max_new_tokens);

}  // namespace llmtune::hf
