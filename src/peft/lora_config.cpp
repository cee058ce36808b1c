// LoraConfig validation and adapter_config.json reading/writing the way PEFT does it.
#include "peft/lora_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "core/error.h"

namespace llmtune {

using nlohmann::json;

ModuleSelector ModuleSelector::list(std::vector<std::string> names) {
  ModuleSelector s;
  s.kind = Kind::List;
  s.names = std::move(names);
  return s;
}

ModuleSelector ModuleSelector::pattern(std::string regex) {
  ModuleSelector s;
  s.kind = Kind::Regex;
  s.regex = std::move(regex);
  return s;
}

bool ModuleSelector::is_all_linear() const {
  if (kind != Kind::Regex) return false;
  std::string low = regex;
  for (char& c : low) c = char(std::tolower(static_cast<unsigned char>(c)));
  return low == "all-linear";
}

namespace {
std::string py_str(const std::string& s) { return "'" + s + "'"; }
}  // namespace

std::string ModuleSelector::describe() const {
  if (kind == Kind::None) return "None";
  if (kind == Kind::Regex) return py_str(regex);
  std::string out = "[";
  for (size_t i = 0; i < names.size(); i++) out += (i ? ", " : "") + py_str(names[i]);
  return out + "]";
}

const char* lora_bias_name(LoraBias b) {
  switch (b) {
    case LoraBias::None: return "none";
    case LoraBias::All: return "all";
    case LoraBias::LoraOnly: return "lora_only";
  }
  return "none";
}

LoraBias parse_lora_bias(const std::string& s, const std::string& source) {
  if (s == "none") return LoraBias::None;
  if (s == "all") return LoraBias::All;
  if (s == "lora_only") return LoraBias::LoraOnly;
  fail(source, ": field 'bias' must be \"none\", \"all\" or \"lora_only\" (got \"", s, "\")");
}

void LoraConfig::validate() const {
  if (r <= 0) fail("LoRA config: r must be > 0 (got ", r, ")");
  if (!std::isfinite(lora_alpha)) fail("LoRA config: lora_alpha must be a finite number");
  if (!(lora_dropout >= 0.0 && lora_dropout < 1.0))
    fail("LoRA config: lora_dropout must be in [0, 1) (got ", lora_dropout, ")");
  if (use_dora) fail("LoRA config: DoRA is not supported yet (use_dora must be false)");
  if (task_type != "CAUSAL_LM" && task_type != "SEQ_CLS")
    fail("LoRA config: task_type '", task_type, "' is not supported (use CAUSAL_LM or SEQ_CLS)");
  if (target_modules.kind == ModuleSelector::Kind::List && target_modules.names.empty())
    fail("LoRA config: target_modules is an empty list; give module names, a regex or \"all-linear\"");
  if (target_modules.kind == ModuleSelector::Kind::Regex && target_modules.regex.empty())
    fail("LoRA config: target_modules is an empty string");
  // PEFT: layers_to_transform / layers_pattern only work with list-style target_modules.
  if (layers_to_transform && target_modules.kind == ModuleSelector::Kind::Regex)
    fail("LoRA config: layers_to_transform cannot be used when target_modules is a str (",
         target_modules.describe(), "); give target_modules as a list of names");
  if (layers_pattern && target_modules.kind == ModuleSelector::Kind::Regex)
    fail("LoRA config: layers_pattern cannot be used when target_modules is a str (",
         target_modules.describe(), ")");
  if (layers_pattern && !layers_to_transform)
    fail("LoRA config: layers_pattern is only used together with layers_to_transform; set both or neither");
  if (layers_to_transform)
    for (int64_t i : *layers_to_transform)
      if (i < 0) fail("LoRA config: layers_to_transform holds a negative layer index (", i, ")");
  for (auto& [pat, rr] : rank_pattern)
    if (rr <= 0) fail("LoRA config: rank_pattern['", pat, "'] must be > 0 (got ", rr, ")");
}

json LoraConfig::to_json() const {
  json j = json::object();
  auto opt_str = [](const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); };
  auto selector = [](const ModuleSelector& s) -> json {
    if (s.kind == ModuleSelector::Kind::None) return nullptr;
    if (s.kind == ModuleSelector::Kind::Regex) return s.regex;
    std::set<std::string> uniq(s.names.begin(), s.names.end());  // PEFT keeps a set
    return json(std::vector<std::string>(uniq.begin(), uniq.end()));
  };
  auto number = [](double x) -> json {
    if (x == std::floor(x) && std::fabs(x) < 9e15) return int64_t(x);  // Python int stays int
    return x;
  };
  json alpha = json::object(), rank = json::object();
  for (auto& [k, v] : alpha_pattern) alpha[k] = number(v);
  for (auto& [k, v] : rank_pattern) rank[k] = v;
  j["alpha_pattern"] = alpha;
  j["auto_mapping"] = nullptr;
  j["base_model_name_or_path"] = opt_str(base_model_name_or_path);
  j["bias"] = lora_bias_name(bias);
  if (!exclude_modules.is_none()) j["exclude_modules"] = selector(exclude_modules);
  j["fan_in_fan_out"] = fan_in_fan_out;
  j["inference_mode"] = true;  // PEFT forces true for the write
  switch (init_lora_weights) {
    case LoraInit::Default: j["init_lora_weights"] = true; break;
    case LoraInit::Random: j["init_lora_weights"] = false; break;
    case LoraInit::Gaussian: j["init_lora_weights"] = "gaussian"; break;
  }
  if (!layers_pattern) j["layers_pattern"] = nullptr;
  else if (layers_pattern_is_string && layers_pattern->size() == 1) j["layers_pattern"] = (*layers_pattern)[0];
  else j["layers_pattern"] = *layers_pattern;
  if (!layers_to_transform) j["layers_to_transform"] = nullptr;
  else if (layers_to_transform_is_int && layers_to_transform->size() == 1) j["layers_to_transform"] = (*layers_to_transform)[0];
  else j["layers_to_transform"] = *layers_to_transform;
  j["lora_alpha"] = number(lora_alpha);
  j["lora_dropout"] = lora_dropout;
  j["modules_to_save"] = modules_to_save ? json(*modules_to_save) : json(nullptr);
  j["peft_type"] = "LORA";
  j["r"] = r;
  j["rank_pattern"] = rank;
  j["revision"] = opt_str(revision);
  j["target_modules"] = selector(target_modules);
  j["task_type"] = task_type;
  j["use_dora"] = use_dora;
  j["use_rslora"] = use_rslora;
  return j;
}

