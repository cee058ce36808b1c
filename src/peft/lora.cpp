// LoRA adapters on a Model: structure, init, trainable flags, modules_to_save, merge, disable.
#include "peft/lora.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "core/error.h"
#include "peft/target_match.h"
#include "model/quantize_model.h"

namespace llmtune {

namespace {

const std::vector<std::string> kSeqClsHeads = {"classifier", "score"};

bool is_bias_name(const std::string& n) { return n == "bias" || (n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0); }

std::string module_of(const std::string& param_name) {
  size_t dot = param_name.rfind('.');
  return dot == std::string::npos ? std::string() : param_name.substr(0, dot);
}

// PEFT get_pattern_key: the first pattern P with re.match(rf"(^|.*\.){P}$", key).
template <typename V>
const std::pair<std::string, V>* pattern_for(const std::vector<std::pair<std::string, V>>& pats, const std::string& key,
                                              const char* what) {
  for (auto& kv : pats)
    if (regex_full_match("(.*\\.)?(?:" + kv.first + ")", key, what)) return &kv;
  return nullptr;
}

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v), out;
  int n = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (n && n % 3 == 0 && *it != '-') out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    n++;
  }
  return out;
}

// The non-adapter params that belong to a modules_to_save module.
std::vector<Param*> modules_to_save_params(Model& m, const LoraConfig& cfg) {
  std::vector<Param*> out;
  if (!cfg.modules_to_save) return out;
  const auto& names = *cfg.modules_to_save;
  const bool tied = m.lm_head.weight == m.embed;
  for (const std::string& n : names) {
    bool seq_cls_default = cfg.task_type == "SEQ_CLS" &&
                           std::find(kSeqClsHeads.begin(), kSeqClsHeads.end(), n) != kSeqClsHeads.end();
    bool found = false;
    for (Param& p : m.params) {
      if (p.name.find(".lora_A.") != std::string::npos || p.name.find(".lora_B.") != std::string::npos) continue;
      if (!matches_modules_to_save({n}, module_of(p.name))) continue;
      found = true;
      if (std::find(out.begin(), out.end(), &p) == out.end()) out.push_back(&p);
    }
    if (matches_modules_to_save({n}, m.lm_head.name)) {
      if (tied)
        fail("LoRA config: modules_to_save '", n, "' selects the output head '", m.lm_head.name,
             "', which is tied to the input embedding in this model; training it would change the embedding too "
             "(PEFT unties them) — not supported");
      found = true;
    }
    if (tied && m.embed && matches_modules_to_save({n}, module_of(m.embed->name)))
      fail("LoRA config: modules_to_save '", n, "' selects the input embedding, which is tied to the output head "
           "in this model; not supported");
    if (!found && !seq_cls_default)
      fail("LoRA config: modules_to_save '", n, "' matched no module of this ", model_family_name(m.cfg), " model");
  }
  return out;
}

}  // namespace

LoraConfig resolve_lora_config(const Model& m, const LoraConfig& in) {
  in.validate();
  LoraConfig c = in;
  if (c.target_modules.is_none()) {
    std::vector<std::string> def = default_target_modules(m.cfg);
    if (def.empty()) fail("LoRA config: no default target_modules for model_type '", m.cfg.model_type, "'; set target_modules");
    c.target_modules = ModuleSelector::list(def);
  } else if (c.target_modules.is_all_linear()) {
    c.target_modules = ModuleSelector::list(all_linear_module_names(m));
  }
  // PEFT condenses long name lists (>= 20) to the minimal suffix set before saving.
  if (c.target_modules.kind == ModuleSelector::Kind::List && c.target_modules.names.size() >= 20) {
    std::set<std::string> others;
    for (const std::string& name : module_names(m))
      if (!selector_matches(c.target_modules, name, "target_modules")) others.insert(name);
    std::set<std::string> minimal = find_minimal_target_modules(c.target_modules.names, others);
    std::set<std::string> uniq(c.target_modules.names.begin(), c.target_modules.names.end());
    if (minimal.size() < uniq.size()) c.target_modules = ModuleSelector::list({minimal.begin(), minimal.end()});
  }
  // PEFT sets fan_in_fan_out when it wraps a Conv1D (GPT-2) and clears it for nn.Linear.
  c.fan_in_fan_out = m.cfg.conv1d_weights || m.cfg.arch == Arch::GPT2;
  if (c.task_type == "SEQ_CLS") {
    std::vector<std::string> mts = c.modules_to_save ? *c.modules_to_save : std::vector<std::string>{};
    for (const std::string& h : kSeqClsHeads)
      if (std::find(mts.begin(), mts.end(), h) == mts.end()) mts.push_back(h);
    c.modules_to_save = mts;
  }
  return c;
}

