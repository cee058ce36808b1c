// `llmtune train`: LoRA / layer-freezing / full fine-tuning with the Trainer, PEFT-format adapters,
// before/after samples and a live run report. With no arguments it runs the main job
// (configs/default.yaml).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/cmd_train_seqcls.h"
#include "cli/commands.h"
#include "cli/memory_preflight.h"
#include "cli/model_loading.h"
#include "cli/progress.h"
#include "cli/train_options.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "core/threads.h"
#include "data/collator.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "kernels/matmul.h"
#include "model/generate.h"
#include "model/memory_estimate.h"
#include "model/quantize_model.h"
#include "train/precision.h"
#include "peft/adapter_io.h"
#include "peft/freeze.h"
#include "peft/lora.h"
#include "report/report.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

namespace {

std::vector<std::string> generate_samples(Model& m, const Tokenizer& tok, const std::vector<std::string>& prompts,
                                          const ResolvedOptions& o) {
  std::vector<std::string> out;
  GenerateOptions g;
  g.max_new_tokens = o.get_int("sample_max_new_tokens");
  g.sampling.do_sample = o.get_float("sample_temperature") > 0;
  g.sampling.temperature = g.sampling.do_sample ? float(o.get_float("sample_temperature")) : 1.f;
  g.sampling.top_k = 50;
  g.seed = uint64_t(o.get_int("seed"));
  g.eos_ids = m.cfg.eos_token_ids;
  for (const auto& p : prompts) {
    std::vector<int32_t> ids = tok.encode(p, true);
    if (ids.empty() && tok.bos_id() >= 0) ids.push_back(tok.bos_id());
    if (ids.empty()) continue;
    auto gen = generate(m, {ids}, g);
    out.push_back(p + tok.decode(gen[0], true));
  }
  return out;
}

void print_samples(const char* title, const std::vector<std::string>& prompts, const std::vector<std::string>& s) {
  std::printf("\n── %s ──\n", title);
  for (size_t i = 0; i < s.size(); i++) std::printf("[%s]\n%s\n\n", prompts[i].c_str(), s[i].c_str());
  std::fflush(stdout);
}

void write_samples(const std::string& dir, const std::vector<std::string>& prompts,
                   const std::vector<std::string>& before, const std::vector<std::string>* after) {
  nlohmann::json j;
  j["prompts"] = prompts;
  j["before"] = before;
  if (after) j["after"] = *after;
  write_json_file(dir + "/samples.json", j);
}

int run(const ResolvedOptions& o) {
  set_num_threads(int(o.get_int("num_threads")));
  TrainPlan plan = resolve_train_plan(o);
  if (plan.task_type == "SEQ_CLS") return run_seqcls_train(o, plan);
  const std::string out_dir = plan.args.output_dir;

  std::printf("llmtune train — resolved configuration:\n%s\n", o.to_json().dump(2).c_str());
  std::fflush(stdout);

  if (std::string note = optimizer_note(plan.args.optim); !note.empty()) std::printf("note: %s\n", note.c_str());

  // Memory preflight before anything big is loaded (config.json only).
  ModelConfig cfg0 = load_model_config(plan.model_dir);
  {
    PreflightPlan pf;
    pf.method = plan.method;
    pf.lora = plan.lora;
    pf.trainable_layers = plan.freeze.trainable_layers;
    pf.mem.B = plan.args.per_device_train_batch_size;
    pf.mem.T = plan.max_seq_length;
    pf.mem.gradient_checkpointing = plan.args.gradient_checkpointing;
    pf.mem.load_in_4bit = plan.quant.load_in_4bit;
    pf.mem.load_in_8bit = plan.quant.load_in_8bit;
    pf.mem.double_quant = plan.quant.bnb_4bit_use_double_quant;
    pf.mem.optim_8bit = parse_optimizer_name(plan.args.optim) == OptimizerKind::AdamW8bit;
    MemoryEstimate est = estimate_training_plan(cfg0, pf);
    int64_t avail = available_ram_bytes();
    std::printf("memory estimate: %s (weights %s, grads %s, optimizer %s, activations %s%s); available %s\n",
                format_bytes(est.total()).c_str(), format_bytes(est.weights).c_str(),
                format_bytes(est.gradients).c_str(), format_bytes(est.optimizer).c_str(),
                format_bytes(est.activations).c_str(), pf.mem.gradient_checkpointing ? ", checkpointed" : "",
                format_bytes(avail).c_str());
    std::fflush(stdout);
    refuse_if_too_big(est, avail, pf);
  }

  // A k-bit base is quantized module by module while loading (the f32 copies never coexist).
  Model m = plan.quant.enabled() ? load_model_quantized(plan.model_dir, plan.quant) : load_model(plan.model_dir);
  if (is_quantized(m)) {
    if (plan.method != "lora")
      fail(plan.model_dir, " holds a quantized (bitsandbytes) model: quantized weights cannot train; use --method lora");
    std::printf("k-bit base: %s\n", plan.quant.enabled() ? describe(plan.quant).c_str() : "as stored in the folder");
  }
  Tokenizer tok = Tokenizer::load(plan.model_dir);
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  if (std::string note = pad_token_note(tids); !note.empty()) std::printf("%s\n", note.c_str());

  // Data.
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  Dataset train_ds = load_dataset(plan.train_file, enc, tids, plan.data);
  std::printf("train data: %s — %lld samples, %lld tokens (%s)\n", plan.train_file.c_str(),
              (long long)train_ds.samples.size(), (long long)train_ds.num_tokens, dataset_kind_name(train_ds.kind));
  std::optional<Dataset> eval_ds;
  if (!plan.eval_file.empty()) {
    eval_ds = load_dataset(plan.eval_file, enc, tids, plan.data);
    std::printf("eval data:  %s — %lld samples, %lld tokens\n", plan.eval_file.c_str(),
                (long long)eval_ds->samples.size(), (long long)eval_ds->num_tokens);
  }
  LoaderOptions lo;
  lo.batch_size = plan.args.per_device_train_batch_size;
  lo.seed = plan.args.seed;
  lo.packing = plan.packing;
  lo.max_seq_length = plan.max_seq_length;
  lo.pad_id = resolve_pad_id(tids);
  DataLoader loader(train_ds.samples, lo);

  // Samples before training (the base model).
  std::vector<std::string> before;
  if (!plan.sample_prompts.empty()) {
    before = generate_samples(m, tok, plan.sample_prompts, o);
    print_samples("samples before training", plan.sample_prompts, before);
  }

  // What trains.
  LoraConfig lora;
  Rng init_rng(plan.args.seed);
  if (plan.method == "lora") {
    lora = apply_lora(m, plan.lora, init_rng);
    std::printf("LoRA: r=%lld, lora_alpha=%g, targets %s\n", (long long)lora.r, lora.lora_alpha,
                lora.target_modules.describe().c_str());
  } else {
    std::printf("%s\n", apply_freeze_policy(m, plan.freeze).c_str());
  }
  std::printf("%s\n", trainable_parameters_string(m).c_str());
  if (plan.bf16) {
    // Only frozen weights change storage; with method full/freeze the frozen part is stored bf16 too,
    // but a saved full model needs f32 weights, so those methods keep f32 storage.
    if (plan.method == "lora") {
      const int64_t released = store_frozen_weights_bf16(m);
      std::printf("bf16: frozen weights stored in bf16 (%s released)\n", format_bytes(released).c_str());
      if (!matmul_bf16_uses_amx())
        std::printf("note: this CPU has no usable AMX, and its bf16 products run slower than f32 ones (about\n"
                    "      0.65x in bench/compare): --bf16 saves memory here, not time\n");
    } else {
      std::printf("note: --bf16 with --method %s keeps f32 weights (only LoRA stores its frozen base in bf16)\n",
                  plan.method.c_str());
    }
  }

  auto save_model_to = [&](const std::string& dir) {
    if (plan.method == "lora") {
      save_adapter(m, lora, dir);
    } else {
      save_model(m, dir);
      copy_tokenizer_files(plan.model_dir, dir);
    }
  };

  std::unique_ptr<Progress> progress;  // created once the number of steps is known
  auto log_line = [&](const std::string& text) {
    if (progress) progress->log_line(text);
    else std::printf("%s\n", text.c_str());
  };
  TrainerHooks hooks;
  hooks.save_model = save_model_to;
  hooks.load_model_weights = [&](const std::string& dir) { load_trained_weights(m, plan.method == "lora", dir); };
  bool wrote_config = false;
  int64_t last_eval_step = -1;
  double last_eval_loss = NAN;
  hooks.on_log = [&](const nlohmann::json& e) {
    std::string type = e.value("type", "");
    if (type == "eval") {
      last_eval_step = e.value("step", int64_t(-1));
      last_eval_loss = e.value("eval_loss", NAN);
    }
    std::string line;
    if (type == "train")
      line = cat("step ", e.value("step", 0), " | loss ", e.value("loss", 0.0), " | lr ", e.value("learning_rate", 0.0),
                 " | grad_norm ", e.value("grad_norm", 0.0), " | ", int64_t(e.value("tokens_per_second", 0.0)), " tok/s");
    else if (type == "eval")
      line = cat("eval @ step ", e.value("step", 0), " | eval_loss ", e.value("eval_loss", 0.0), " | perplexity ",
                 e.value("perplexity", 0.0));
    if (!line.empty()) log_line(line);
    if (!wrote_config) return;
    try {
      write_report(out_dir);
    } catch (const Error& err) {
      log_line(cat("warning: report not updated: ", err.what()));
    }
  };
  hooks.on_step = [&](int64_t step, int64_t, const StepMetrics& sm) {
    if (progress) progress->update(step, {{"loss", sm.loss}, {"lr", sm.learning_rate}, {"tok/s", sm.tokens_per_second}});
  };

  const std::vector<Sample>* eval_samples = eval_ds ? &eval_ds->samples : nullptr;
  Trainer trainer(m, loader, eval_samples, plan.args, hooks);
  // The Trainer has checked/prepared output_dir; now the run's own files can go in.
  fs::create_directories(out_dir);
  write_json_file(out_dir + "/run_config.json", o.to_json());
  if (!before.empty()) write_samples(out_dir, plan.sample_prompts, before, nullptr);
  wrote_config = true;

  double t0 = now_seconds();
  std::printf("\ntraining: %lld steps (%lld per epoch), batch %lld x GA %lld, max_seq_length %lld\n",
              (long long)trainer.max_steps, (long long)trainer.steps_per_epoch,
              (long long)plan.args.per_device_train_batch_size, (long long)plan.args.gradient_accumulation_steps,
              (long long)plan.max_seq_length);
  std::optional<double> eval_before;
  // Not on resume: the checkpoint's own log history already covers that step, and an extra eval entry
  // would make the resumed run's metrics differ from an uninterrupted one's.
  if (trainer.eval_enabled && trainer.state.global_step == 0) {
    nlohmann::json e = trainer.evaluate();
    eval_before = e.value("eval_loss", NAN);
  }
  progress = std::make_unique<Progress>(trainer.max_steps, stdout);
  nlohmann::json summary = trainer.train();
  progress->finish();
  progress.reset();
  std::optional<double> eval_after;
  if (trainer.eval_enabled) {
    if (last_eval_step != trainer.state.global_step) trainer.evaluate();  // the final state, once
    eval_after = last_eval_loss;
  }

  // Final model / adapter directly in output_dir (as save_pretrained would).
  save_model_to(out_dir);
  std::vector<std::string> after;
  if (!plan.sample_prompts.empty()) {
    after = generate_samples(m, tok, plan.sample_prompts, o);
    print_samples("samples after training", plan.sample_prompts, after);
    write_samples(out_dir, plan.sample_prompts, before, &after);
  }
  write_report(out_dir);
  std::printf("done in %.1f s: train_loss %.4f", now_seconds() - t0, summary.value("train_loss", NAN));
  if (eval_before && eval_after)
    std::printf(", eval_loss %.4f → %.4f (%+.1f%%)", *eval_before, *eval_after,
                100.0 * (*eval_after - *eval_before) / *eval_before);
  std::printf("\n%s written to %s/ — report: %s/report.html\n",
              plan.method == "lora" ? "adapter" : "model", out_dir.c_str(), out_dir.c_str());
  return 0;
}

}  // namespace

Command train_command() {
  CommandSpec s;
  s.name = "train";
  s.summary = "Fine-tune (LoRA, freeze, full) with HF Trainer semantics; no arguments = the main job";
  add_train_options(s);
  return {s, run};
}

}  // namespace llmtune::cli
