// The PEFT/transformers-named facade (peft_api.h): each function forwards to the llmtune function
// named in the header.
#include "peft/peft_api.h"

#include <algorithm>
#include <cstdio>

#include "core/rng.h"
#include "data/collator.h"
#include "data/loader.h"
#include "model/generate.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"

namespace llmtune::hf {

Model from_pretrained(const std::string& dir) { return load_model(dir); }

std::string PeftModel::print_trainable_parameters() const { return llmtune::print_trainable_parameters(*model); }

void PeftModel::save_pretrained(const std::string& dir) const { save_adapter(*model, peft_config, dir); }

PeftModel PeftModel::from_pretrained(Model& base, const std::string& dir, bool is_trainable) {
  return PeftModel{&base, load_adapter(base, dir, is_trainable)};
}

PeftModel get_peft_model(Model& model, const LoraConfig& config, uint64_t seed) {
  Rng rng(seed);
  return PeftModel{&model, apply_lora(model, config, rng)};
}

Dataset dataset_from_text(const Tokenizer& tokenizer, std::string_view text, int64_t max_seq_length) {
  DatasetOptions o;
  o.max_seq_length = max_seq_length;
  EncodeFn enc = [&](std::string_view s, bool special) { return tokenizer.encode(s, special); };
  return tokenize_plain_text(text, enc, {tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()}, o, "<text>");
}

nlohmann::json Trainer::train() {
  LoaderOptions lo;
  lo.batch_size = args.per_device_train_batch_size;
  lo.seed = args.seed;
  lo.max_seq_length = max_seq_length;
  if (processing_class)
    lo.pad_id = resolve_pad_id({processing_class->bos_id(), processing_class->eos_id(), processing_class->pad_id()});
  DataLoader loader(train_dataset.samples, lo);
  Model& m = *model.model;
  const bool has_adapters = !lora_modules(m).empty();
  TrainerHooks hooks;
  hooks.save_model = [&](const std::string& dir) {
    if (has_adapters) model.save_pretrained(dir);
    else save_model(m, dir);
  };
  hooks.load_model_weights = [&](const std::string& dir) {
    if (has_adapters) {
      remove_lora(m);
      model.peft_config = load_adapter(m, dir, true);
    } else {
      Model loaded = load_model(dir);
      for (Param& p : m.params)
        if (Param* q = loaded.find(p.name); q && q->value.shape == p.value.shape)
          std::copy_n(q->value.f32(), q->value.numel(), p.value.f32());
    }
  };
  if (print_logs)
    hooks.on_log = [](const nlohmann::json& e) {
      nlohmann::json shown = e;
      shown.erase("type");
      std::printf("%s\n", shown.dump().c_str());
      std::fflush(stdout);
    };
  llmtune::Trainer t(m, loader, eval_dataset ? &eval_dataset->samples : nullptr, args, hooks);
  return t.train();
}

std::string generate(Model& model, const Tokenizer& tokenizer, const std::string& prompt, int64_t max_new_tokens) {
  std::vector<int32_t> ids = tokenizer.encode(prompt, true);
  if (ids.empty() && tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  GenerateOptions g;
  g.max_new_tokens = max_new_tokens;
  g.eos_ids = model.cfg.eos_token_ids;
  if (tokenizer.eos_id() >= 0) g.eos_ids.push_back(tokenizer.eos_id());
  const std::vector<int32_t> out = llmtune::generate(model, {ids}, g)[0];
  return prompt + tokenizer.decode(out, true);
}

}  // namespace llmtune::hf