std::vector<LinearModule*> lora_modules(Model& m) {
  std::vector<LinearModule*> out;
  for (LinearModule* l : m.linears())
    if (l->lora.active()) out.push_back(l);
  return out;
}

std::vector<const LinearModule*> lora_modules(const Model& m) {
  std::vector<const LinearModule*> out;
  for (LinearModule* l : lora_modules(const_cast<Model&>(m))) out.push_back(l);
  return out;
}

LoraConfig attach_lora_structure(Model& m, const LoraConfig& cfg) {
  LoraConfig c = resolve_lora_config(m, cfg);
  if (!lora_modules(m).empty()) fail("the model already has LoRA adapters; only one adapter is supported");
  std::vector<LinearModule*> targets = find_lora_targets(m, c);
  modules_to_save_params(m, c);  // validates modules_to_save before anything changes
  for (LinearModule* l : targets) {
    int64_t r = c.r;
    double alpha = c.lora_alpha;
    if (auto* rp = pattern_for(c.rank_pattern, l->name, "rank_pattern")) r = rp->second;
    if (auto* ap = pattern_for(c.alpha_pattern, l->name, "alpha_pattern")) alpha = ap->second;
    LoraBranch& br = l->lora;
    br.A = &m.add_param(l->name + ".lora_A.weight", Tensor::zeros({r, l->in}));
    br.B = &m.add_param(l->name + ".lora_B.weight", Tensor::zeros({l->out, r}));
    br.r = r;
    br.scaling = float(c.use_rslora ? alpha / std::sqrt(double(r)) : alpha / double(r));
    br.dropout = float(c.lora_dropout);
    br.merged = false;
  }
  return c;
}

void set_lora_trainable(Model& m, const LoraConfig& cfg, bool adapters_trainable) {
  for (Param& p : m.params) p.trainable = false;
  std::vector<LinearModule*> wrapped = lora_modules(m);
  for (LinearModule* l : wrapped) {
    l->lora.A->trainable = adapters_trainable;
    l->lora.B->trainable = adapters_trainable;
  }
  if (cfg.bias == LoraBias::All) {
    for (Param& p : m.params)
      if (is_bias_name(p.name)) p.trainable = true;
  } else if (cfg.bias == LoraBias::LoraOnly) {
    for (LinearModule* l : wrapped)
      if (l->bias) l->bias->trainable = true;
  }
  for (Param* p : modules_to_save_params(m, cfg)) {
    p->trainable = true;
    if (!m.modules_to_save_originals.count(p->name)) m.modules_to_save_originals[p->name] = p->value.clone();
  }
  m.sync_grad_buffers();
}

LoraConfig apply_lora(Model& m, const LoraConfig& cfg, Rng& rng) {
  LoraConfig c = attach_lora_structure(m, cfg);
  for (LinearModule* l : lora_modules(m)) {
    Tensor& A = l->lora.A->value;
    Tensor& B = l->lora.B->value;
    const int64_t r = l->lora.r;
    float* a = A.f32();
    float* b = B.f32();
    switch (c.init_lora_weights) {
      case LoraInit::Default: {  // kaiming_uniform(a=√5) on [r, in] == U(±1/√in); B = 0
        const float bound = float(1.0 / std::sqrt(double(l->in)));
        for (int64_t i = 0; i < A.numel(); i++) a[i] = bound * (2.f * rng.uniform() - 1.f);
        break;
      }
      case LoraInit::Gaussian: {  // normal_(std = 1/r); B = 0
        const float sd = float(1.0 / double(r));
        for (int64_t i = 0; i < A.numel(); i++) a[i] = sd * rng.normal();
        break;
      }
      case LoraInit::Random: {  // nn.Linear default init for both
        const float ba = float(1.0 / std::sqrt(double(l->in))), bb = float(1.0 / std::sqrt(double(r)));
        for (int64_t i = 0; i < A.numel(); i++) a[i] = ba * (2.f * rng.uniform() - 1.f);
        for (int64_t i = 0; i < B.numel(); i++) b[i] = bb * (2.f * rng.uniform() - 1.f);
        break;
      }
    }
  }
  set_lora_trainable(m, c, true);
  return c;
}

