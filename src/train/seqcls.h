// Sequence classification and reward modelling on top of the Trainer: how labelled / preference rows
// travel through the ordinary DataLoader + Batch, the window losses and eval metrics plugged into
// TrainerHooks, and the metrics (accuracy, macro-F1, confusion matrix, pairwise accuracy) `eval` prints.
//
// Carrying labels in Batch without new collator fields (the DataLoader shuffles and batches Samples):
//  * classification: Sample.ids = the text's ids; Sample.labels = -100 everywhere except the LAST token,
//    which holds the class id. row_label() reads it back from Batch::labels.
//  * regression (num_labels 1, HF problem_type "regression"): the same place holds the float target's
//    BIT PATTERN (std::bit_cast<int32_t>); row_target() reads it back. Targets are finite, and -100's bit
//    pattern (0xFFFFFF9C) is a NaN, so a target can never be mistaken for "no label".
//  * reward pairs: Sample.ids = chosen ⊕ rejected; labels = -100 except kPairBoundary at the last chosen
//    token. split_pair_batch() turns a batch of B such rows into 2B rows: 0..B−1 chosen, B..2B−1 rejected
//    (split_halves_pairs' layout), each right-padded with its own positions. Packing is refused for both.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/classification.h"
#include "data/collator.h"
#include "data/loader.h"
#include "model/heads.h"
#include "train/trainer.h"

namespace llmtune {

constexpr int32_t kPairBoundary = 1;

std::vector<Sample> classification_samples(const ClassificationDataset& ds);
std::vector<Sample> preference_samples(const PreferenceDataset& ds);

// The class id carried by row b (its last label != -100; -100 when none).
int32_t row_label(const Batch& batch, int64_t b);
// The regression target carried by row b (fails when the row carries none).
float row_target(const Batch& batch, int64_t b);
// Rows of chosen ⊕ rejected → chosen rows then rejected rows (see the top of the file).
Batch split_pair_batch(const Batch& pairs, int32_t pad_id);

// TrainerHooks::window_loss for classification: mean cross-entropy over the window's labelled rows
// (WindowLoss::tokens = rows). Reward: mean Bradley–Terry loss over the window's pairs (tokens = pairs).
WindowLoss classification_window_loss(Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng);
// Regression: mean squared error over the window's rows (tokens = rows), HF's MSELoss for num_labels 1.
WindowLoss regression_window_loss(Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng);
WindowLossFn reward_window_loss(int32_t pad_id);

// Logits [rows, num_labels] of one collated batch (no dropout).
std::vector<float> batch_logits(Model& m, Workspace& ws, const Batch& b);

struct ClassificationEval {
  int64_t num_labels = 0;
  double loss = 0;                        // mean CE over rows
  std::vector<int32_t> labels, predicted; // per row, loader order
  std::vector<float> probabilities;       // [rows, num_labels]
};
ClassificationEval evaluate_classification(Model& m, Workspace& ws, const DataLoader& loader);
// {"accuracy", "macro_f1", "samples", "per_class": [{"label", "support", "predicted", "correct",
//  "precision", "recall", "f1"}], "confusion_matrix": rows = true label, columns = predicted}.
// id2label names the classes (may be shorter: then the id).
nlohmann::json classification_metrics(const ClassificationEval& e, const std::vector<std::string>& id2label);

struct RegressionEval {
  std::vector<float> targets, predicted;  // per row, loader order
};
RegressionEval evaluate_regression(Model& m, Workspace& ws, const DataLoader& loader);
// {"samples", "mse", "rmse", "mae", "pearson_r" (null when either side is constant), "loss" (= mse, what
// HF's Trainer reports as eval_loss), "target_mean", "target_std", "baseline_mse" (MSE of always predicting
// the eval targets' mean = their variance: what a model has to beat)}.
nlohmann::json regression_metrics(const RegressionEval& e);

struct RewardEval {
  double loss = 0, accuracy = 0, mean_margin = 0;  // over every pair
  int64_t pairs = 0;
  std::vector<float> chosen_rewards, rejected_rewards;
};
RewardEval evaluate_reward(Model& m, Workspace& ws, const DataLoader& loader);

// TrainerHooks::eval_metrics: eval_loss + eval_accuracy (+ eval_macro_f1); eval_loss (MSE) + eval_rmse +
// eval_mae + eval_pearson_r for regression; or eval_loss + eval_accuracy (pairwise) + eval_mean_margin for a
// reward model.
nlohmann::json classification_eval_entry(Model& m, Workspace& ws, const DataLoader& loader);
nlohmann::json regression_eval_entry(Model& m, Workspace& ws, const DataLoader& loader);
nlohmann::json reward_eval_entry(Model& m, Workspace& ws, const DataLoader& loader);

}  // namespace llmtune
