// Saving and loading PEFT adapter folders (adapter_config.json + adapter_model.safetensors).
#include "peft/adapter_io.h"

#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "peft/lora.h"
#include "peft/target_match.h"

namespace llmtune {

namespace {

const std::string kPrefix = "base_model.model.";

bool is_bias_name(const std::string& n) { return n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0; }
bool is_adapter_param(const std::string& n) {
  return n.find(".lora_A.") != std::string::npos || n.find(".lora_B.") != std::string::npos;
}

// Every param the adapter file carries, by in-memory name, in a stable order.
std::vector<const Param*> adapter_params(const Model& m, const LoraConfig& c) {
  std::vector<const Param*> out;
  std::set<const Param*> seen;
  auto add = [&](const Param* p) {
    if (p && seen.insert(p).second) out.push_back(p);
  };
  for (const LinearModule* l : lora_modules(m)) {
    add(l->lora.A);
    add(l->lora.B);
  }
  if (c.bias == LoraBias::All) {
    for (const Param& p : m.params)
      if (!is_adapter_param(p.name) && is_bias_name(p.name)) add(&p);
  } else if (c.bias == LoraBias::LoraOnly) {
    for (const LinearModule* l : lora_modules(m)) add(l->bias);
  }
  if (c.modules_to_save)
    for (const Param& p : m.params) {
      if (is_adapter_param(p.name)) continue;
      size_t dot = p.name.rfind('.');
      if (dot != std::string::npos && matches_modules_to_save(*c.modules_to_save, p.name.substr(0, dot))) add(&p);
    }
  return out;
}

// The value to save: while adapters are disabled, modules_to_save params hold their originals and
// the trained values sit in the originals map.
const Tensor& saved_value(const Model& m, const Param& p) {
  if (!m.adapters_enabled) {
    auto it = m.modules_to_save_originals.find(p.name);
    if (it != m.modules_to_save_originals.end()) return it->second;
  }
  return p.value;
}

// PEFT's in-memory spelling → saved spelling: drop the adapter name "default".
std::string normalise_key(std::string k) {
  for (const char* part : {".lora_A.default.", ".lora_B.default."}) {
    size_t pos = k.find(part);
    if (pos != std::string::npos) k.erase(pos + 7, 8);  // keep ".lora_X", drop "default."
  }
  const std::string mts = ".modules_to_save.default.";
  size_t pos = k.find(mts);
  if (pos != std::string::npos) k = k.substr(0, pos) + "." + k.substr(pos + mts.size());
  const std::string orig = ".original_module.";
  if (k.find(orig) != std::string::npos) return "";  // frozen original copy: not part of the adapter
  const std::string dflt = ".default";
  if (k.size() > dflt.size() && k.compare(k.size() - dflt.size(), dflt.size(), dflt) == 0) k.resize(k.size() - dflt.size());
  return k;
}

std::string readme(const LoraConfig& c) {
  std::string base = c.base_model_name_or_path.value_or("(unknown)");
  return cat("---\nbase_model: ", base, "\nlibrary_name: peft\n---\n\n# LoRA adapter\n\n",
             "A LoRA adapter (r = ", c.r, ", lora_alpha = ", c.to_json()["lora_alpha"].dump(), ", target_modules ",
             c.target_modules.describe(), ") for `", base, "`, written by llmtune in the PEFT format.\n\n",
             "Load it with PEFT:\n\n```python\nfrom peft import PeftModel\n",
             "model = PeftModel.from_pretrained(base_model, \"<this folder>\")\n```\n");
}

}  // namespace

std::string peft_key(const std::string& param_name) { return kPrefix + param_name; }

std::vector<std::pair<std::string, Tensor>> adapter_state_dict(const Model& m, const LoraConfig& resolved) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const Param* p : adapter_params(m, resolved)) out.push_back({peft_key(p->name), saved_value(m, *p)});
  return out;
}