std::string LoraConfig::to_json_string() const {
  // indent=2 and ensure_ascii like Python's json.dumps; nlohmann objects are key-sorted.
  return to_json().dump(2, ' ', true) + "\n";
}

namespace {

// Keys current or older PEFT writes that we accept silently when they hold their neutral value.
const std::set<std::string>& neutral_keys() {
  static const std::set<std::string> k = {
      "auto_mapping", "peft_version", "megatron_core", "qalora_group_size", "ensure_weight_tying",
      "loftq_config", "eva_config", "corda_config", "megatron_config", "arrow_config", "runtime_config",
      "layer_replication", "target_parameters", "trainable_token_indices", "lora_bias", "use_qalora",
      "alora_invocation_tokens", "use_bdlora", "bdlora_config", "lora_ga_config"};
  return k;
}

bool is_neutral(const json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_object() && v.empty()) ||
         (v.is_array() && v.empty());
}

}  // namespace

LoraConfig LoraConfig::from_json(const json& j, const std::string& src, std::vector<std::string>* warnings) {
  if (!j.is_object()) fail(src, ": expected a JSON object");
  auto it_type = j.find("peft_type");
  if (it_type == j.end() || !it_type->is_string())
    fail(src, ": field 'peft_type' is missing (not a PEFT adapter config?)");
  if (it_type->get<std::string>() != "LORA")
    fail(src, ": peft_type is \"", it_type->get<std::string>(), "\"; only LORA adapters are supported");

  LoraConfig c;
  auto type_err = [&](const std::string& key, const char* want, const json& v) {
    fail(src, ": field '", key, "' must be ", want, " (got ", v.dump(), ")");
  };
  auto get_selector = [&](const std::string& key, const json& v) -> ModuleSelector {
    if (v.is_null()) return {};
    if (v.is_string()) return ModuleSelector::pattern(v.get<std::string>());
    if (v.is_array()) {
      std::vector<std::string> names;
      for (auto& e : v) {
        if (!e.is_string()) type_err(key, "a list of strings, a string or null", v);
        names.push_back(e.get<std::string>());
      }
      return ModuleSelector::list(std::move(names));
    }
    type_err(key, "a list of strings, a string or null", v);
    return {};
  };

  for (auto& [key, v] : j.items()) {
    if (key == "peft_type") continue;
    if (key == "r") {
      if (!v.is_number_integer()) type_err(key, "an integer", v);
      c.r = v.get<int64_t>();
    } else if (key == "lora_alpha") {
      if (!v.is_number()) type_err(key, "a number", v);
      c.lora_alpha = v.get<double>();
    } else if (key == "target_modules") {
      c.target_modules = get_selector(key, v);
    } else if (key == "exclude_modules") {
      c.exclude_modules = get_selector(key, v);
    } else if (key == "lora_dropout") {
      if (!v.is_number()) type_err(key, "a number", v);
      c.lora_dropout = v.get<double>();
    } else if (key == "fan_in_fan_out") {
      if (!v.is_boolean()) type_err(key, "true or false", v);
      c.fan_in_fan_out = v.get<bool>();
    } else if (key == "bias") {
      if (!v.is_string()) type_err(key, "a string", v);
      c.bias = parse_lora_bias(v.get<std::string>(), src);
    } else if (key == "use_rslora") {
      if (!v.is_boolean()) type_err(key, "true or false", v);
      c.use_rslora = v.get<bool>();
    } else if (key == "modules_to_save") {
      if (v.is_null()) continue;
      if (!v.is_array()) type_err(key, "a list of strings or null", v);
      std::vector<std::string> names;
      for (auto& e : v) {
        if (!e.is_string()) type_err(key, "a list of strings or null", v);
        names.push_back(e.get<std::string>());
      }
      c.modules_to_save = std::move(names);
    } else if (key == "init_lora_weights") {
      if (v.is_boolean()) c.init_lora_weights = v.get<bool>() ? LoraInit::Default : LoraInit::Random;
      else if (v.is_string() && v.get<std::string>() == "gaussian") c.init_lora_weights = LoraInit::Gaussian;
      else
        fail(src, ": init_lora_weights ", v.dump(),
             " is not supported (supported: true, false, \"gaussian\"; PiSSA/OLoRA/LoftQ/EVA/CorDA change the "
             "base weights and are not implemented)");
    } else if (key == "layers_to_transform") {
      if (v.is_null()) continue;
      std::vector<int64_t> idx;
      if (v.is_number_integer()) {
        idx.push_back(v.get<int64_t>());
        c.layers_to_transform_is_int = true;
      } else if (v.is_array()) {
        for (auto& e : v) {
          if (!e.is_number_integer()) type_err(key, "an integer, a list of integers or null", v);
          idx.push_back(e.get<int64_t>());
        }
      } else {
        type_err(key, "an integer, a list of integers or null", v);
      }
      c.layers_to_transform = std::move(idx);
    } else if (key == "layers_pattern") {
      if (v.is_null()) continue;
      std::vector<std::string> pats;
      if (v.is_string()) {
        pats.push_back(v.get<std::string>());
        c.layers_pattern_is_string = true;
      } else if (v.is_array()) {
        for (auto& e : v) {
          if (!e.is_string()) type_err(key, "a string, a list of strings or null", v);
          pats.push_back(e.get<std::string>());
        }
      } else {
        type_err(key, "a string, a list of strings or null", v);
      }
      if (!pats.empty()) c.layers_pattern = std::move(pats);
    } else if (key == "rank_pattern") {
      if (v.is_null()) continue;
      if (!v.is_object()) type_err(key, "an object {pattern: rank}", v);
      for (auto& [p, rv] : v.items()) {
        if (!rv.is_number_integer()) type_err(key + "['" + p + "']", "an integer", rv);
        c.rank_pattern.push_back({p, rv.get<int64_t>()});
      }
    } else if (key == "alpha_pattern") {
      if (v.is_null()) continue;
      if (!v.is_object()) type_err(key, "an object {pattern: alpha}", v);
      for (auto& [p, av] : v.items()) {
        if (!av.is_number()) type_err(key + "['" + p + "']", "a number", av);
        c.alpha_pattern.push_back({p, av.get<double>()});
      }
    } else if (key == "task_type") {
      if (v.is_null()) continue;  // PEFT's default None: a plain causal LM here
      if (!v.is_string()) type_err(key, "a string or null", v);
      c.task_type = v.get<std::string>();
    } else if (key == "base_model_name_or_path" || key == "revision") {
      if (v.is_null()) continue;
      if (!v.is_string()) type_err(key, "a string or null", v);
      (key == "revision" ? c.revision : c.base_model_name_or_path) = v.get<std::string>();
    } else if (key == "inference_mode") {
      if (!v.is_boolean()) type_err(key, "true or false", v);
      c.inference_mode = v.get<bool>();
    } else if (key == "use_dora") {
      if (!v.is_boolean()) type_err(key, "true or false", v);
      c.use_dora = v.get<bool>();
      if (c.use_dora) fail(src, ": use_dora is true: DoRA is not supported yet");
    } else if (neutral_keys().count(key)) {
      if (!is_neutral(v) && key != "peft_version" && key != "megatron_core" && key != "qalora_group_size" &&
          key != "auto_mapping" && key != "runtime_config")
        fail(src, ": field '", key, "' = ", v.dump(), " is not supported (only its default is)");
    } else if (warnings) {
      warnings->push_back(cat(src, ": unknown field '", key, "' ignored"));
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail(src, ": ", e.what());
  }
  return c;
}

}  // namespace llmtune
