// Model: the parameters of one generic decoder (GPT-NeoX, Llama family, GPT-2) under their Hugging
// Face names, the modules that use them, and LoRA branches attached to linear modules. The
// computation lives in decoder.cpp (training forward/backward) and generate.cpp (KV-cache inference).
#pragma once
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/linear.h"
#include "kernels/linear_quant.h"
#include "kernels/rope.h"
#include "model/config.h"

namespace llmtune {

// A named parameter. Frozen parameters have no gradient buffer (grad undefined).
struct Param {
  std::string name;  // in-memory HF name, e.g. "gpt_neox.layers.0.attention.dense.weight"
  Tensor value;      // f32
  Tensor grad;       // f32, same shape; only when trainable
  bool trainable = false;
};

// Low-rank adapter on a linear module: y += scaling · B(A(dropout(x))).
struct LoraBranch {
  Param* A = nullptr;  // [r, in]
  Param* B = nullptr;  // [out, r]
  int64_t r = 0;
  float scaling = 1.f;
  float dropout = 0.f;
  bool merged = false;  // ΔW is folded into the base weight (peft/lora.h merge_lora): branch skipped
  bool active() const { return A != nullptr; }
  // Whether forward/backward run the branch (an unmerged adapter, adapters enabled).
  bool runs(bool adapters_enabled) const { return A != nullptr && !merged && adapters_enabled; }
};

struct LinearModule {
  std::string name;  // module path, e.g. "gpt_neox.layers.0.attention.query_key_value"
  Param* weight = nullptr;
  Param* bias = nullptr;  // may be null
  int64_t in = 0, out = 0;
  bool transposed = false;  // weight stored [in, out] (GPT-2 Conv1D)
  LoraBranch lora;
  // k-bit frozen base (model/quantize_model.h): when set, the weight is stored NF4/FP4 or int8 here,
  // weight->value is released (shape kept, no data) and the weight never trains.
  std::shared_ptr<const Quant4Weight> q4;
  std::shared_ptr<const Int8Weight> q8;
  QuantMatmulOptions qopt;  // bnb_4bit_compute_dtype: tiles dequantized to f32 or bf16
  bool quantized() const { return q4 || q8; }

  WeightView view() const { return WeightView{weight->value.data, weight->value.dtype, transposed}; }
};

struct NormModule {
  Param* weight = nullptr;
  Param* bias = nullptr;  // LayerNorm only
};

struct Block {
  NormModule ln1, ln2;
  // Attention input projections: qkv (fused layouts) or q, k, v (separate).
  LinearModule qkv, q, k, v, o;
  // MLP: fc_in/fc_out (GELU MLP) or gate/up/down (SwiGLU).
  LinearModule fc_in, fc_out, gate, up, down;
  std::vector<LinearModule*> linears();  // every present linear module of the block
};

struct Model {
  ModelConfig cfg;
  std::string source_dir;  // folder it was loaded from ("" for random models)
  std::deque<Param> params;                // stable addresses
  std::map<std::string, Param*> by_name;   // in-memory name → param
  Param* embed = nullptr;                  // [V, E]
  Param* pos_embed = nullptr;              // [P, E] (GPT-2)
  NormModule final_norm;
  LinearModule lm_head;                    // weight may alias embed (tied)
  std::vector<Block> blocks;
  RopeTable rope;
  bool adapters_enabled = true;            // PEFT disable_adapter(): false → base model only
  // PEFT modules_to_save trained in place: param name → its pristine value, swapped back in while
  // adapters are disabled (peft/lora.h set_adapters_enabled).
  std::map<std::string, Tensor> modules_to_save_originals;

  Param* find(const std::string& name);
  Param& add_param(const std::string& name, Tensor value);
  std::vector<LinearModule*> linears();    // every linear incl. lm_head
  int64_t num_params() const;              // counted once (tied weights once)
  // Allocates (zeroed) gradient buffers for trainable params, frees them for frozen ones.
  void sync_grad_buffers();
  void zero_grads();
};

// Loads config.json + safetensors weights (single file or sharded) from a HF folder, validating
// every tensor's presence and shape. Weights are converted to f32.
// A folder whose config.json has a bitsandbytes "quantization_config" loads as a k-bit model
// (model/quantize_model.h). on_loaded runs on each parameter right after it is read (quantizing while
// loading keeps the peak at one f32 tensor).
using ParamLoadedFn = std::function<void(Model&, Param&)>;
Model load_model(const std::string& dir, const ParamLoadedFn& on_loaded = {});
// The model's structure with every Param shaped but unallocated (streaming constructors).
Model model_skeleton(const ModelConfig& cfg);
// A randomly initialised model (N(0, std) weights, unit norms, zero biases) for tests and benches.
Model random_model(const ModelConfig& cfg, uint64_t seed, float std = 0.02f);
// The names of all tensors a checkpoint of this config holds, with shapes, in HF file naming.
std::vector<std::pair<std::string, Shape>> expected_tensors(const ModelConfig& cfg);
// Saves the model's weights (merged, f32; k-bit weights dequantized) as a HF folder: config.json + model.safetensors.
void save_model(const Model& m, const std::string& dir);

// Hugging Face file name ↔ in-memory name (GPT-2 files drop the "transformer." prefix).
std::string file_name_for(const ModelConfig& cfg, const std::string& param_name);

}  // namespace llmtune
