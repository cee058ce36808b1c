// `llmtune eval`: mean cross-entropy (and perplexity) of a causal LM on a JSONL/text file; a classifier,
// regression head or reward model goes to run_classifier_eval (cli/cmd_classify.cpp).
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/cmd_classify.h"
#include "cli/cmd_train_seqcls.h"
#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "data/collator.h"
#include "data/dataset.h"
#include "model/decoder.h"

namespace llmtune::cli {

namespace {

int run(const ResolvedOptions& o) {
  if (is_classifier(o.get_string("model"), o.has("adapter") ? o.get_string("adapter") : ""))
    return run_classifier_eval(o);
  LoadedModel lm = load_for_cli(o);
  Model& m = lm.model;
  const Tokenizer& tok = lm.tokenizer;
  DatasetOptions dopt;
  dopt.max_seq_length = std::min<int64_t>(o.get_int("max_seq_length"), m.cfg.max_position_embeddings);
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  Dataset ds = load_dataset(o.get_string("data"), enc, tids, dopt);
  const int64_t bs = o.get_int("batch_size");
  const int32_t pad = resolve_pad_id(tids);
  Workspace ws;
  double loss_sum = 0;
  int64_t tokens = 0;
  for (size_t start = 0; start < ds.samples.size(); start += size_t(bs)) {
    size_t n = std::min(ds.samples.size() - start, size_t(bs));
    Batch b = collate(std::span<const Sample>(ds.samples.data() + start, n), pad);
    std::vector<int32_t> targets = shift_labels(b);
    DecoderInput in;
    in.B = b.B;
    in.T = b.T;
    in.ids = b.input_ids.data();
    in.positions = b.positions.data();
    in.segments = b.segment_ids.data();
    decoder_forward(m, ws, in);
    LossSum ls = decoder_lm_loss(m, ws, targets.data(), 0.f, false);
    loss_sum += ls.sum;
    tokens += ls.count;
  }
  if (tokens == 0) fail(o.get_string("data"), ": no token to predict (every sample is a single token?)");
  double loss = loss_sum / double(tokens);
  nlohmann::json j;
  j["eval_loss"] = loss;
  j["perplexity"] = std::exp(loss);
  j["tokens"] = tokens;
  j["samples"] = ds.samples.size();
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

Command eval_command() {
  CommandSpec s;
  s.name = "eval";
  s.summary = "Mean cross-entropy and perplexity of a JSONL/text file; accuracy, macro-F1 and confusion matrix "
              "for a classifier; MSE/RMSE/Pearson r for a regression head; pairwise accuracy for a reward model";
  add_model_options(s);
  s.add_string("data", std::nullopt, "JSONL with {\"text\"} or {\"prompt\",\"completion\"} rows, or a .txt file; for a classifier "
                    "{\"text\",\"label\"} rows (label: a number for a regression head), for a reward model "
                    "{\"prompt\",\"chosen\",\"rejected\"} rows")
      .required = true;
  s.add_int("max_seq_length", 1024, "truncate samples to this many tokens").min = 2;
  s.add_int("batch_size", 4, "samples per forward pass").min = 1;
  return {s, run};
}

}  // namespace llmtune::cli
