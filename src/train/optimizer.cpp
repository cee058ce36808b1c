// AdamW / SGD updates, weight-decay groups and optimizer state files.
#include "train/optimizer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/quant8.h"

namespace llmtune {

namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

const char* kind_name(OptimizerKind k) {
  return k == OptimizerKind::AdamW ? "adamw" : k == OptimizerKind::AdamW8bit ? "adamw_8bit" : "sgd";
}

}  // namespace

std::string valid_optimizer_names() {
  return "adamw_torch, adamw, adamw_hf, adamw_torch_fused, sgd, adamw_8bit, adamw_bnb_8bit, paged_adamw_8bit, "
         "paged_adamw_32bit";
}

OptimizerKind parse_optimizer_name(const std::string& name) {
  if (name == "adamw_torch" || name == "adamw" || name == "adamw_hf" || name == "adamw_torch_fused" ||
      name == "paged_adamw_32bit")
    return OptimizerKind::AdamW;
  if (name == "sgd") return OptimizerKind::SGD;
  if (name == "adamw_8bit" || name == "adamw_bnb_8bit" || name == "paged_adamw_8bit") return OptimizerKind::AdamW8bit;
  static const char* later[] = {"adamw_torch_8bit", "adam8bit", "lion_8bit", "paged_lion_8bit", "paged_lion_32bit"};
  for (const char* e : later)
    if (name == e) fail("optim '", name, "' is not available yet; valid: ", valid_optimizer_names());
  fail("unknown optim '", name, "'; valid: ", valid_optimizer_names());
}

std::string optimizer_note(const std::string& name) {
  if (name == "adamw_hf")
    return "optim adamw_hf: running torch's AdamW (adamw_torch); the deprecated transformers AdamW "
           "differs only in rounding details";
  if (name == "adamw_torch_fused")
    return "optim adamw_torch_fused: running the same AdamW math as adamw_torch (fusion is a GPU speed variant)";
  if (name.rfind("paged_", 0) == 0)
    return "paged optimizers have no meaning on CPU: using the same algorithm without paging (optim " + name +
           ")";
  return "";
}

bool no_decay_by_name(const std::string& param_name) {
  std::string n = param_name;
  for (char& c : n) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (n.find("bias") != std::string::npos || n.find("layernorm") != std::string::npos ||
      n.find("rmsnorm") != std::string::npos)
    return true;
  // (^|\.)norm($|\.) and _norm($|\.): a dotted component equal to "norm" or ending in "_norm".
  size_t start = 0;
  while (start <= n.size()) {
    size_t dot = n.find('.', start);
    if (dot == std::string::npos) dot = n.size();
    std::string_view comp(n.data() + start, dot - start);
    if (comp == "norm" || (comp.size() >= 5 && comp.substr(comp.size() - 5) == "_norm")) return true;
    start = dot + 1;
  }
  return false;
}

