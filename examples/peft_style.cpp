// What a PEFT + transformers user writes in Python, step by step in C++ with the same names:
// load the model, LoraConfig, get_peft_model, TrainingArguments, Trainer(...).train(), generate,
// save_pretrained, then PeftModel.from_pretrained on a fresh base and check it generates the same.
// Usage: example_peft_style [MODEL_DIR [OUTPUT_DIR]]  (default: the bundled models/stories260K).
#include <cstdio>
#include <exception>
#include <string>

#include "core/error.h"
#include "core/threads.h"
#include "peft/peft_api.h"

using namespace llmtune;

// Designated initializers read like Python keyword arguments; the fields left out keep their PEFT
// defaults, which is what -Wmissing-field-initializers would complain about.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

int main(int argc, char** argv) try {
  const std::string model_dir = argc > 1 ? argv[1] : std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";
  const std::string output_dir = argc > 2 ? argv[2] : "peft_style_output";
  set_num_threads(1);  // a tiny model: one thread is fastest

  // model = AutoModelForCausalLM.from_pretrained(model_dir); tokenizer = AutoTokenizer.from_pretrained(model_dir)
  Model model = hf::from_pretrained(model_dir);
  Tokenizer tokenizer = Tokenizer::load(model_dir);

  // config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.05,
  //                     task_type="CAUSAL_LM")
  LoraConfig config{.r = 8,
                    .lora_alpha = 16,
                    .target_modules = ModuleSelector::list({"q_proj", "v_proj"}),
                    .lora_dropout = 0.05,
                    .task_type = "CAUSAL_LM"};

  // peft_model = get_peft_model(model, config); peft_model.print_trainable_parameters()
  hf::PeftModel peft_model = hf::get_peft_model(model, config);
  peft_model.print_trainable_parameters();

  // A small text to learn from (the train_dataset).
  std::string text;
  for (int i = 0; i < 12; i++)
    text += "The little robot found a shiny red ball in the garden. It rolled the ball to the cat, "
            "and the cat was happy. ";
  Dataset train_dataset = hf::dataset_from_text(tokenizer, text, 32);

  // args = TrainingArguments(output_dir=..., max_steps=20, per_device_train_batch_size=4,
  //                          learning_rate=1e-2, lr_scheduler_type="constant", logging_steps=5, save_steps=10)
  TrainingArguments args;
  args.output_dir = output_dir + "/trainer";
  args.overwrite_output_dir = true;
  args.max_steps = 20;
  args.per_device_train_batch_size = 4;
  args.learning_rate = 1e-2;
  args.lr_scheduler_type = "constant";
  args.logging_steps = 5;
  args.save_steps = 10;

  const std::string prompt = "The little robot";
  std::printf("before: %s\n", hf::generate(model, tokenizer, prompt, 16).c_str());

  // trainer = Trainer(model=peft_model, args=args, train_dataset=train_dataset, processing_class=tokenizer)
  // trainer.train()
  hf::Trainer trainer{.model = peft_model,
                      .args = args,
                      .train_dataset = train_dataset,
                      .processing_class = &tokenizer,
                      .max_seq_length = 32};
  nlohmann::json summary = trainer.train();
  std::printf("train_loss: %.4f\n", summary.value("train_loss", 0.0));

  // peft_model.generate(...) → decode
  const std::string after = hf::generate(model, tokenizer, prompt, 16);
  std::printf("after: %s\n", after.c_str());

  // peft_model.save_pretrained(output_dir + "/adapter")
  peft_model.save_pretrained(output_dir + "/adapter");
  std::printf("saved adapter to %s/adapter\n", output_dir.c_str());

  // base = AutoModelForCausalLM.from_pretrained(model_dir); PeftModel.from_pretrained(base, adapter_dir)
  Model base = hf::from_pretrained(model_dir);
  hf::PeftModel reloaded = hf::PeftModel::from_pretrained(base, output_dir + "/adapter");
  const std::string again = hf::generate(*reloaded.model, tokenizer, prompt, 16);
  if (again != after) {
    std::fprintf(stderr, "error: the reloaded adapter generates '%s', expected '%s'\n", again.c_str(), after.c_str());
    return 1;
  }
  std::printf("reloaded adapter: identical output\n");
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
