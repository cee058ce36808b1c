// `llmtune train` option registry and its resolution into LoraConfig / TrainingArguments / data options.
#include "cli/train_options.h"

#include <cstdio>
#include <filesystem>

#include <cstring>

#include "core/error.h"
#include "peft/adapter_io.h"
#include "io/safetensors.h"
#include "peft/lora.h"
#include "train/optimizer.h"
#include "train/scheduler.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

std::string resolve_bundled_path(const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute() || fs::exists(path)) return path;
  fs::path bundled = fs::path(LLMTUNE_SOURCE_DIR) / path;
  return fs::exists(bundled) ? bundled.string() : path;
}

void load_trained_weights(Model& m, bool lora, const std::string& dir) {
  if (lora) {
    // Copy the values into the existing adapter params: the optimizer holds pointers to them, so the
    // adapter must not be removed and re-created.
    const std::string path = dir + "/adapter_model.safetensors";
    SafetensorsFile f = open_safetensors(path);
    for (auto& p : m.params) {
      if (!p.trainable) continue;
      const std::string key = peft_key(p.name);
      if (!f.has(key)) fail(path, ": the checkpoint has no tensor '", key, "' for this run's adapter");
      Tensor t = f.get_f32(key);
      if (t.shape != p.value.shape)
        fail(path, ": tensor '", key, "' has shape ", shape_str(t.shape), " but this run's adapter needs ",
             shape_str(p.value.shape));
      std::memcpy(p.value.data, t.data, p.value.nbytes());
    }
    return;
  }
  Model loaded = load_model(dir);
  for (auto& p : m.params) {
    Param* q = loaded.find(p.name);
    if (!q || q->value.shape != p.value.shape) fail(dir, ": checkpoint does not hold parameter ", p.name);
    std::memcpy(p.value.data, q->value.data, p.value.nbytes());
  }
}

std::string default_config_path() { return std::string(LLMTUNE_SOURCE_DIR) + "/configs/default.yaml"; }