bool excluded_from_weight_decay(const Model& m, const Param& p) {
  if (no_decay_by_name(p.name)) return true;
  if (m.cfg.norm != NormKind::LayerNorm) return false;  // the module rule is for nn.LayerNorm only
  auto in_norm = [&](const NormModule& nm) { return nm.weight == &p || nm.bias == &p; };
  if (in_norm(m.final_norm)) return true;
  for (const Block& b : m.blocks)
    if (in_norm(b.ln1) || in_norm(b.ln2)) return true;
  return false;
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, double lr, double weight_decay,
                  double beta1, double beta2, double eps, int64_t step) {
  // The scalars as torch computes them (Python doubles), applied in f32 like torch's f32 kernels.
  const float decay = float(1.0 - lr * weight_decay);
  const float w1 = float(1.0 - beta1);  // exp_avg.lerp_(grad, 1 − β1)
  const float b2 = float(beta2), w2 = float(1.0 - beta2);
  const double bias_correction1 = 1.0 - std::pow(beta1, double(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, double(step));
  const float step_size = float(lr / bias_correction1);
  const float bc2_sqrt = float(std::sqrt(bias_correction2));
  const float epsf = float(eps);
  const bool do_decay = weight_decay != 0.0;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    float pi = do_decay ? p[i] * decay : p[i];
    const float gi = g[i];
    // torch's lerp for weight < 0.5: self + weight·(end − self)
    const float mi = m[i] + w1 * (gi - m[i]);
    const float vi = v[i] * b2 + w2 * gi * gi;
    const float denom = std::sqrt(vi) / bc2_sqrt + epsf;
    pi = pi + (-step_size) * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

void adamw8bit_update(float* p, const float* g, uint8_t* state1, float* absmax1, uint8_t* state2, float* absmax2,
                      int64_t n, double lr, double weight_decay, double beta1, double beta2, double eps,
                      int64_t step) {
  const float* code1 = dynamic_map_signed().data();
  const float* code2 = dynamic_map_unsigned().data();
  const float b1 = float(beta1), w1 = float(1.0 - beta1), b2 = float(beta2), w2 = float(1.0 - beta2);
  const float decay = float(1.0 - lr * weight_decay);
  const double bias_correction1 = 1.0 - std::pow(beta1, double(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, double(step));
  const float step_size = float(lr / bias_correction1);
  const float bc2_sqrt = float(std::sqrt(bias_correction2));
  const float epsf = float(eps);
  const bool do_decay = weight_decay != 0.0;
  const int64_t nblocks = num_blocks(n, kAdam8bitBlock);
  // Blocks are independent: each is dequantized, updated and requantized in a stack buffer.
  // Products are rounded before each add (round_f32) so the result does not depend on FMA contraction.
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t blk = 0; blk < nblocks; blk++) {
    const int64_t off = blk * kAdam8bitBlock, len = std::min(kAdam8bitBlock, n - off);
    float m[kAdam8bitBlock], v[kAdam8bitBlock];
    dequantize_blockwise_8bit(m, state1 + off, absmax1 + blk, len, code1, kAdam8bitBlock);
    dequantize_blockwise_8bit(v, state2 + off, absmax2 + blk, len, code2, kAdam8bitBlock);
    for (int64_t i = 0; i < len; i++) {
      const float gi = g[off + i];
      m[i] = round_f32(m[i] * b1) + round_f32(w1 * gi);
      v[i] = round_f32(v[i] * b2) + round_f32(w2 * round_f32(gi * gi));
      float pi = do_decay ? p[off + i] * decay : p[off + i];
      const float denom = std::sqrt(v[i]) / bc2_sqrt + epsf;
      p[off + i] = pi - round_f32(step_size * (m[i] / denom));
    }
    quantize_blockwise_8bit(state1 + off, absmax1 + blk, m, len, code1, kAdam8bitBlock);
    quantize_blockwise_8bit(state2 + off, absmax2 + blk, v, len, code2, kAdam8bitBlock);
  }
}

void sgd_update(float* p, const float* g, float* buf, int64_t n, double lr, double weight_decay, double momentum,
                int64_t step) {
  const float lrf = float(lr), wd = float(weight_decay), mu = float(momentum);
  const bool use_momentum = momentum != 0.0 && buf != nullptr;
  const bool first = step <= 1;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    float d = g[i];
    if (wd != 0.f) d = d + wd * p[i];
    if (use_momentum) {
      d = first ? d : buf[i] * mu + d;
      buf[i] = d;
    }
    p[i] = p[i] + (-lrf) * d;
  }
}

Optimizer make_optimizer(Model& m, const OptimizerConfig& config) {
  Optimizer opt;
  opt.config = config;
  LLMTUNE_CHECK(config.weight_decay >= 0, "weight_decay must be >= 0 (got ", config.weight_decay, ")");
  if (config.kind != OptimizerKind::SGD) {
    LLMTUNE_CHECK(config.beta1 >= 0 && config.beta1 < 1, "adam_beta1 must be in [0, 1) (got ", config.beta1, ")");
    LLMTUNE_CHECK(config.beta2 >= 0 && config.beta2 < 1, "adam_beta2 must be in [0, 1) (got ", config.beta2, ")");
    LLMTUNE_CHECK(config.eps >= 0, "adam_epsilon must be >= 0 (got ", config.eps, ")");
  } else {
    LLMTUNE_CHECK(config.momentum >= 0, "SGD momentum must be >= 0 (got ", config.momentum, ")");
  }
  for (Param& p : m.params) {
    if (!p.trainable) continue;
    LLMTUNE_CHECK(p.value.dtype == DType::F32, "trainable parameter ", p.name, " is ", dtype_name(p.value.dtype),
                  "; trainable parameters must be f32");
    LLMTUNE_CHECK(p.grad.defined(), "trainable parameter ", p.name,
                  " has no gradient buffer (call Model::sync_grad_buffers() after marking parameters trainable)");
    OptimizerParamState s;
    s.param = &p;
    s.decay = !excluded_from_weight_decay(m, p);
    // The Trainer registers every embedding weight for 32-bit states; bnb keeps small tensors in f32.
    const bool embedding = &p == m.embed || &p == m.pos_embed;
    s.eight_bit = config.kind == OptimizerKind::AdamW8bit && p.value.numel() >= kAdam8bitMinSize && !embedding;
    if (s.eight_bit) {
      const int64_t n = p.value.numel(), nb = num_blocks(n, kAdam8bitBlock);
      s.state1 = Tensor::zeros({n}, DType::U8);
      s.state2 = Tensor::zeros({n}, DType::U8);
      s.absmax1 = Tensor::zeros({nb});
      s.absmax2 = Tensor::zeros({nb});
    } else if (config.kind != OptimizerKind::SGD) {
      s.exp_avg = Tensor::zeros(p.value.shape);
      s.exp_avg_sq = Tensor::zeros(p.value.shape);
    } else if (config.momentum != 0.0) {
      s.exp_avg = Tensor::zeros(p.value.shape);
    }
    opt.states.push_back(std::move(s));
  }
  LLMTUNE_CHECK(!opt.states.empty(), "the model has no trainable parameters: nothing to optimise");
  return opt;
}

void Optimizer::step(double lr) {
  ++step_count;
  for (OptimizerParamState& s : states) {
    Param& p = *s.param;
    const double wd = s.decay ? config.weight_decay : 0.0;
    if (s.eight_bit)
      adamw8bit_update(p.value.f32(), p.grad.f32(), s.state1.as<uint8_t>(), s.absmax1.f32(), s.state2.as<uint8_t>(),
                       s.absmax2.f32(), p.value.numel(), lr, wd, config.beta1, config.beta2, config.eps, step_count);
    else if (config.kind != OptimizerKind::SGD)
      adamw_update(p.value.f32(), p.grad.f32(), s.exp_avg.f32(), s.exp_avg_sq.f32(), p.value.numel(), lr, wd,
                   config.beta1, config.beta2, config.eps, step_count);
    else
      sgd_update(p.value.f32(), p.grad.f32(), s.exp_avg.defined() ? s.exp_avg.f32() : nullptr, p.value.numel(), lr,
                 wd, config.momentum, step_count);
  }
}

namespace {

// The tensors the state file holds for `opt`, by name.
std::vector<std::pair<std::string, const Tensor*>> state_tensors(const Optimizer& opt) {
  std::vector<std::pair<std::string, const Tensor*>> out;
  for (const OptimizerParamState& s : opt.states) {
    if (s.eight_bit) {
      out.emplace_back("state1." + s.param->name, &s.state1);
      out.emplace_back("absmax1." + s.param->name, &s.absmax1);
      out.emplace_back("state2." + s.param->name, &s.state2);
      out.emplace_back("absmax2." + s.param->name, &s.absmax2);
    } else if (opt.config.kind != OptimizerKind::SGD) {
      out.emplace_back("exp_avg." + s.param->name, &s.exp_avg);
      out.emplace_back("exp_avg_sq." + s.param->name, &s.exp_avg_sq);
    } else if (s.exp_avg.defined()) {
      out.emplace_back("momentum_buffer." + s.param->name, &s.exp_avg);
    }
  }
  return out;
}

}  // namespace

void save_optimizer_state(const Optimizer& opt, const std::string& path) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : state_tensors(opt)) tensors.emplace_back(name, *t);
  Tensor step = Tensor::zeros({}, DType::I64);
  *step.as<int64_t>() = opt.step_count;
  tensors.emplace_back("step", step);
  write_safetensors(path, tensors, {{"optimizer", kind_name(opt.config.kind)}, {"format", "llmtune"}});
}

