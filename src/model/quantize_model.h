// k-bit frozen base (QLoRA, hf-semantics §3): quantizing a model's block linears to NF4/FP4 or
// LLM.int8 (transformers BitsAndBytesConfig names), prepare_model_for_kbit_training, and the
// bitsandbytes serialization layout (save, and loading such a folder).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "io/hf_checkpoint.h"
#include "kernels/quant4.h"
#include "model/model.h"

namespace llmtune {

// transformers BitsAndBytesConfig fields (defaults as transformers: fp4, no double quant, float32
// compute; QLoRA recipes set nf4 + double quant + bfloat16).
struct QuantizeOptions {
  bool load_in_4bit = false;
  bool load_in_8bit = false;
  Quant4Type bnb_4bit_quant_type = Quant4Type::FP4;
  bool bnb_4bit_use_double_quant = false;
  bool compute_bf16 = false;  // bnb_4bit_compute_dtype: "float32" (false) | "bfloat16" (true)
  int64_t blocksize = 64;
  bool enabled() const { return load_in_4bit || load_in_8bit; }
};

// Parses bnb_4bit_compute_dtype ("float32"/"fp32", "bfloat16"/"bf16"); anything else fails.
bool compute_dtype_is_bf16(const std::string& name);
// The quantization_config object transformers writes into config.json for these options.
nlohmann::json quantization_config_json(const QuantizeOptions& o);
// Reads a config.json "quantization_config" (quant_method must be "bitsandbytes"); `where` names the file.
QuantizeOptions quantize_options_from_json(const nlohmann::json& qc, const std::string& where);
// "nf4, double quant, compute bfloat16" — for logs.
std::string describe(const QuantizeOptions& o);

// Quantizes one linear's weight (GPT-2 Conv1D weights are transposed to [out, in] first, as
// bitsandbytes sees them) and releases its f32 value (the Param keeps its shape, no data).
void quantize_module(LinearModule& l, const QuantizeOptions& o);
// The module's weight as f32 in its Param layout ([out, in], or [in, out] for Conv1D).
Tensor dequantized_weight(const LinearModule& l);
// Back to a plain f32 weight (exact: the dequantized values); used by merge_lora.
void dequantize_module(LinearModule& l);

// Quantizes every linear of the blocks (the LM head, embeddings, norms and biases stay f32, as
// transformers leaves them) and applies prepare_model_for_kbit_training: every parameter frozen.
// Call before apply_lora (adapters are f32 on top). Already-quantized modules are kept. Returns a
// one-line summary. Fails when nothing is enabled or when both 4 and 8 bit are asked for.
std::string quantize_model(Model& m, const QuantizeOptions& o);
bool is_quantized(const Model& m);
// Bytes held by the quantized weights (packed codes + scales) and by f32 parameter values.
int64_t quantized_weight_bytes(const Model& m);
int64_t f32_param_bytes(const Model& m);

// Loads a HF folder quantizing each block linear as soon as it is read (peak: one f32 tensor more
// than the quantized model). A folder that is already bitsandbytes-serialized loads as stored.
Model load_model_quantized(const std::string& dir, const QuantizeOptions& o);
// random_model(cfg, seed, std) with the same values, but block linears quantized as they are
// created, so a 1.1B model never exists in f32.
Model random_model_quantized(const ModelConfig& cfg, uint64_t seed, float std, const QuantizeOptions& o);

// Writes the folder in the bitsandbytes/transformers 4-bit serialization layout: for each quantized
// linear <p>: <p>.weight (packed uint8 [(n+1)/2, 1]), <p>.weight.absmax, <p>.weight.quant_map and with
// double quant <p>.weight.nested_absmax / nested_quant_map, plus <p>.weight.quant_state.bitsandbytes__<type>
// (uint8 JSON); other tensors f32; config.json with "quantization_config". 4-bit only.
void save_quantized_model(const Model& m, const QuantizeOptions& o, const std::string& dir);
// load_model's path for a folder with quantization_config: quantized linears from the stored
// tensors (4-bit: the stored quant_map must be the standard code; the nested_quant_map is used as
// stored), everything else f32, all frozen.
void load_bnb_quantized_weights(Model& m, const CheckpointFiles& ck);

}  // namespace llmtune
