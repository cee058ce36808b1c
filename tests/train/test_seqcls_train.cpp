// Sequence classification and reward modelling through the Trainer's window-loss hook: gradient-
// accumulation consistency of the classification window loss, the chosen/rejected batch layout, and real
// results on the UCI sentiment set from the bundled stories260K model (freeze lower blocks → beats the
// majority class; a reward model on sentiment-built pairs → pairwise accuracy well above 50%).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "data/classification.h"
#include "data/loader.h"
#include "model/heads.h"
#include "peft/freeze.h"
#include "tokenizer/tokenizer.h"
#include "train/seqcls.h"
#include "train/trainer.h"
#include "train_test_util.h"

using namespace llmtune;
using llmtune::testing::TempDir;

namespace {

const std::string kModel = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";
const std::string kSentiment = std::string(LLMTUNE_SOURCE_DIR) + "/data/sentiment/";

struct Env {
  Tokenizer tok = Tokenizer::load(kModel);
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  EncodeFn enc = [this](std::string_view s, bool special) { return tok.encode(s, special); };
  int32_t pad() const { return resolve_pad_id(tids); }
  ClassificationDataset sentiment(const std::string& file) {
    ClassificationOptions co;
    co.max_length = 64;
    co.num_labels = 2;
    return load_classification_dataset(kSentiment + file, enc, tids, co);
  }
};

// Pairs built from the sentiment set: chosen = a positive sentence, rejected = a negative one, after the
// shared neutral prompt "Review: ".
PreferenceDataset sentiment_pairs(Env& env, const std::string& file, int64_t max_pairs) {
  const std::string text = [&] {
    std::ifstream f(kSentiment + file);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }();
  std::vector<std::string> pos, neg;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    (j["label"].get<int>() == 1 ? pos : neg).push_back(j["text"].get<std::string>());
  }
  std::string jsonl;
  for (size_t i = 0; i < std::min(pos.size(), neg.size()) && int64_t(i) < max_pairs; i++)
    jsonl += nlohmann::json{{"prompt", "Review: "}, {"chosen", pos[i]}, {"rejected", neg[i]}}.dump() + "\n";
  PreferenceOptions po;
  po.max_length = 64;
  return parse_preference_jsonl(jsonl, file, env.enc, env.tids, po);
}

TrainingArguments quick_args(const std::string& out, int64_t steps, double lr) {
  TrainingArguments a;
  a.output_dir = out;
  a.max_steps = steps;
  a.per_device_train_batch_size = 16;
  a.per_device_eval_batch_size = 64;
  a.learning_rate = lr;
  a.lr_scheduler_type = "linear";
  a.warmup_steps = 5;
  a.logging_steps = 1000;
  a.save_steps = 100000;  // only the final checkpoint
  a.weight_decay = 0.0;
  return a;
}

TrainerHooks quiet_hooks() {
  TrainerHooks h;
  h.save_model = [](const std::string&) {};
  return h;
}

}  // namespace

