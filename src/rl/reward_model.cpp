// Loading a reward model (seq-cls folder or base + SEQ_CLS adapter) and scoring prompt ⊕ response with it.
#include "rl/reward_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/collator.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/heads.h"
#include "peft/adapter_io.h"
#include "rl/rewards.h"
#include "train/seqcls.h"

namespace fs = std::filesystem;

namespace llmtune::rl {

std::string adapter_base_model_dir(const std::string& adapter_dir) {
  const std::string cfg = (fs::path(adapter_dir) / "adapter_config.json").string();
  const nlohmann::json j = read_json_file(cfg);
  if (!j.contains("base_model_name_or_path") || !j["base_model_name_or_path"].is_string() ||
      j["base_model_name_or_path"].get<std::string>().empty())
    fail(cfg, ": field 'base_model_name_or_path' is missing: set it to the folder of the base model the adapter "
         "was trained on");
  const std::string base = j["base_model_name_or_path"].get<std::string>();
  std::error_code ec;
  if (fs::path(base).is_absolute() || fs::is_directory(base, ec)) {
    if (!fs::is_directory(base, ec))
      fail(cfg, ": base_model_name_or_path '", base, "' is not a folder: point it at the base model's folder");
    return base;
  }
  const fs::path bundled = fs::path(LLMTUNE_SOURCE_DIR) / base;
  if (fs::is_directory(bundled, ec)) return bundled.string();
  fail(cfg, ": base_model_name_or_path '", base, "' is not a folder (from the current folder or the llmtune "
       "source tree): point it at the base model's folder");
}

Model load_model_with_seq_cls_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                      std::vector<std::string>* warnings) {
  Model m = load_model(model_dir);
  if (adapter_dir.empty()) return m;
  if (!m.cfg.is_seq_cls) {
    // A SEQ_CLS adapter on a causal-LM base: the head's shape comes from the adapter's score.weight,
    // the label names and problem_type from seq_cls_config.json when llmtune wrote the adapter.
    const std::string st = (fs::path(adapter_dir) / "adapter_model.safetensors").string();
    if (!fs::exists(st)) fail(adapter_dir, ": no adapter_model.safetensors (not a PEFT adapter folder)");
    SafetensorsFile f = open_safetensors(st);
    // PEFT writes the trained copy as base_model.model.score.weight; its in-memory spelling
    // (...score.modules_to_save.default.weight) is accepted by load_adapter too.
    std::string key = "base_model.model.score.weight";
    if (!f.has(key) && f.has("base_model.model.score.modules_to_save.default.weight"))
      key = "base_model.model.score.modules_to_save.default.weight";
    if (!f.has(key))
      fail(st, ": has no 'base_model.model.score.weight': the classification head was not saved with the adapter "
           "(a SEQ_CLS adapter must list 'score' in modules_to_save)");
    SeqClsOptions so;
    so.num_labels = f.info(key).shape.at(0);
    // The file llmtune writes next to a seq-cls model / SEQ_CLS adapter (cli::kSeqClsInfoFile).
    const std::string info = (fs::path(adapter_dir) / "seq_cls_config.json").string();
    if (fs::exists(info)) {
      const nlohmann::json j = read_json_file(info);
      if (j.contains("id2label") && j["id2label"].is_object() && int64_t(j["id2label"].size()) == so.num_labels)
        for (int64_t i = 0; i < so.num_labels; i++)
          so.id2label.push_back(j["id2label"].value(std::to_string(i), cat("LABEL_", i)));
      if (j.contains("problem_type") && j["problem_type"].is_string())
        so.problem_type = j["problem_type"].get<std::string>();
    }
    add_classification_head(m, so);
  }
  load_adapter(m, adapter_dir, false, warnings);
  return m;
}

Model load_seq_cls_model(const std::string& model_dir, const std::string& adapter_dir) {
  Model m = load_model_with_seq_cls_adapter(model_dir, adapter_dir);
  if (!m.cfg.is_seq_cls)
    fail(adapter_dir.empty() ? model_dir : adapter_dir,
         " is not a sequence-classification model (train one with `llmtune train --task reward`)");
  return m;
}

std::unique_ptr<RewardModel> load_reward_model(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("reward model ", dir, " is not a folder");
  const bool adapter = fs::exists(fs::path(dir) / "adapter_config.json");
  const std::string base = adapter ? adapter_base_model_dir(dir) : dir;
  auto rm = std::unique_ptr<RewardModel>(
      new RewardModel{load_seq_cls_model(base, adapter ? dir : ""), Tokenizer::load(base), dir, base, 8, Workspace{}});
  if (rm->model.cfg.num_labels != 1)
    fail("reward model ", dir, " has ", rm->model.cfg.num_labels,
         " outputs; a reward model has one (train it with `llmtune train --task reward`)");
  return rm;
}

std::vector<int32_t> reward_model_ids(const RewardModel& rm, const std::string& prompt, const std::string& response) {
  const Tokenizer& tok = rm.tokenizer;
  std::vector<int32_t> ids;
  if (!prompt.empty()) ids = tok.encode(prompt, true);
  std::vector<int32_t> r = tok.encode(response, prompt.empty());
  ids.insert(ids.end(), r.begin(), r.end());
  const int32_t eos = tok.eos_id();
  if (eos >= 0 && (ids.empty() || ids.back() != eos)) ids.push_back(eos);
  return ids;
}

std::vector<float> score_with_reward_model(RewardModel& rm, const std::vector<RewardInput>& inputs,
                                           const std::string& spec) {
  const Tokenizer& tok = rm.tokenizer;
  const int32_t pad = resolve_pad_id(TokenIds{tok.bos_id(), tok.eos_id(), tok.pad_id()});
  const int64_t ctx = rm.model.cfg.max_position_embeddings;
  std::vector<float> out;
  out.reserve(inputs.size());
  const size_t bs = size_t(std::max<int64_t>(rm.batch_size, 1));
  for (size_t start = 0; start < inputs.size(); start += bs) {
    const size_t n = std::min(bs, inputs.size() - start);
    std::vector<Sample> samples(n);
    for (size_t i = 0; i < n; i++) {
      const RewardInput& in = inputs[start + i];
      samples[i].ids = reward_model_ids(rm, in.prompt, in.response);
      if (samples[i].ids.empty())
        fail("reward '", spec, "': response ", start + i, " and its prompt tokenise to nothing: nothing to score");
      if (ctx > 0 && int64_t(samples[i].ids.size()) > ctx)
        fail("reward '", spec, "': prompt + response ", start + i, " is ", samples[i].ids.size(),
             " tokens, longer than the reward model's context of ", ctx,
             ": shorten the prompts or lower max_completion_length");
      samples[i].labels.assign(samples[i].ids.size(), -100);
    }
    const Batch b = collate(samples, pad);
    const std::vector<float> logits = batch_logits(rm.model, rm.ws, b);  // [n, 1]
    for (size_t i = 0; i < n; i++) {
      if (!std::isfinite(logits[i]))
        fail("reward '", spec, "': the reward model gave ", logits[i], " for response ", start + i,
             " (rewards must be finite): check the reward model folder");
      out.push_back(logits[i]);
    }
  }
  return out;
}

}  // namespace llmtune::rl