void load_optimizer_state(Optimizer& opt, const std::string& path) {
  SafetensorsFile f = open_safetensors(path);
  auto mismatch = [&](const auto&... what) {
    fail("checkpoint optimizer state does not match the model: ", path, ": ", what...);
  };
  auto kind = f.metadata.find("optimizer");
  if (kind == f.metadata.end()) mismatch("no \"optimizer\" entry in the metadata");
  if (kind->second != kind_name(opt.config.kind))
    mismatch("it was written by optimizer '", kind->second, "', this run uses '", kind_name(opt.config.kind), "'");
  if (!f.has("step") || f.info("step").dtype != DType::I64 || shape_numel(f.info("step").shape) != 1)
    mismatch("no I64 scalar tensor 'step'");

  auto expected = state_tensors(opt);
  std::map<std::string, const Tensor*> want(expected.begin(), expected.end());
  for (const std::string& name : f.names())
    if (name != "step" && !want.count(name))
      mismatch("it has '", name, "', which is not a trainable parameter's state here");
  for (auto& [name, t] : expected) {
    if (!f.has(name)) mismatch("it lacks '", name, "'");
    const SafetensorsTensorInfo& info = f.info(name);
    if (info.dtype != t->dtype)
      mismatch("'", name, "' is ", dtype_name(info.dtype), ", expected ", dtype_name(t->dtype));
    if (info.shape != t->shape)
      mismatch("'", name, "' has shape ", shape_str(info.shape), ", the parameter has ", shape_str(t->shape));
  }
  // Everything matches: copy (the file's tensors are read-only views into the mapping).
  for (auto& [name, t] : expected) {
    Tensor src = f.get(name);
    std::memcpy(t->data, src.data, t->nbytes());
  }
  opt.step_count = *f.get("step").as<int64_t>();
  if (opt.step_count < 0) mismatch("negative step ", opt.step_count);
}

}  // namespace llmtune