// Splitting a window into micro-batches must not change the gradient: the window loss is the mean over
// every labelled row of the window, whatever the micro-batching.
TEST(SeqClsTrain, WindowLossIsTheWindowMeanWhateverTheMicroBatching) {
  set_num_threads(1);
  Env env;
  ClassificationDataset ds = env.sentiment("test.jsonl");
  std::vector<Sample> samples = classification_samples(ds);
  samples.resize(12);
  SeqClsOptions so;
  so.num_labels = 2;
  so.seed = 3;
  Model m = load_model_for_classification(kModel, so);
  FreezeOptions fo;
  fo.method = "full";
  apply_freeze_policy(m, fo);
  Workspace ws;
  auto grads = [&](std::vector<std::vector<Sample>> parts, double* loss) {
    std::vector<Batch> window;
    for (auto& p : parts) window.push_back(collate(p, env.pad()));
    m.zero_grads();
    WindowLoss w = classification_window_loss(m, ws, window, nullptr);
    *loss = w.loss();
    std::vector<float> g;
    for (const Param& p : m.params)
      if (p.trainable) g.insert(g.end(), p.grad.f32(), p.grad.f32() + p.grad.numel());
    return g;
  };
  double l1 = 0, l2 = 0;
  std::vector<float> one = grads({samples}, &l1);
  std::vector<float> two = grads({{samples.begin(), samples.begin() + 5}, {samples.begin() + 5, samples.end()}}, &l2);
  EXPECT_NEAR(l1, l2, 1e-5);
  ASSERT_EQ(one.size(), two.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < one.size(); i++) {
    diff = std::max(diff, std::fabs(double(one[i]) - double(two[i])));
    ref = std::max(ref, std::fabs(double(one[i])));
  }
  EXPECT_GT(ref, 0);
  EXPECT_LT(diff / ref, 1e-4);
  // The labels travel in Batch::labels at each row's last real token.
  Batch b = collate(samples, env.pad());
  for (int64_t r = 0; r < b.B; r++) EXPECT_EQ(row_label(b, r), ds.samples[size_t(r)].label);
}

// Regression (num_labels 1): float targets travel exactly through Batch::labels, the window loss is the MSE
// of the head's outputs over the window's rows (HF MSELoss), whatever the micro-batching, and eval's
// metrics are the plain formulas.
TEST(SeqClsTrain, RegressionTargetsTravelExactlyAndWindowLossIsTheMse) {
  set_num_threads(1);
  Env env;
  std::string jsonl;
  const float targets[] = {0.75f, -1.25f, 3.1415926f, 0.f, -0.001f, 1e-8f, 2.5f, -7.f, 0.3f, 1.f};
  const char* texts[] = {"Great phone.", "Awful.", "Works fine, I guess", "ok", "Terrible battery life",
                         "Loved it!", "meh", "Never again.", "Good value for money.", "It broke."};
  for (int i = 0; i < 10; i++) jsonl += nlohmann::json{{"text", texts[i]}, {"label", targets[i]}}.dump() + "\n";
  ClassificationOptions co;
  co.regression = true;
  ClassificationDataset ds = parse_classification_jsonl(jsonl, "reg.jsonl", env.enc, env.tids, co);
  std::vector<Sample> samples = classification_samples(ds);
  Batch all = collate(samples, env.pad());
  for (int64_t r = 0; r < all.B; r++) EXPECT_EQ(row_target(all, r), targets[r]) << r;  // bit-exact

  SeqClsOptions so;
  so.num_labels = 1;
  so.problem_type = "regression";
  so.seed = 7;
  Model m = load_model_for_classification(kModel, so);
  EXPECT_EQ(resolve_problem_type(m.cfg), "regression");
  FreezeOptions fo;
  fo.method = "full";
  apply_freeze_policy(m, fo);
  Workspace ws;
  // The window loss against the formula on the head's outputs.
  const std::vector<float> z = batch_logits(m, ws, all);
  double mse = 0;
  for (int i = 0; i < 10; i++) mse += (double(z[size_t(i)]) - targets[i]) * (double(z[size_t(i)]) - targets[i]) / 10.0;
  auto grads = [&](std::vector<std::vector<Sample>> parts, double* loss) {
    std::vector<Batch> window;
    for (auto& p : parts) window.push_back(collate(p, env.pad()));
    m.zero_grads();
    WindowLoss w = regression_window_loss(m, ws, window, nullptr);
    EXPECT_EQ(w.tokens, 10);
    *loss = w.loss();
    std::vector<float> g;
    for (const Param& p : m.params)
      if (p.trainable) g.insert(g.end(), p.grad.f32(), p.grad.f32() + p.grad.numel());
    return g;
  };
  double l1 = 0, l2 = 0;
  std::vector<float> one = grads({samples}, &l1);
  std::vector<float> two = grads({{samples.begin(), samples.begin() + 3}, {samples.begin() + 3, samples.end()}}, &l2);
  EXPECT_NEAR(l1, mse, 1e-6 * (1 + mse));
  EXPECT_NEAR(l2, mse, 1e-6 * (1 + mse));
  ASSERT_EQ(one.size(), two.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < one.size(); i++) {
    diff = std::max(diff, std::fabs(double(one[i]) - double(two[i])));
    ref = std::max(ref, std::fabs(double(one[i])));
  }
  EXPECT_GT(ref, 0);
  EXPECT_LT(diff / ref, 1e-4);

  // Eval metrics: MSE, RMSE, MAE and Pearson r from the same outputs (batch size 4: several batches).
  LoaderOptions lo;
  lo.batch_size = 4;
  lo.shuffle = false;
  lo.pad_id = env.pad();
  DataLoader loader(samples, lo);
  const nlohmann::json j = regression_metrics(evaluate_regression(m, ws, loader));
  double mae = 0, mt = 0, mp = 0, st = 0, sp = 0, cov = 0;
  for (int i = 0; i < 10; i++) {
    mae += std::fabs(double(z[size_t(i)]) - targets[i]) / 10.0;
    mt += targets[i] / 10.0;
    mp += z[size_t(i)] / 10.0;
  }
  for (int i = 0; i < 10; i++) {
    st += (targets[i] - mt) * (targets[i] - mt);
    sp += (z[size_t(i)] - mp) * (z[size_t(i)] - mp);
    cov += (targets[i] - mt) * (z[size_t(i)] - mp);
  }
  EXPECT_EQ(j["samples"], 10);
  EXPECT_NEAR(j["mse"].get<double>(), mse, 1e-5 * (1 + mse));
  EXPECT_NEAR(j["rmse"].get<double>(), std::sqrt(mse), 1e-5);
  EXPECT_NEAR(j["mae"].get<double>(), mae, 1e-5);
  EXPECT_NEAR(j["pearson_r"].get<double>(), cov / std::sqrt(st * sp), 1e-4);
  EXPECT_NEAR(j["baseline_mse"].get<double>(), st / 10.0, 1e-6);
  // Pearson r of constant predictions is undefined: null, not 0.
  RegressionEval flat;
  flat.targets = {1.f, 2.f, 3.f};
  flat.predicted = {0.5f, 0.5f, 0.5f};
  const nlohmann::json fj = regression_metrics(flat);
  EXPECT_TRUE(fj["pearson_r"].is_null());
  EXPECT_NEAR(fj["mse"].get<double>(), (0.25 + 2.25 + 6.25) / 3.0, 1e-12);
  // A classification head refuses regression rows.
  SeqClsOptions two_labels;
  two_labels.num_labels = 2;
  Model m2 = load_model_for_classification(kModel, two_labels);
  std::vector<Batch> window = {all};
  try {
    regression_window_loss(m2, ws, window, nullptr);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_labels must be 1"), std::string::npos) << e.what();
  }
}