void add_train_options(CommandSpec& s) {
  // What and where.
  s.add_string("model", std::nullopt, "Hugging Face model folder to fine-tune").required = true;
  s.add_string("train_file", std::nullopt,
               "training data: JSONL {\"text\"} or {\"prompt\",\"completion\"} rows, or a .txt file")
      .required = true;
  s.add_string("eval_file", std::nullopt, "evaluation data (same formats); enables eval_loss logging");
  s.add_string("output_dir", "outputs", "where checkpoints, the adapter/model, metrics.jsonl and report.html go");
  s.add_bool("overwrite_output_dir", false, "replace a previous run's files in output_dir");
  s.add_string("resume_from_checkpoint", std::nullopt, "a checkpoint folder, or true = the latest in output_dir");
  s.add_int("num_threads", 0, "threads for the kernels (0 = all cores)").min = 0;
  auto& method = s.add_string("method", "lora", "lora | freeze (train only the last blocks) | full");
  method.choices = {"lora", "freeze", "full"};
  // Task.
  auto& tt = s.add_string("task_type", "CAUSAL_LM", "CAUSAL_LM | SEQ_CLS (sequence classification: {\"text\",\"label\"} rows)");
  tt.choices = {"CAUSAL_LM", "SEQ_CLS"};
  auto& task = s.add_string("task", std::nullopt,
                            "classification (= task_type SEQ_CLS) | reward ({\"prompt\",\"chosen\",\"rejected\"} rows, "
                            "Bradley-Terry loss, one-output head)");
  task.choices = {"lm", "classification", "reward"};
  s.add_int("num_labels", std::nullopt, "SEQ_CLS: number of classes (default: from the training labels)").min = 1;
  // Freezing.
  s.add_int("trainable_layers", 2, "method freeze: number of last blocks that train").min = 0;
  s.add_bool("train_final_norm", true, "method freeze: also train the final norm");
  s.add_bool("train_lm_head", true, "method freeze: also train the LM head");
  // LoraConfig.
  s.add_int("r", 8, "LoRA rank").min = 1;
  s.add_float("lora_alpha", 8, "LoRA scaling numerator (scaling = lora_alpha / r)");
  s.add_float("lora_dropout", 0.0, "dropout on the LoRA branch input").max = 0.999;
  s.add_string_list("target_modules", std::nullopt,
                    "modules to adapt: names (suffix match, e.g. q_proj,v_proj), 'all-linear', or one regex "
                    "(full match); default: the architecture's PEFT default");
  s.add_string_list("exclude_modules", std::nullopt, "modules never adapted (same matching)");
  auto& bias = s.add_string("bias", "none", "none | all | lora_only: which biases train");
  bias.choices = {"none", "all", "lora_only"};
  s.add_bool("use_rslora", false, "scaling = lora_alpha / sqrt(r)");
  s.add_string_list("modules_to_save", std::nullopt, "modules trained in full and saved with the adapter");
  auto& init = s.add_string("init_lora_weights", "true", "true (kaiming-uniform A, zero B) | gaussian | false");
  init.choices = {"true", "false", "gaussian"};
  s.add_int_list("layers_to_transform", std::nullopt, "only adapt these layer indices");
  s.add_string("layers_pattern", std::nullopt, "name of the layer list for layers_to_transform");
  // Data.
  s.add_int("max_seq_length", 1024, "truncate (or chunk .txt files) to this many tokens").min = 2;
  s.add_bool("completion_only_loss", true, "prompt/completion rows: loss on the completion only");
  s.add_bool("packing", false, "pack several samples per row (attention never crosses samples)");
  // TrainingArguments.
  s.add_float("num_train_epochs", 3.0, "epochs (ignored when max_steps > 0)").min = 0;
  s.add_int("max_steps", -1, "total optimizer steps; overrides num_train_epochs when > 0");
  s.add_int("per_device_train_batch_size", 8, "samples per micro-batch").min = 1;
  s.add_int("per_device_eval_batch_size", 8, "samples per eval batch").min = 1;
  s.add_int("gradient_accumulation_steps", 1, "micro-batches per optimizer step").min = 1;
  s.add_float("learning_rate", 5e-5, "peak learning rate").min = 0;
  s.add_float("weight_decay", 0.0, "AdamW decoupled weight decay (not on biases and norms)").min = 0;
  s.add_float("adam_beta1", 0.9, "AdamW beta1").max = 0.999999;
  s.add_float("adam_beta2", 0.999, "AdamW beta2").max = 0.999999;
  s.add_float("adam_epsilon", 1e-8, "AdamW epsilon").min = 0;
  s.add_float("max_grad_norm", 1.0, "clip the global gradient norm (0 = off)").min = 0;
  s.add_string("optim", "adamw_torch",
               "adamw_torch (adamw) | sgd | adamw_8bit (adamw_bnb_8bit, paged_adamw_8bit: 8-bit states) | "
               "paged_adamw_32bit");
  s.add_bool("gradient_checkpointing", false,
             "keep only each block's input and recompute the block in backward (less memory, ~1/3 more compute)");
  s.add_string("lr_scheduler_type", "linear", "linear | cosine | constant | constant_with_warmup");
  s.add_float("warmup_ratio", 0.0, "warmup steps as a fraction of max_steps (ceil)").min = 0;
  s.add_int("warmup_steps", 0, "warmup steps (wins over warmup_ratio)").min = 0;
  s.add_float("logging_steps", 500, "log every N steps (< 1: a fraction of max_steps)").min = 0;
  s.add_bool("logging_first_step", false, "also log the first step");
  auto& es = s.add_string("eval_strategy", "no", "no | steps (evaluation also runs when eval_steps is set)");
  es.choices = {"no", "steps"};
  s.add_float("eval_steps", std::nullopt, "evaluate every N steps (default: logging_steps)");
  s.add_float("save_steps", 500, "checkpoint every N steps (< 1: a fraction of max_steps)").min = 0;
  s.add_int("save_total_limit", std::nullopt, "keep only the newest N checkpoints").min = 1;
  s.add_int("seed", 42, "seed for LoRA init, shuffling, dropout and sampling");
  s.add_bool("bf16", false,
             "mixed precision: frozen weights stored in bf16, matrix products in bf16 with f32 accumulation "
             "(trainable params, norms, softmax and the loss stay f32)");
  s.add_bool("fp16", false, "on CPU the same as --bf16 (fp16 products have no fast CPU path)");
  // k-bit base (transformers BitsAndBytesConfig names; QLoRA = nf4 + double quant + bfloat16).
  s.add_bool("load_in_4bit", false, "quantize the block linears to 4 bit (frozen) before LoRA: QLoRA");
  auto& qt = s.add_string("bnb_4bit_quant_type", "fp4", "nf4 | fp4 (transformers default fp4; QLoRA recipes use nf4)");
  qt.choices = {"nf4", "fp4"};
  s.add_bool("bnb_4bit_use_double_quant", false, "also quantize the 4-bit block scales (8-bit, blocks of 256)");
  auto& cd = s.add_string("bnb_4bit_compute_dtype", "float32", "float32 | bfloat16: dtype the 4-bit tiles are dequantized to");
  cd.choices = {"float32", "bfloat16"};
  s.add_bool("load_in_8bit", false, "quantize the block linears to int8 with per-row scales (frozen)");
  // Samples.
  s.add_string_list("sample_prompts", std::vector<std::string>{}, "prompts to sample before and after training");
  s.add_int("sample_max_new_tokens", 64, "tokens per before/after sample").min = 1;
  s.add_float("sample_temperature", 0.8, "sampling temperature for the samples (0 = greedy)").min = 0;
}

