// PEFT's rules for which modules get a LoRA adapter (hf-semantics §1.2): target_modules lists
// (dot-anchored suffix), regex strings (full match), "all-linear", exclude_modules,
// layers_to_transform / layers_pattern, modules_to_save. Keys are Model module paths
// (LinearModule::name, e.g. "gpt_neox.layers.0.attention.query_key_value").
//
// Regexes use std::regex ECMAScript syntax instead of Python's `re`; the common subset (., *, +, ?,
// |, groups, classes, lazy quantifiers) behaves the same; Python-only syntax such as (?P<name>...)
// or lookbehind is rejected with a clear error.
#pragma once
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "model/model.h"
#include "peft/lora_config.h"

namespace llmtune {

// re.fullmatch(pattern, key) with ECMAScript syntax; a bad pattern is an Error naming `what`.
bool regex_full_match(const std::string& pattern, const std::string& key, const std::string& what);

// list: key == t or key ends with "." + t; regex: full match; none: false.
bool selector_matches(const ModuleSelector& s, const std::string& key, const std::string& what);

// The layer index PEFT extracts for layers_to_transform: re.match(r".*\.[^.]*\.(\d+)\.", key), or,
// with layers_pattern P, re.match(rf".*\.{P}\.(\d+)\.", key). The ".*" is GREEDY as in PEFT's source
// (hf-semantics §1.2 writes it lazily): with several numbered components the LAST one wins.
std::optional<int64_t> layer_index_of(const std::string& key, const std::optional<std::vector<std::string>>& layers_pattern);

// PEFT's modules_to_save rule: key matches (^|.*\.)NAME($|\..*) for some NAME (NAME taken literally).
bool matches_modules_to_save(const std::vector<std::string>& names, const std::string& key);

// Steps 1–5 of §1.2 for one module key: excluded? modules_to_save? target? layer filter?
// `cfg.target_modules` must be resolved (a list or a regex other than "all-linear").
bool is_lora_target(const LoraConfig& cfg, const std::string& key);

// The per-architecture default when target_modules is None (PEFT's
// TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
std::vector<std::string> default_target_modules(const ModelConfig& cfg);

// "GPTNeoX", "Llama", "Qwen2", "GPT2" (for messages).
std::string model_family_name(const ModelConfig& cfg);

// Every module path of the model in the sense of PyTorch named_modules() restricted to modules that
// own parameters and their parents (adapters excluded), plus the output head.
std::set<std::string> module_names(const Model& m);

// The last name component of every block linear, in model order, each once
// ("query_key_value, dense, dense_h_to_4h, dense_4h_to_h").
std::vector<std::string> linear_module_suffixes(const Model& m);

// "all-linear": every linear except the output head, full module names.
std::vector<std::string> all_linear_module_names(const Model& m);

// PEFT's _find_minimal_target_modules: the smallest set of dot-component suffixes that matches
// every target and no other module name. PEFT applies it when there are >= 20 targets.
std::set<std::string> find_minimal_target_modules(const std::vector<std::string>& targets,
                                                  const std::set<std::string>& other_module_names);

// The linear modules LoRA wraps, in model order. Errors (naming the config value and listing the
// model's linear modules) when nothing matches, when a match is not a linear layer, or when the
// output head is targeted.
std::vector<LinearModule*> find_lora_targets(Model& m, const LoraConfig& resolved);

}  // namespace llmtune
