// k-bit frozen base: quantizing block linears (NF4/FP4/int8), prepare_model_for_kbit_training, and
// the bitsandbytes 4-bit serialization layout (write + load).
#include "model/quantize_model.h"

#include <cstring>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "kernels/quant8.h"

namespace llmtune {

namespace {

// The [out, in] float32 matrix of a linear's f32 weight (Conv1D [in, out] transposed).
std::vector<float> weight_out_in(const LinearModule& l) {
  const float* W = l.weight->value.f32();
  std::vector<float> w(size_t(l.out * l.in));
  if (!l.transposed) {
    std::memcpy(w.data(), W, w.size() * sizeof(float));
  } else {
    for (int64_t i = 0; i < l.in; i++)
      for (int64_t o = 0; o < l.out; o++) w[size_t(o * l.in + i)] = W[i * l.out + o];
  }
  return w;
}

// Keeps the shape (parameter counts, adapter shapes) but frees the storage.
void release_value(Param& p) {
  p.value.owner.reset();
  p.value.data = nullptr;
  p.grad = Tensor{};
  p.trainable = false;
}

std::map<const Param*, LinearModule*> block_linear_weights(Model& m) {
  std::map<const Param*, LinearModule*> out;
  for (auto& b : m.blocks)
    for (LinearModule* l : b.linears()) out[l->weight] = l;
  return out;
}

void check_options(const QuantizeOptions& o) {
  if (o.load_in_4bit && o.load_in_8bit)
    fail("load_in_4bit and load_in_8bit are both set: choose one (4-bit NF4 is the QLoRA recipe)");
  if (!o.enabled()) fail("internal: quantize_model called without load_in_4bit / load_in_8bit");
  check_quant4_blocksize(o.blocksize);
}

const char* dtype_word(bool bf16) { return bf16 ? "bfloat16" : "float32"; }

Tensor u8_tensor(const uint8_t* data, Shape shape) {
  Tensor t = Tensor::zeros(shape, DType::U8);
  std::memcpy(t.data, data, t.nbytes());
  return t;
}
Tensor f32_tensor(const float* data, Shape shape) {
  Tensor t = Tensor::zeros(shape, DType::F32);
  std::memcpy(t.data, data, t.nbytes());
  return t;
}

}  // namespace

bool compute_dtype_is_bf16(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "torch.float32") return false;
  if (name == "bfloat16" || name == "bf16" || name == "torch.bfloat16") return true;
  fail("bnb_4bit_compute_dtype '", name, "': use float32 or bfloat16 (float16 has no fast CPU path)");
}

std::string describe(const QuantizeOptions& o) {
  if (o.load_in_8bit) return "int8 (LLM.int8 per-row scales)";
  return cat(quant4_type_name(o.bnb_4bit_quant_type), o.bnb_4bit_use_double_quant ? ", double quant" : "",
             ", blocks of ", o.blocksize, ", compute ", dtype_word(o.compute_bf16));
}

nlohmann::json quantization_config_json(const QuantizeOptions& o) {
  // BitsAndBytesConfig.to_dict() as transformers writes it into config.json.
  nlohmann::ordered_json j;
  j["_load_in_4bit"] = o.load_in_4bit;
  j["_load_in_8bit"] = o.load_in_8bit;
  j["bnb_4bit_compute_dtype"] = dtype_word(o.compute_bf16);
  j["bnb_4bit_quant_storage"] = "uint8";
  j["bnb_4bit_quant_type"] = quant4_type_name(o.bnb_4bit_quant_type);
  j["bnb_4bit_use_double_quant"] = o.bnb_4bit_use_double_quant;
  j["llm_int8_enable_fp32_cpu_offload"] = false;
  j["llm_int8_has_fp16_weight"] = false;
  j["llm_int8_skip_modules"] = nullptr;
  j["llm_int8_threshold"] = 6.0;
  j["load_in_4bit"] = o.load_in_4bit;
  j["load_in_8bit"] = o.load_in_8bit;
  j["quant_method"] = "bitsandbytes";
  return nlohmann::json::parse(j.dump());
}

