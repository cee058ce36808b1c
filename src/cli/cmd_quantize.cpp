// `llmtune quantize`: write a model folder in the bitsandbytes 4-bit serialization layout (what
// transformers saves for load_in_4bit), which transformers and `llmtune train` load directly.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "model/quantize_model.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

namespace {
int run(const ResolvedOptions& o) {
  set_num_threads(int(o.get_int("num_threads")));
  if (!o.get_bool("load_in_4bit"))
    fail("quantize: --load_in_4bit is required (only the 4-bit bitsandbytes layout is written; 8-bit "
         "quantization happens when training with --load_in_8bit)");
  QuantizeOptions q;
  q.load_in_4bit = true;
  q.bnb_4bit_quant_type = quant4_type_from_name(o.get_string("bnb_4bit_quant_type"));
  q.bnb_4bit_use_double_quant = o.get_bool("bnb_4bit_use_double_quant");
  q.compute_bf16 = compute_dtype_is_bf16(o.get_string("bnb_4bit_compute_dtype"));
  const std::string src = o.get_string("model"), out = o.get_string("output");
  if (fs::exists(fs::path(out)) && !fs::is_empty(fs::path(out)) && !o.get_bool("overwrite"))
    fail("quantize: --output ", out, " exists and is not empty; choose another folder or pass --overwrite");
  Model m = load_model_quantized(src, q);
  write_dir_atomic(out, [&](const std::string& tmp) {
    save_quantized_model(m, q, tmp);
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json"})
      if (fs::exists(fs::path(src) / f)) fs::copy_file(fs::path(src) / f, fs::path(tmp) / f);
  });
  std::printf("quantized %s → %s (%s): %.1f MiB of 4-bit weights, %.1f MiB f32 (head, embeddings, norms)\n",
              src.c_str(), out.c_str(), describe(q).c_str(), double(quantized_weight_bytes(m)) / 1048576.0,
              double(f32_param_bytes(m)) / 1048576.0);
  return 0;
}
}  // namespace

Command quantize_command() {
  CommandSpec s;
  s.name = "quantize";
  s.summary = "Write a 4-bit (NF4/FP4) model folder in the bitsandbytes layout, loadable by transformers and train";
  s.add_string("model", std::nullopt, "Hugging Face model folder (f32/bf16/f16 weights)").required = true;
  s.add_string("output", std::nullopt, "folder for the quantized model").required = true;
  s.add_bool("overwrite", false, "replace a non-empty --output folder");
  s.add_bool("load_in_4bit", false, "4-bit quantization of every block linear (required)");
  auto& qt = s.add_string("bnb_4bit_quant_type", "fp4", "nf4 | fp4 (transformers default fp4; QLoRA recipes use nf4)");
  qt.choices = {"nf4", "fp4"};
  s.add_bool("bnb_4bit_use_double_quant", false, "also quantize the block scales (8-bit, blocks of 256)");
  auto& cd = s.add_string("bnb_4bit_compute_dtype", "float32", "float32 | bfloat16 (recorded in quantization_config)");
  cd.choices = {"float32", "bfloat16"};
  s.add_int("num_threads", 0, "threads (0 = all cores)").min = 0;
  return {s, run};
}

}  // namespace llmtune::cli