TEST(SeqClsTrain, PairBatchSplitsIntoChosenThenRejectedRows) {
  Env env;
  PreferenceDataset pd = sentiment_pairs(env, "test.jsonl", 3);
  std::vector<Sample> s = preference_samples(pd);
  Batch pairs = collate(s, env.pad());
  Batch b = split_pair_batch(pairs, env.pad());
  ASSERT_EQ(b.B, 6);
  for (int64_t i = 0; i < 3; i++) {
    const PreferenceSample& ps = pd.samples[size_t(i)];
    for (auto [row, ids] : {std::pair{i, &ps.chosen}, std::pair{3 + i, &ps.rejected}}) {
      for (int64_t t = 0; t < b.T; t++) {
        const size_t k = size_t(row * b.T + t);
        if (t < int64_t(ids->size())) {
          EXPECT_EQ(b.input_ids[k], (*ids)[size_t(t)]);
          EXPECT_EQ(b.positions[k], t);
          EXPECT_EQ(b.segment_ids[k], 0);
        } else {
          EXPECT_EQ(b.segment_ids[k], -1);
        }
      }
    }
  }
}

// The classic PEFT transfer-learning example: freeze the lower blocks of a pretrained model, train the
// rest + the new head on the labelled set, test on the held-out split. Majority class on test.jsonl:
// 309 / 600 = 51.5%; we require >= 60% (8.5 points above it) after 60 steps of 16 at lr 2e-3 (measured:
// 66.8%; this tiny model's accuracy moves by a few points from one eval to the next, so the bar sits well
// below it). docs/classification.md has the longer runs of every method.
TEST(SeqClsTrain, FreezingLowerBlocksBeatsTheMajorityClassOnHeldOutSentiment) {
  set_num_threads(1);
  Env env;
  ClassificationDataset tr = env.sentiment("train.jsonl"), te = env.sentiment("test.jsonl");
  ASSERT_EQ(te.label_counts, (std::vector<int64_t>{309, 291}));
  SeqClsOptions so;
  so.num_labels = 2;
  so.seed = 42;
  so.pad_token_id = env.pad();
  Model m = load_model_for_classification(kModel, so);
  FreezeOptions fo;
  fo.trainable_layers = 3;  // blocks 2..4 of 5 train; 0..1 stay frozen
  apply_freeze_policy(m, fo);
  classification_head(m).weight->trainable = true;
  m.sync_grad_buffers();

  LoaderOptions lo;
  lo.batch_size = 16;
  lo.seed = 42;
  lo.pad_id = env.pad();
  DataLoader loader(classification_samples(tr), lo);
  std::vector<Sample> eval = classification_samples(te);
  TempDir dir("seqcls_freeze");
  TrainerHooks h = quiet_hooks();
  h.window_loss = classification_window_loss;
  h.eval_metrics = classification_eval_entry;
  Trainer trainer(m, loader, &eval, quick_args(dir.path, 60, 2e-3), h);
  trainer.train();
  const nlohmann::json after = trainer.evaluate();
  const double acc = after["eval_accuracy"].get<double>();
  std::printf("freeze (3 of 5 blocks + head), 60 steps: eval_accuracy %.4f, eval_loss %.4f\n", acc,
              after["eval_loss"].get<double>());
  EXPECT_GE(acc, 0.60);
}

