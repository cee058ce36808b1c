// Attaching LoRA adapters to a Model the way PEFT's get_peft_model does (hf-semantics §1.3–1.10):
// adapter params, initialisation, scaling, what is trainable, modules_to_save, merge/unmerge,
// disable_adapter, print_trainable_parameters.
//
// modules_to_save: PEFT trains a deep copy and keeps the original module frozen. We train the
// model's own params in place and keep a frozen copy of their original values in
// Model::modules_to_save_originals; set_adapters_enabled(m, false) swaps the originals in (so the
// disabled model is the pristine base, as PEFT's disable_adapter gives), true swaps them back.
// Setting m.adapters_enabled directly skips that swap — use set_adapters_enabled.
#pragma once
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/model.h"
#include "peft/lora_config.h"

namespace llmtune {

// The config PEFT would actually use/save for this model: default target_modules for the
// architecture when None; "all-linear" resolved to module names (condensed to suffixes when >= 20,
// PEFT's _find_minimal_target_modules); fan_in_fan_out forced true for GPT-2 Conv1D targets;
// SEQ_CLS adds "classifier", "score" to modules_to_save. Idempotent. Validates.
LoraConfig resolve_lora_config(const Model& m, const LoraConfig& cfg);

// Wraps every target module: A [r, in] and B [out, r] params named "<module>.lora_A.weight" /
// "<module>.lora_B.weight", initialised per init_lora_weights (true: A ~ U(±1/√in), B = 0;
// "gaussian": A ~ N(0, (1/r)²), B = 0; false: A ~ U(±1/√in), B ~ U(±1/√r)), scaling alpha/r or
// alpha/√r (rank_pattern / alpha_pattern per module), dropout. Freezes every base param, makes the
// adapters trainable, biases per `bias`, modules_to_save params trainable (originals kept), then
// m.sync_grad_buffers(). Returns the resolved config (what save_adapter writes).
// Fails if the model already has adapters.
LoraConfig apply_lora(Model& m, const LoraConfig& cfg, Rng& rng);

// Same structure without initialising A/B (left zero) and without touching trainable flags;
// used by load_adapter before it copies the saved tensors in.
LoraConfig attach_lora_structure(Model& m, const LoraConfig& cfg);

// Sets which params are trainable after apply: adapters (unless `adapters_trainable` is false),
// biases per cfg.bias, modules_to_save; everything else frozen. Then m.sync_grad_buffers().
void set_lora_trainable(Model& m, const LoraConfig& resolved, bool adapters_trainable = true);

// Linear modules that carry an adapter, in model order.
std::vector<LinearModule*> lora_modules(Model& m);
std::vector<const LinearModule*> lora_modules(const Model& m);

// PEFT's exact line: "trainable params: 98,304 || all params: 70,524,928 || trainable%: 0.1394".
// Tied weights count once; all params include the adapters and the modules_to_save originals.
std::string trainable_parameters_string(const Model& m);
// Prints that line to stdout and returns it.
std::string print_trainable_parameters(const Model& m);

// PEFT disable_adapter(): enabled=false runs the base model only (merged adapters are unmerged
// first, modules_to_save originals swapped in); enabled=true restores.
void set_adapters_enabled(Model& m, bool enabled);

// Adapters off for a scope (the adapters-off reference model of LoRA RL), the previous state restored
// on the way out, exceptions included.
struct AdaptersOff {
  explicit AdaptersOff(Model& m) : model(m), was(m.adapters_enabled) { set_adapters_enabled(model, false); }
  ~AdaptersOff() { set_adapters_enabled(model, was); }
  AdaptersOff(const AdaptersOff&) = delete;
  AdaptersOff& operator=(const AdaptersOff&) = delete;
  Model& model;
  bool was;
};

// W += scaling·B·A (transposed for Conv1D) for every unmerged adapter; the branch is then skipped in
// forward. Merged adapters get no gradients (PEFT: training a merged model is unsupported).
void merge_lora(Model& m);
// W −= scaling·B·A for every merged adapter (exact up to f32 rounding, like PEFT).
void unmerge_lora(Model& m);
// PEFT merge_and_unload(): merge, then remove the adapter params and branches and keep the trained
// modules_to_save values (originals dropped), leaving a plain model for save_model().
void merge_and_unload(Model& m);
// PEFT unload(): removes every adapter (params and branches) without merging (merged ones are
// unmerged first) and puts the modules_to_save originals back. Biases trained with bias="all" /
// "lora_only" keep their trained values (no copy is kept, as in PEFT).
void remove_lora(Model& m);

}  // namespace llmtune
