// `llmtune merge`: fold a LoRA adapter into its base model and write a plain HF model folder — a causal
// LM, or a *ForSequenceClassification model when the adapter is a SEQ_CLS one (classifier / reward model).
#include <cstdio>
#include <filesystem>

#include "cli/cmd_train_seqcls.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "peft/lora.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

namespace {
int run(const ResolvedOptions& o) {
  if (!o.has("adapter")) fail("merge: --adapter is required (the LoRA adapter folder to merge)");
  const std::string out = o.get_string("output"), src = o.get_string("model"), adapter = o.get_string("adapter");
  if (is_classifier(src, adapter)) {
    // The head (PEFT modules_to_save: base_model.model.score.weight) comes with the adapter; the saved
    // config names the *ForSequenceClassification architecture and the labels, and seq_cls_config.json
    // (what task it was trained for) travels along so `eval` / `classify` treat the folder alike.
    set_num_threads(int(o.get_int("num_threads")));
    LoadedClassifier lc = load_classifier(src, adapter);
    merge_and_unload(lc.lm.model);
    write_dir_atomic(out, [&](const std::string& tmp) {
      save_model(lc.lm.model, tmp);
      copy_tokenizer_files(src, tmp, /*generation_config=*/false);
      const fs::path info = fs::path(adapter) / kSeqClsInfoFile;
      if (fs::exists(info)) fs::copy_file(info, fs::path(tmp) / kSeqClsInfoFile);
    });
    std::printf("merged %s + %s → %s (%s, %lld output%s)\n", src.c_str(), adapter.c_str(), out.c_str(),
                lc.lm.model.cfg.architecture.c_str(), (long long)lc.lm.model.cfg.num_labels,
                lc.lm.model.cfg.num_labels == 1 ? "" : "s");
    return 0;
  }
  LoadedModel lm = load_for_cli(o);
  merge_and_unload(lm.model);
  write_dir_atomic(out, [&](const std::string& tmp) {
    save_model(lm.model, tmp);
    copy_tokenizer_files(src, tmp);
  });
  std::printf("merged %s + %s → %s\n", src.c_str(), adapter.c_str(), out.c_str());
  return 0;
}
}  // namespace

Command merge_command() {
  CommandSpec s;
  s.name = "merge";
  s.summary = "Merge a LoRA adapter (causal LM or SEQ_CLS) into its base model and save a Hugging Face model folder";
  add_model_options(s);
  s.add_string("output", std::nullopt, "folder for the merged model").required = true;
  return {s, run};
}

}  // namespace llmtune::cli
