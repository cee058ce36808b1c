// Real learning, end to end in-process: the bundled stories260K model (Llama, trained on children's
// stories) gets LoRA adapters (all-linear, r 8) and the Trainer fine-tunes them on a slice of tiny
// Shakespeare. The held-out Shakespeare eval loss must fall by at least 15% within 40 steps.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/threads.h"
#include "data/collator.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/atomic_file.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"
#include "train_test_util.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

Dataset text_slice(const std::string& path, size_t chars, const Tokenizer& tok, const TokenIds& tids,
                   int64_t max_seq_length) {
  std::string text = read_file(path).substr(0, chars);
  DatasetOptions o;
  o.max_seq_length = max_seq_length;
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  return tokenize_plain_text(text, enc, tids, o, path);
}

}  // namespace

TEST(TrainRealLearning, StoriesLoraOnShakespeareEvalLossFallsAtLeast15PercentIn40Steps) {
  const int threads_before = num_threads();
  set_num_threads(1);  // a tiny model: one thread is fastest on a shared machine
  const std::string src = LLMTUNE_SOURCE_DIR;
  const std::string model_dir = src + "/models/stories260K";
  Model m = load_model(model_dir);
  Tokenizer tok = Tokenizer::load(model_dir);
  const TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  Dataset train = text_slice(src + "/data/tinyshakespeare/train.txt", 24000, tok, tids, 64);
  Dataset eval = text_slice(src + "/data/tinyshakespeare/eval.txt", 6000, tok, tids, 64);
  ASSERT_GT(train.samples.size(), 50u);
  ASSERT_GT(eval.samples.size(), 10u);

  LoraConfig lc;
  lc.r = 8;
  lc.lora_alpha = 16;
  lc.target_modules = ModuleSelector::pattern("all-linear");
  Rng init(42);
  const LoraConfig resolved = apply_lora(m, lc, init);

  LoaderOptions lo;
  lo.batch_size = 8;
  lo.seed = 42;
  lo.max_seq_length = 64;
  lo.pad_id = resolve_pad_id(tids);
  DataLoader loader(train.samples, lo);

  TempDir out("real_learning");
  TrainingArguments args;
  args.output_dir = out.path + "/run";
  args.max_steps = 40;
  args.per_device_train_batch_size = 8;
  args.per_device_eval_batch_size = 16;
  args.learning_rate = 1e-2;
  args.lr_scheduler_type = "constant";
  args.logging_steps = 10;
  args.save_steps = 1000;
  TrainerHooks hooks;
  hooks.save_model = [&](const std::string& dir) { save_adapter(m, resolved, dir); };
  Trainer trainer(m, loader, &eval.samples, args, hooks);
  const double before = trainer.evaluate().value("eval_loss", NAN);
  trainer.train();
  const double after = trainer.evaluate().value("eval_loss", NAN);
  ASSERT_TRUE(std::isfinite(before) && std::isfinite(after));
  set_num_threads(threads_before);
  std::printf("eval loss %.4f -> %.4f (%.1f%%)\n", before, after, 100 * (after - before) / before);
  EXPECT_LE(after, 0.85 * before) << "eval loss " << before << " -> " << after;
  // The base weights did not move: only the adapters learned.
  Model base = load_model(model_dir);
  for (const Param& p : base.params) {
    const Param* q = m.find(p.name);
    ASSERT_NE(q, nullptr) << p.name;
    EXPECT_EQ(std::memcmp(q->value.data, p.value.data, p.value.nbytes()), 0) << p.name;
  }
}