// Reward model on pairs constructed from the sentiment set (chosen = positive review, rejected = negative
// review, shared prompt "Review: "): train pairs from train.jsonl, held-out pairs from test.jsonl.
TEST(SeqClsTrain, RewardModelRanksHeldOutPairsWellAboveChance) {
  set_num_threads(1);
  Env env;
  PreferenceDataset tr = sentiment_pairs(env, "train.jsonl", 1000), te = sentiment_pairs(env, "test.jsonl", 291);
  SeqClsOptions so;
  so.num_labels = 1;
  so.seed = 42;
  so.pad_token_id = env.pad();
  Model m = load_model_for_classification(kModel, so);
  FreezeOptions fo;
  fo.trainable_layers = 3;
  apply_freeze_policy(m, fo);
  classification_head(m).weight->trainable = true;
  m.sync_grad_buffers();
  LoaderOptions lo;
  lo.batch_size = 16;
  lo.seed = 42;
  lo.pad_id = env.pad();
  DataLoader loader(preference_samples(tr), lo);
  std::vector<Sample> eval = preference_samples(te);
  TempDir dir("seqcls_reward");
  TrainerHooks h = quiet_hooks();
  h.window_loss = reward_window_loss(env.pad());
  h.eval_metrics = reward_eval_entry;
  Trainer trainer(m, loader, &eval, quick_args(dir.path, 30, 3e-3), h);
  trainer.train();
  const nlohmann::json e = trainer.evaluate();
  std::printf("reward model, 30 steps: pairwise accuracy %.4f, mean margin %.4f\n", e["eval_accuracy"].get<double>(),
              e["eval_mean_margin"].get<double>());
  EXPECT_GE(e["eval_accuracy"].get<double>(), 0.60);
  EXPECT_GT(e["eval_mean_margin"].get<double>(), 0.0);
}