namespace {
bool looks_like_regex(const std::string& s) { return s.find_first_of(".*+?[](){}|^$\\") != std::string::npos; }

ModuleSelector selector_from(const std::vector<std::string>& v) {
  if (v.size() == 1 && (looks_like_regex(v[0]) || v[0] == "all-linear" || v[0] == "ALL-LINEAR"))
    return ModuleSelector::pattern(v[0]);
  return ModuleSelector::list(v);
}
}  // namespace

TrainPlan resolve_train_plan(const ResolvedOptions& o) {
  TrainPlan p;
  p.model_dir = resolve_bundled_path(o.get_string("model"));
  p.train_file = resolve_bundled_path(o.get_string("train_file"));
  if (o.has("eval_file")) p.eval_file = resolve_bundled_path(o.get_string("eval_file"));
  p.method = o.get_string("method");

  p.freeze.method = p.method == "full" ? "full" : "freeze";
  p.freeze.trainable_layers = o.get_int("trainable_layers");
  p.freeze.train_final_norm = o.get_bool("train_final_norm");
  p.freeze.train_lm_head = o.get_bool("train_lm_head");

  LoraConfig& l = p.lora;
  l.r = o.get_int("r");
  l.lora_alpha = o.get_float("lora_alpha");
  l.lora_dropout = o.get_float("lora_dropout");
  if (o.has("target_modules")) l.target_modules = selector_from(o.get_string_list("target_modules"));
  if (o.has("exclude_modules")) l.exclude_modules = selector_from(o.get_string_list("exclude_modules"));
  l.bias = parse_lora_bias(o.get_string("bias"), "--bias");
  l.use_rslora = o.get_bool("use_rslora");
  if (o.has("modules_to_save")) l.modules_to_save = o.get_string_list("modules_to_save");
  std::string init = o.get_string("init_lora_weights");
  l.init_lora_weights = init == "gaussian" ? LoraInit::Gaussian : init == "false" ? LoraInit::Random : LoraInit::Default;
  if (o.has("layers_to_transform")) l.layers_to_transform = o.get_int_list("layers_to_transform");
  if (o.has("layers_pattern")) l.layers_pattern = std::vector<std::string>{o.get_string("layers_pattern")};
  l.base_model_name_or_path = o.get_string("model");
  if (p.method == "lora") l.validate();

  p.max_seq_length = o.get_int("max_seq_length");
  p.packing = o.get_bool("packing");
  p.data.max_seq_length = p.max_seq_length;
  p.data.completion_only_loss = o.get_bool("completion_only_loss");

  TrainingArguments& a = p.args;
  a.output_dir = o.get_string("output_dir");
  a.overwrite_output_dir = o.get_bool("overwrite_output_dir");
  if (o.has("resume_from_checkpoint")) a.resume_from_checkpoint = o.get_string("resume_from_checkpoint");
  a.num_train_epochs = o.get_float("num_train_epochs");
  a.max_steps = o.get_int("max_steps");
  a.per_device_train_batch_size = o.get_int("per_device_train_batch_size");
  a.per_device_eval_batch_size = o.get_int("per_device_eval_batch_size");
  a.gradient_accumulation_steps = o.get_int("gradient_accumulation_steps");
  a.learning_rate = o.get_float("learning_rate");
  a.weight_decay = o.get_float("weight_decay");
  a.adam_beta1 = o.get_float("adam_beta1");
  a.adam_beta2 = o.get_float("adam_beta2");
  a.adam_epsilon = o.get_float("adam_epsilon");
  a.max_grad_norm = o.get_float("max_grad_norm");
  a.optim = o.get_string("optim");
  a.gradient_checkpointing = o.get_bool("gradient_checkpointing");
  a.lr_scheduler_type = o.get_string("lr_scheduler_type");
  // Checked here, before the model and data are loaded, so a typo fails at once (the messages list
  // the valid names).
  parse_optimizer_name(a.optim);
  parse_scheduler_name(a.lr_scheduler_type);
  a.warmup_ratio = o.get_float("warmup_ratio");
  a.warmup_steps = o.get_int("warmup_steps");
  a.logging_steps = o.get_float("logging_steps");
  a.logging_first_step = o.get_bool("logging_first_step");
  a.eval_strategy = o.get_string("eval_strategy");
  if (o.has("eval_steps")) a.eval_steps = o.get_float("eval_steps");
  a.save_steps = o.get_float("save_steps");
  if (o.has("save_total_limit")) a.save_total_limit = o.get_int("save_total_limit");
  a.seed = uint64_t(o.get_int("seed"));
  p.bf16 = o.get_bool("bf16");
  if (o.get_bool("fp16")) {
    std::printf("note: --fp16 on CPU runs as --bf16 (same exponent range as f32, no loss scaling needed)\n");
    p.bf16 = true;
  }
  p.sample_prompts = o.get_string_list("sample_prompts");
  p.quant.load_in_4bit = o.get_bool("load_in_4bit");
  p.quant.load_in_8bit = o.get_bool("load_in_8bit");
  p.quant.bnb_4bit_quant_type = quant4_type_from_name(o.get_string("bnb_4bit_quant_type"));
  p.quant.bnb_4bit_use_double_quant = o.get_bool("bnb_4bit_use_double_quant");
  p.quant.compute_bf16 = compute_dtype_is_bf16(o.get_string("bnb_4bit_compute_dtype"));
  if (p.quant.load_in_4bit && p.quant.load_in_8bit)
    fail("--load_in_4bit and --load_in_8bit are both set: choose one (4-bit nf4 is the QLoRA recipe)");
  if (p.quant.enabled() && p.method != "lora")
    fail("--method ", p.method, " with --", p.quant.load_in_4bit ? "load_in_4bit" : "load_in_8bit",
         ": quantized weights cannot train; use --method lora (QLoRA: LoRA adapters on the frozen k-bit base)");

  p.task_type = o.get_string("task_type");
  if (o.has("task")) {
    p.task = o.get_string("task");
    if (p.task != "lm") p.task_type = "SEQ_CLS";
    else if (p.task_type == "SEQ_CLS") fail("--task lm contradicts --task_type SEQ_CLS");
  } else if (p.task_type == "SEQ_CLS") {
    p.task = "classification";
  }
  if (o.has("num_labels")) {
    if (p.task_type != "SEQ_CLS") fail("--num_labels needs --task_type SEQ_CLS (or --task reward)");
    p.num_labels = o.get_int("num_labels");
    if (p.task == "reward" && p.num_labels != 1) fail("--task reward trains a one-output head: drop --num_labels or set it to 1");
  }
  if (p.task == "reward") p.num_labels = 1;
  if (p.task_type == "SEQ_CLS") p.lora.task_type = "SEQ_CLS";
  return p;
}

}  // namespace llmtune::cli
