// PEFT target matching (hf-semantics §1.2), on Model module paths.
#include "peft/target_match.h"

#include <algorithm>
#include <map>
#include <regex>

#include "core/error.h"

namespace llmtune {

namespace {

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

const std::regex& cached_regex(const std::string& pattern, const std::string& what) {
  static thread_local std::map<std::string, std::regex> cache;
  auto it = cache.find(pattern);
  if (it != cache.end()) return it->second;
  try {
    return cache.emplace(pattern, std::regex(pattern, std::regex::ECMAScript)).first->second;
  } catch (const std::regex_error& e) {
    fail(what, ": invalid regular expression '", pattern, "' (", e.what(),
         "; ECMAScript syntax is used, Python-only constructs like (?P<name>...) are not available)");
  }
}

// Block linears of a const model (Block::linears() only collects pointers).
std::vector<const LinearModule*> block_linears(const Model& m) {
  std::vector<const LinearModule*> out;
  for (const Block& b : m.blocks)
    for (LinearModule* l : const_cast<Block&>(b).linears()) out.push_back(l);
  return out;
}

bool is_adapter_param(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
}

}  // namespace

bool regex_full_match(const std::string& pattern, const std::string& key, const std::string& what) {
  return std::regex_match(key, cached_regex(pattern, what));
}

bool selector_matches(const ModuleSelector& s, const std::string& key, const std::string& what) {
  switch (s.kind) {
    case ModuleSelector::Kind::None: return false;
    case ModuleSelector::Kind::Regex: return regex_full_match(s.regex, key, what);
    case ModuleSelector::Kind::List:
      for (const std::string& t : s.names)
        if (key == t || ends_with(key, "." + t)) return true;
      return false;
  }
  return false;
}

std::optional<int64_t> layer_index_of(const std::string& key,
                                      const std::optional<std::vector<std::string>>& layers_pattern) {
  std::vector<std::string> patterns;
  if (!layers_pattern || layers_pattern->empty()) patterns.push_back(R"(^.*\.[^.]*\.(\d+)\.)");
  else
    for (const std::string& p : *layers_pattern) patterns.push_back(R"(^.*\.)" + p + R"(\.(\d+)\.)");
  for (const std::string& p : patterns) {
    std::smatch mt;
    if (std::regex_search(key, mt, cached_regex(p, "layers_pattern"))) return std::stoll(mt[1].str());
  }
  return std::nullopt;
}

bool matches_modules_to_save(const std::vector<std::string>& names, const std::string& key) {
  for (const std::string& n : names) {
    if (key == n || ends_with(key, "." + n) || key.rfind(n + ".", 0) == 0 ||
        key.find("." + n + ".") != std::string::npos)
      return true;
  }
  return false;
}

bool is_lora_target(const LoraConfig& cfg, const std::string& key) {
  if (selector_matches(cfg.exclude_modules, key, "exclude_modules")) return false;
  if (cfg.modules_to_save && matches_modules_to_save(*cfg.modules_to_save, key)) return false;
  if (cfg.target_modules.is_all_linear() || cfg.target_modules.is_none())
    fail("internal: is_lora_target needs resolved target_modules (see resolve_lora_config)");
  if (!selector_matches(cfg.target_modules, key, "target_modules")) return false;
  // PEFT: an empty layers_to_transform list means "no layer filter".
  if (cfg.layers_to_transform && !cfg.layers_to_transform->empty() &&
      cfg.target_modules.kind == ModuleSelector::Kind::List) {
    std::optional<int64_t> idx = layer_index_of(key, cfg.layers_pattern);
    if (!idx) return false;
    const auto& want = *cfg.layers_to_transform;
    return std::find(want.begin(), want.end(), *idx) != want.end();
  }
  return true;
}

std::vector<std::string> default_target_modules(const ModelConfig& cfg) {
  const std::string& t = cfg.model_type;
  if (t == "gpt_neox") return {"query_key_value"};
  if (t == "gpt2") return {"c_attn"};
  if (t == "llama" || t == "mistral" || t == "qwen2") return {"q_proj", "v_proj"};
  switch (cfg.arch) {
    case Arch::GPTNeoX: return {"query_key_value"};
    case Arch::GPT2: return {"c_attn"};
    case Arch::Llama:
    case Arch::Qwen2: return {"q_proj", "v_proj"};
  }
  return {};
}

std::string model_family_name(const ModelConfig& cfg) {
  switch (cfg.arch) {
    case Arch::GPTNeoX: return "GPTNeoX";
    case Arch::Llama: return cfg.model_type == "mistral" ? "Mistral" : "Llama";
    case Arch::Qwen2: return "Qwen2";
    case Arch::GPT2: return "GPT2";
  }
  return "?";
}

std::set<std::string> module_names(const Model& m) {
  std::set<std::string> out;
  for (const Param& p : m.params) {
    if (is_adapter_param(p.name)) continue;
    std::string path = p.name;
    for (size_t dot = path.rfind('.'); dot != std::string::npos; dot = path.rfind('.')) {
      path.resize(dot);
      out.insert(path);
    }
  }
  if (!m.lm_head.name.empty()) out.insert(m.lm_head.name);
  return out;
}

std::vector<std::string> linear_module_suffixes(const Model& m) {
  std::vector<std::string> out;
  for (const LinearModule* l : block_linears(m)) {
    std::string last = l->name.substr(l->name.rfind('.') + 1);
    if (std::find(out.begin(), out.end(), last) == out.end()) out.push_back(last);
  }
  return out;
}

std::vector<std::string> all_linear_module_names(const Model& m) {
  std::vector<std::string> out;
  for (const LinearModule* l : block_linears(m)) out.push_back(l->name);
  return out;
}

std::set<std::string> find_minimal_target_modules(const std::vector<std::string>& targets,
                                                  const std::set<std::string>& other_module_names) {
  // Suffixes of a dotted name, shortest first: "a.b.c" → c, b.c, a.b.c.
  auto suffixes = [](const std::string& s) {
    std::vector<std::string> out;
    for (size_t pos = s.size();;) {
      size_t dot = s.rfind('.', pos == 0 ? 0 : pos - 1);
      if (pos == 0 || dot == std::string::npos) {
        out.push_back(s);
        break;
      }
      out.push_back(s.substr(dot + 1));
      pos = dot;
    }
    return out;
  };
  std::set<std::string> other;
  for (const std::string& n : other_module_names)
    for (std::string& s : suffixes(n)) other.insert(std::move(s));
  // PEFT iterates the items sorted by their suffix lists (lexicographic list comparison).
  std::vector<std::pair<std::vector<std::string>, std::string>> items;
  std::set<std::string> uniq(targets.begin(), targets.end());
  for (const std::string& t : uniq) items.push_back({suffixes(t), t});
  std::sort(items.begin(), items.end());
  std::set<std::string> required;
  for (auto& [sufs, item] : items) {
    for (const std::string& s : sufs) {
      if (required.count(s) || other.count(s)) continue;
      bool covered = false;
      for (const std::string& req : required) covered = covered || ends_with(item, "." + req);
      if (!covered) {
        required.insert(s);
        break;
      }
    }
  }
  if (required.empty()) return uniq;
  return required;
}

std::vector<LinearModule*> find_lora_targets(Model& m, const LoraConfig& cfg) {
  std::vector<LinearModule*> out;
  for (auto& b : m.blocks)
    for (LinearModule* l : b.linears())
      if (is_lora_target(cfg, l->name)) out.push_back(l);

  // Anything else the selector reaches is a module LoRA cannot wrap here: say so instead of
  // silently skipping it (PEFT raises for unsupported module types too).
  std::set<std::string> linear_names;
  for (LinearModule* l : m.linears()) linear_names.insert(l->name);
  for (const std::string& key : module_names(m)) {
    if (!is_lora_target(cfg, key)) continue;
    if (key == m.lm_head.name)
      fail("LoRA config: target_modules ", cfg.target_modules.describe(), " selects the output head '", key,
           "'; LoRA on the LM head is not supported (use modules_to_save to train it fully)");
    if (!linear_names.count(key))
      fail("LoRA config: target_modules ", cfg.target_modules.describe(), " selects '", key,
           "', which is not a linear layer; LoRA supports Linear/Conv1D modules only (linear modules of this model: ",
           [&] {
             std::string s;
             for (auto& n : linear_module_suffixes(m)) s += (s.empty() ? "" : ", ") + n;
             return s;
           }(),
           ")");
  }

  if (out.empty()) {
    std::string list;
    for (auto& n : linear_module_suffixes(m)) list += (list.empty() ? "" : ", ") + n;
    std::string why;
    if (cfg.layers_to_transform) why = " (after the layers_to_transform filter)";
    if (!cfg.exclude_modules.is_none()) why += " (after exclude_modules)";
    fail("target_modules ", cfg.target_modules.describe(), " matched no module of this ", model_family_name(m.cfg),
         " model", why, "; its linear modules are: ", list);
  }
  return out;
}

}  // namespace llmtune