std::string trainable_parameters_string(const Model& m) {
  int64_t trainable = 0, all = m.num_params();
  for (const Param& p : m.params)
    if (p.trainable) trainable += p.value.numel();
  for (auto& [name, t] : m.modules_to_save_originals) all += t.numel();  // PEFT counts both copies
  char pct[64];
  std::snprintf(pct, sizeof pct, "%.4f", all ? 100.0 * double(trainable) / double(all) : 0.0);
  return cat("trainable params: ", with_commas(trainable), " || all params: ", with_commas(all),
             " || trainable%: ", pct);
}

std::string print_trainable_parameters(const Model& m) {
  std::string s = trainable_parameters_string(m);
  std::printf("%s\n", s.c_str());
  return s;
}

void set_adapters_enabled(Model& m, bool enabled) {
  if (m.adapters_enabled == enabled) return;
  if (!enabled) unmerge_lora(m);  // PEFT unmerges before running the base model alone
  for (auto& [name, orig] : m.modules_to_save_originals) {
    Param* p = m.find(name);
    if (!p) fail("internal: modules_to_save param ", name, " vanished");
    std::swap(p->value, orig);
  }
  m.adapters_enabled = enabled;
}

namespace {

// ΔW = scaling·B·A in f32 ([out, in]); deterministic so that unmerge subtracts the same values.
std::vector<float> delta_weight(const LinearModule& l) {
  const int64_t r = l.lora.r, in = l.in, out = l.out;
  const float* A = l.lora.A->value.f32();
  const float* B = l.lora.B->value.f32();
  std::vector<float> d(size_t(out * in));
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++) {
      double s = 0;
      for (int64_t k = 0; k < r; k++) s += double(B[o * r + k]) * double(A[k * in + i]);
      d[size_t(o * in + i)] = float(s * double(l.lora.scaling));
    }
  return d;
}

void apply_delta(LinearModule& l, float sign) {
  std::vector<float> d = delta_weight(l);
  float* W = l.weight->value.f32();
  const int64_t in = l.in, out = l.out;
  for (int64_t o = 0; o < out; o++)
    for (int64_t i = 0; i < in; i++) {
      float& w = l.transposed ? W[i * out + o] : W[o * in + i];  // Conv1D stores [in, out]: ΔWᵀ
      w += sign * d[size_t(o * in + i)];
    }
}

}  // namespace

void merge_lora(Model& m) {
  if (!m.adapters_enabled) fail("merge_lora: adapters are disabled; enable them before merging");
  for (LinearModule* l : lora_modules(m)) {
    if (l->lora.merged) continue;
    // A k-bit base is dequantized to f32 first (exact, no requantization): the merged module keeps
    // the adapter's full contribution and is an ordinary f32 linear from then on.
    dequantize_module(*l);
    apply_delta(*l, +1.f);
    l->lora.merged = true;
  }
}

void unmerge_lora(Model& m) {
  for (LinearModule* l : lora_modules(m)) {
    if (!l->lora.merged) continue;
    apply_delta(*l, -1.f);
    l->lora.merged = false;
  }
}

namespace {

// Drops the adapter params and branches. Adapters are appended after the base params; popping from
// the back keeps every other Param's address valid (std::deque).
void drop_adapters(Model& m) {
  std::set<const Param*> adapter_params;
  for (LinearModule* l : lora_modules(m)) {
    adapter_params.insert(l->lora.A);
    adapter_params.insert(l->lora.B);
    l->lora = LoraBranch{};
  }
  for (size_t k = 0; k < adapter_params.size(); k++) {
    const Param& last = m.params.back();
    if (!adapter_params.count(&last))
      fail("internal: adapter params are expected at the end of Model::params (found ", last.name, ")");
    m.by_name.erase(last.name);
    m.params.pop_back();
  }
}

}  // namespace

void merge_and_unload(Model& m) {
  set_adapters_enabled(m, true);
  merge_lora(m);
  drop_adapters(m);
  m.modules_to_save_originals.clear();  // the trained values stay in the model
}

void remove_lora(Model& m) {
  set_adapters_enabled(m, true);
  unmerge_lora(m);
  drop_adapters(m);
  for (auto& [name, orig] : m.modules_to_save_originals)
    if (Param* p = m.find(name)) p->value = orig;
  m.modules_to_save_originals.clear();
}

}  // namespace llmtune
