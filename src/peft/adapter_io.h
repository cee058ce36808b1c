// PEFT adapter folders (hf-semantics §2): adapter_config.json + adapter_model.safetensors (+ a short
// README.md), written so PEFT's PeftModel.from_pretrained loads them, and read back from folders
// PEFT wrote.
#pragma once
#include <string>
#include <vector>

#include "model/model.h"
#include "peft/lora_config.h"

namespace llmtune {

// "base_model.model." + in-memory param name (e.g. "...query_key_value.lora_A.weight").
std::string peft_key(const std::string& param_name);

// The tensors save_adapter writes, PEFT key → value (F32): lora_A/lora_B of every adapter, the
// biases for bias="all"/"lora_only", and every modules_to_save param (its trained value, also while
// adapters are disabled).
std::vector<std::pair<std::string, Tensor>> adapter_state_dict(const Model& m, const LoraConfig& resolved);

// Writes <dir>/adapter_config.json (resolve_lora_config(m, cfg).to_json_string(), with
// base_model_name_or_path defaulting to m.source_dir), <dir>/adapter_model.safetensors (metadata
// {"format": "pt"}) and <dir>/README.md. Each file is replaced atomically; other files already in
// `dir` (e.g. a Trainer checkpoint's optimizer state) are left alone.
void save_adapter(const Model& m, const LoraConfig& cfg, const std::string& dir);

// Reads <dir>/adapter_config.json and <dir>/adapter_model.safetensors and attaches exactly those
// adapters (no random init). Accepts PEFT's in-memory key spelling with the adapter name
// ("lora_A.default.weight", "modules_to_save.default."). Every tensor in the file must be used and
// every expected one present with the right shape; errors name the file and the key. With
// trainable=true the adapters (and bias / modules_to_save params per the config) are trainable,
// the rest frozen (for resuming training); false freezes everything (PEFT's default is_trainable=False).
// Unknown config keys are reported in `warnings`. On error the model is left as it was.
LoraConfig load_adapter(Model& m, const std::string& dir, bool trainable = true,
                        std::vector<std::string>* warnings = nullptr);

}  // namespace llmtune