QuantizeOptions quantize_options_from_json(const nlohmann::json& qc, const std::string& where) {
  if (!qc.is_object()) fail(where, ": field 'quantization_config' must be an object");
  std::string method = qc.value("quant_method", std::string("bitsandbytes"));
  if (method != "bitsandbytes")
    fail(where, ": field 'quantization_config.quant_method' is '", method,
         "': only bitsandbytes (4-bit NF4/FP4, 8-bit) folders are supported; use an unquantized checkpoint");
  QuantizeOptions o;
  auto flag = [&](const char* a, const char* b) {
    if (qc.contains(a) && qc[a].is_boolean()) return qc[a].get<bool>();
    if (qc.contains(b) && qc[b].is_boolean()) return qc[b].get<bool>();
    return false;
  };
  o.load_in_4bit = flag("load_in_4bit", "_load_in_4bit");
  o.load_in_8bit = flag("load_in_8bit", "_load_in_8bit");
  if (qc.contains("bnb_4bit_quant_type") && qc["bnb_4bit_quant_type"].is_string())
    o.bnb_4bit_quant_type =
        quant4_type_from_name(qc["bnb_4bit_quant_type"].get<std::string>(), "quantization_config.bnb_4bit_quant_type");
  o.bnb_4bit_use_double_quant = qc.value("bnb_4bit_use_double_quant", false);
  if (qc.contains("bnb_4bit_compute_dtype") && qc["bnb_4bit_compute_dtype"].is_string()) {
    std::string d = qc["bnb_4bit_compute_dtype"].get<std::string>();
    o.compute_bf16 = d == "bfloat16" || d == "torch.bfloat16";  // float16 folders compute in f32 here
  }
  if (!o.enabled()) fail(where, ": quantization_config has neither load_in_4bit nor load_in_8bit set");
  return o;
}

void quantize_module(LinearModule& l, const QuantizeOptions& o) {
  if (l.quantized()) return;
  if (!l.weight || !l.weight->value.defined()) fail("internal: quantize_module on ", l.name, " without f32 weight");
  std::vector<float> w = weight_out_in(l);
  if (o.load_in_8bit) {
    l.q8 = std::make_shared<const Int8Weight>(quantize_int8_rowwise(w.data(), l.out, l.in));
  } else {
    l.q4 = std::make_shared<const Quant4Weight>(
        quantize_4bit(w.data(), l.out, l.in, o.bnb_4bit_quant_type, o.blocksize, o.bnb_4bit_use_double_quant));
  }
  l.qopt.bf16 = o.compute_bf16;
  release_value(*l.weight);
}

Tensor dequantized_weight(const LinearModule& l) {
  if (!l.quantized()) return l.weight->value;
  std::vector<float> w(size_t(l.out * l.in));
  if (l.q4) dequantize_4bit(w.data(), *l.q4);
  else dequantize_int8_rows(w.data(), *l.q8, 0, l.out);
  Tensor t = Tensor::zeros(l.weight->value.shape);
  float* W = t.f32();
  if (!l.transposed) std::memcpy(W, w.data(), w.size() * sizeof(float));
  else
    for (int64_t i = 0; i < l.in; i++)
      for (int64_t o = 0; o < l.out; o++) W[i * l.out + o] = w[size_t(o * l.in + i)];
  return t;
}

void dequantize_module(LinearModule& l) {
  if (!l.quantized()) return;
  l.weight->value = dequantized_weight(l);
  l.q4.reset();
  l.q8.reset();
}

std::string quantize_model(Model& m, const QuantizeOptions& o) {
  check_options(o);
  int64_t n = 0;
  for (auto& b : m.blocks)
    for (LinearModule* l : b.linears()) {
      if (l->lora.active())
        fail("quantize_model: ", l->name, " already has a LoRA adapter; quantize the base first, then apply LoRA");
      quantize_module(*l, o);
      n++;
    }
  // prepare_model_for_kbit_training: every parameter frozen (ours are f32 already).
  for (auto& p : m.params) p.trainable = false;
  m.sync_grad_buffers();
  return cat("quantized base: ", n, " block linears to ", describe(o), "; LM head, embeddings, norms and biases f32 "
             "(frozen: prepare_model_for_kbit_training)");
}

bool is_quantized(const Model& m) {
  for (auto& b : m.blocks)
    for (const LinearModule* l : const_cast<Block&>(b).linears())
      if (l->quantized()) return true;
  return false;
}

int64_t quantized_weight_bytes(const Model& m) {
  int64_t bytes = 0;
  for (auto& b : m.blocks)
    for (const LinearModule* l : const_cast<Block&>(b).linears()) {
      if (l->q4)
        bytes += int64_t(l->q4->packed.size() + l->q4->qabsmax.size()) +
                 int64_t(4 * (l->q4->absmax.size() + l->q4->absmax2.size()));
      if (l->q8) bytes += int64_t(l->q8->w8.size() + 4 * l->q8->scb.size());
    }
  return bytes;
}

int64_t f32_param_bytes(const Model& m) {
  int64_t bytes = 0;
  for (auto& p : m.params)
    if (p.value.defined()) bytes += int64_t(p.value.nbytes());
  return bytes;
}

Model load_model_quantized(const std::string& dir, const QuantizeOptions& o) {
  check_options(o);
  std::map<const Param*, LinearModule*> linears;
  Model m = load_model(dir, [&](Model& mm, Param& p) {
    if (linears.empty()) linears = block_linear_weights(mm);
    auto it = linears.find(&p);
    if (it != linears.end()) quantize_module(*it->second, o);
  });
  quantize_model(m, o);  // already-quantized modules are kept; freezes everything
  return m;
}

