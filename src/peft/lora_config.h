// LoraConfig: PEFT's LoraConfig fields and defaults (hf-semantics §1.1), validation, and the
// adapter_config.json reader/writer (§2.2).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmtune {

// A module selector the way PEFT accepts it: absent, a list of names (dot-anchored suffix match),
// or one string (a regex that must match the whole module name; "all-linear" is special).
struct ModuleSelector {
  enum class Kind { None, List, Regex };
  Kind kind = Kind::None;
  std::vector<std::string> names;  // Kind::List
  std::string regex;               // Kind::Regex (may be "all-linear", case-insensitive)

  static ModuleSelector list(std::vector<std::string> names);
  static ModuleSelector pattern(std::string regex);
  bool is_none() const { return kind == Kind::None; }
  bool is_all_linear() const;  // the string "all-linear", any case
  std::string describe() const;  // Python repr: "['a', 'b']" or "'regex'" or "None"
};

enum class LoraBias { None, All, LoraOnly };
enum class LoraInit { Default, Random, Gaussian };  // true, false, "gaussian"

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8;
  ModuleSelector target_modules;
  ModuleSelector exclude_modules;
  double lora_dropout = 0.0;
  bool fan_in_fan_out = false;
  LoraBias bias = LoraBias::None;
  bool use_rslora = false;
  std::optional<std::vector<std::string>> modules_to_save;
  LoraInit init_lora_weights = LoraInit::Default;
  std::optional<std::vector<int64_t>> layers_to_transform;
  bool layers_to_transform_is_int = false;  // written back as a single int, as given
  std::optional<std::vector<std::string>> layers_pattern;
  bool layers_pattern_is_string = false;
  std::vector<std::pair<std::string, int64_t>> rank_pattern;   // pattern → r (first match wins)
  std::vector<std::pair<std::string, double>> alpha_pattern;   // pattern → alpha
  std::string task_type = "CAUSAL_LM";  // or "SEQ_CLS"
  std::optional<std::string> base_model_name_or_path;
  std::optional<std::string> revision;
  bool inference_mode = false;
  bool use_dora = false;  // must stay false: DoRA is not supported yet

  // Throws llmtune::Error naming the field for anything PEFT would reject or we cannot do.
  void validate() const;

  // adapter_config.json content (PEFT's json.dumps(indent=2, sort_keys=True) shape, + "\n"):
  // the core keys of hf-semantics §2.2, inference_mode true, peft_type "LORA", target_modules as a
  // sorted list (PEFT writes a set in arbitrary order), exclude_modules only when set (older PEFT
  // rejects unknown keys). Call on a resolved config (lora.h resolve_lora_config) to get
  // fan_in_fan_out / "all-linear" the way PEFT writes them.
  nlohmann::json to_json() const;
  std::string to_json_string() const;

  // Reads a config written by PEFT (any version). Unknown keys are ignored and reported in
  // `warnings`; peft_type must be "LORA"; errors name `source` and the field.
  static LoraConfig from_json(const nlohmann::json& j, const std::string& source,
                              std::vector<std::string>* warnings = nullptr);
};

const char* lora_bias_name(LoraBias b);  // "none" / "all" / "lora_only"
LoraBias parse_lora_bias(const std::string& s, const std::string& source);

}  // namespace llmtune