void save_adapter(const Model& m, const LoraConfig& cfg, const std::string& dir) {
  if (lora_modules(m).empty()) fail("save_adapter: the model has no LoRA adapters to save");
  LoraConfig c = resolve_lora_config(m, cfg);
  if (!c.base_model_name_or_path && !m.source_dir.empty()) c.base_model_name_or_path = m.source_dir;
  std::vector<std::pair<std::string, Tensor>> tensors = adapter_state_dict(m, c);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create adapter folder ", dir, ": ", ec.message());
  write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(dir + "/adapter_config.json", c.to_json_string());
  write_file_atomic(dir + "/README.md", readme(c));
}

LoraConfig load_adapter(Model& m, const std::string& dir, bool trainable, std::vector<std::string>* warnings) {
  const std::string cfg_path = dir + "/adapter_config.json";
  const std::string st_path = dir + "/adapter_model.safetensors";
  if (!std::filesystem::exists(cfg_path))
    fail(dir, ": no adapter_config.json (not a PEFT adapter folder)");
  if (!std::filesystem::exists(st_path)) {
    if (std::filesystem::exists(dir + "/adapter_model.bin"))
      fail(dir, ": only adapter_model.bin (PyTorch pickle) is present; convert it to adapter_model.safetensors");
    fail(dir, ": adapter_model.safetensors is missing");
  }
  LoraConfig cfg = LoraConfig::from_json(read_json_file(cfg_path), cfg_path, warnings);
  SafetensorsFile file = open_safetensors(st_path);

  if (!lora_modules(m).empty()) fail("load_adapter ", dir, ": the model already has LoRA adapters");
  // Attach, then roll everything back if anything about the file is wrong.
  std::vector<bool> was_trainable;
  for (const Param& p : m.params) was_trainable.push_back(p.trainable);
  LoraConfig c;
  try {
    c = attach_lora_structure(m, cfg);
    set_lora_trainable(m, c, trainable);  // also snapshots modules_to_save originals (base values)
    std::map<std::string, Param*> expected;
    for (const Param* p : adapter_params(m, c)) expected[peft_key(p->name)] = const_cast<Param*>(p);
    std::map<std::string, std::string> source_of;  // normalised key → key in the file
    for (const std::string& raw : file.names()) {
      std::string key = normalise_key(raw);
      if (key.empty()) continue;
      auto it = expected.find(key);
      if (it == expected.end())
        fail(st_path, ": tensor '", raw, "' does not belong to this adapter on this model (target_modules ",
             c.target_modules.describe(), ", bias \"", lora_bias_name(c.bias), "\"; no such parameter in the ",
             model_family_name(m.cfg), " model)");
      if (source_of.count(key)) fail(st_path, ": tensors '", source_of[key], "' and '", raw, "' both give '", key, "'");
      source_of[key] = raw;
      DType dt = file.info(raw).dtype;
      if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16 && dt != DType::F64)
        fail(st_path, ": tensor '", raw, "' has dtype ", dtype_name(dt), "; adapters must be F32, F16, BF16 or F64");
      const Shape& want = it->second->value.shape;
      const Shape& got = file.info(raw).shape;
      if (got != want)
        fail(st_path, ": tensor '", raw, "' has shape ", shape_str(got), " but ", shape_str(want),
             " is expected (r = ", c.r, " from adapter_config.json, rank_pattern applied, and the model's layer sizes)");
    }
    for (auto& [key, p] : expected)
      if (!source_of.count(key)) fail(st_path, ": tensor '", key, "' is missing");
    for (auto& [key, p] : expected) p->value = file.get_f32(source_of[key]);
  } catch (...) {
    remove_lora(m);
    for (size_t i = 0; i < was_trainable.size() && i < m.params.size(); i++) m.params[i].trainable = was_trainable[i];
    m.sync_grad_buffers();
    throw;
  }
  if (!trainable) {
    for (Param& p : m.params) p.trainable = false;
    m.sync_grad_buffers();
  }
  return c;
}

}  // namespace llmtune