Model random_model_quantized(const ModelConfig& cfg, uint64_t seed, float std, const QuantizeOptions& o) {
  check_options(o);
  Model m = model_skeleton(cfg);
  std::map<const Param*, LinearModule*> linears = block_linear_weights(m);
  Rng rng(seed);
  for (auto& p : m.params) {  // the same values, in the same order, as random_model
    p.value = Tensor::zeros(p.value.shape);
    float* w = p.value.f32();
    const int64_t n = p.value.numel();
    bool is_norm = p.name.find("norm") != std::string::npos || p.name.find(".ln_") != std::string::npos ||
                   p.name.find("ln_f") != std::string::npos;
    bool is_bias = p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    for (int64_t i = 0; i < n; i++) {
      if (is_norm && !is_bias) w[i] = 1.0f;
      else if (is_bias) w[i] = 0.0f;
      else w[i] = std == 0.f ? 0.f : std * rng.normal();
    }
    auto it = linears.find(&p);
    if (it != linears.end()) quantize_module(*it->second, o);
  }
  quantize_model(m, o);
  return m;
}

void save_quantized_model(const Model& m, const QuantizeOptions& o, const std::string& dir) {
  if (!o.load_in_4bit)
    fail("llmtune quantize writes 4-bit folders only (--load_in_4bit); 8-bit quantization happens at load time");
  std::filesystem::create_directories(dir);
  std::map<const Param*, const LinearModule*> q;
  for (auto& b : m.blocks)
    for (const LinearModule* l : const_cast<Block&>(b).linears())
      if (l->q4) q[l->weight] = l;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& p : m.params) {
    const std::string name = file_name_for(m.cfg, p.name);
    auto it = q.find(&p);
    if (it == q.end()) {
      if (!p.value.defined()) fail("save_quantized_model: ", p.name, " is int8; only 4-bit folders can be written");
      tensors.push_back({name, p.value});
      continue;
    }
    const Quant4Weight& W = *it->second->q4;
    const int64_t nb = W.num_blocks();
    tensors.push_back({name, u8_tensor(W.packed.data(), {int64_t(W.packed.size()), 1})});
    const auto& code = quant4_code(W.quant_type);
    tensors.push_back({name + ".quant_map", f32_tensor(code.data(), {16})});
    // QuantState.as_dict(packed=True): the non-tensor entries as a JSON uint8 tensor (json.dumps spacing).
    std::string js = cat("{\"quant_type\": \"", quant4_type_name(W.quant_type), "\", \"blocksize\": ", W.blocksize,
                         ", \"dtype\": \"float32\", \"shape\": [", W.rows, ", ", W.cols, "]");
    if (W.double_quant) {
      tensors.push_back({name + ".absmax", u8_tensor(W.qabsmax.data(), {nb})});
      tensors.push_back({name + ".nested_absmax", f32_tensor(W.absmax2.data(), {int64_t(W.absmax2.size())})});
      tensors.push_back({name + ".nested_quant_map", f32_tensor(W.absmax_code.data(), {256})});
      js += cat(", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ",
                nlohmann::json(double(W.offset)).dump());
    } else {
      tensors.push_back({name + ".absmax", f32_tensor(W.absmax.data(), {nb})});
    }
    js += "}";
    tensors.push_back({cat(name, ".quant_state.bitsandbytes__", quant4_type_name(W.quant_type)),
                       u8_tensor(reinterpret_cast<const uint8_t*>(js.data()), {int64_t(js.size())})});
  }
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::json cfg = m.cfg.raw;
  cfg["torch_dtype"] = "float32";
  cfg["quantization_config"] = quantization_config_json(o);
  write_file_atomic(dir + "/config.json", cfg.dump(2) + "\n");
}

namespace {

std::vector<float> read_f32(const CheckpointFiles& ck, const std::string& name, int64_t n) {
  Tensor t = ck.get_f32(name);
  if (t.numel() != n) fail(ck.dir, ": tensor '", name, "' has ", t.numel(), " values, expected ", n);
  return std::vector<float>(t.f32(), t.f32() + n);
}

std::vector<uint8_t> read_u8(const CheckpointFiles& ck, const std::string& name, int64_t n) {
  Tensor t = ck.get(name);
  if (t.dtype != DType::U8 || t.numel() != n)
    fail(ck.dir, ": tensor '", name, "' must be uint8 with ", n, " values (is ", dtype_name(t.dtype), " ",
         shape_str(t.shape), ")");
  const uint8_t* d = t.as<uint8_t>();
  return std::vector<uint8_t>(d, d + n);
}

std::shared_ptr<const Quant4Weight> load_quant4(const CheckpointFiles& ck, const std::string& name,
                                                const std::string& state_key, const LinearModule& l) {
  Tensor js_t = ck.get(state_key);
  std::string js(reinterpret_cast<const char*>(js_t.data), js_t.nbytes());
  nlohmann::json st = nlohmann::json::parse(js, nullptr, false);
  const std::string where = cat(ck.dir, ": tensor '", state_key, "'");
  if (!st.is_object()) fail(where, " does not hold a JSON object");
  auto W = std::make_shared<Quant4Weight>();
  W->rows = l.out;
  W->cols = l.in;
  W->quant_type = quant4_type_from_name(st.value("quant_type", std::string()), state_key + " quant_type");
  W->blocksize = st.value("blocksize", int64_t(64));
  check_quant4_blocksize(W->blocksize);
  if (st.contains("shape") && st["shape"] != nlohmann::json::array({l.out, l.in}))
    fail(where, ": shape ", st["shape"].dump(), " but config.json implies [", l.out, ", ", l.in, "]");
  const int64_t n = l.out * l.in, nb = W->num_blocks();
  W->packed = read_u8(ck, name, (n + 1) / 2);
  std::vector<float> qmap = read_f32(ck, name + ".quant_map", 16);
  const auto& code = quant4_code(W->quant_type);
  if (std::memcmp(qmap.data(), code.data(), sizeof(float) * 16) != 0)
    fail(ck.dir, ": tensor '", name, ".quant_map' differs from the standard ", quant4_type_name(W->quant_type),
         " code; custom 4-bit maps are not supported");
  W->double_quant = st.contains("nested_offset");
  if (W->double_quant) {
    W->qabsmax = read_u8(ck, name + ".absmax", nb);
    W->absmax2 = read_f32(ck, name + ".nested_absmax", (nb + 255) / 256);
    std::vector<float> nmap = read_f32(ck, name + ".nested_quant_map", 256);
    std::copy(nmap.begin(), nmap.end(), W->absmax_code.begin());
    W->offset = st["nested_offset"].get<float>();
    if (st.value("nested_blocksize", int64_t(256)) != 256)
      fail(where, ": nested_blocksize must be 256 (bitsandbytes' value)");
  } else {
    W->absmax = read_f32(ck, name + ".absmax", nb);
  }
  check_quant4_weight(*W);
  return W;
}

}  // namespace

void load_bnb_quantized_weights(Model& m, const CheckpointFiles& ck) {
  QuantizeOptions o = quantize_options_from_json(m.cfg.raw["quantization_config"], ck.dir + "/config.json");
  std::map<const Param*, LinearModule*> linears = block_linear_weights(m);
  for (auto& p : m.params) {
    const std::string name = file_name_for(m.cfg, p.name);
    auto it = linears.find(&p);
    if (it != linears.end()) {
      LinearModule& l = *it->second;
      std::string state_key;
      for (const char* t : {"nf4", "fp4"})
        if (ck.has(cat(name, ".quant_state.bitsandbytes__", t))) state_key = cat(name, ".quant_state.bitsandbytes__", t);
      const std::string module_scb = name.substr(0, name.size() - 7) + ".SCB";  // strip ".weight"
      if (!state_key.empty()) {
        l.q4 = load_quant4(ck, name, state_key, l);
      } else if (ck.has(module_scb) || ck.has(name + ".SCB")) {
        const std::string scb = ck.has(module_scb) ? module_scb : name + ".SCB";
        auto W = std::make_shared<Int8Weight>();
        W->rows = l.out;
        W->cols = l.in;
        Tensor w8 = ck.get(name);
        if (w8.dtype != DType::I8 || w8.numel() != l.out * l.in)
          fail(ck.dir, ": tensor '", name, "' must be int8 ", shape_str({l.out, l.in}));
        W->w8.assign(w8.as<int8_t>(), w8.as<int8_t>() + w8.numel());
        W->scb = read_f32(ck, scb, l.out);
        l.q8 = W;
      }
      if (l.quantized()) {
        l.qopt.bf16 = o.compute_bf16;
        p.value.shape = l.transposed ? Shape{l.in, l.out} : Shape{l.out, l.in};
        release_value(p);
        continue;
      }
    }
    if (!ck.has(name)) fail(ck.dir, ": tensor '", name, "' is missing from the checkpoint");
    Tensor t = ck.get_f32(name);
    if (t.shape != p.value.shape)
      fail(ck.dir, ": tensor '", name, "' has shape ", shape_str(t.shape), " but config.json implies ",
           shape_str(p.value.shape));
    p.value = std::move(t);
  }
  for (auto& p : m.params) p.trainable = false;  // prepare_model_for_kbit_training
}

}  // namespace llmtune
