// Classification / reward training and evaluation on the Trainer: label carriage in Batch, window
// losses (CE, Bradley–Terry) and the metrics of `llmtune eval`.
#include "train/seqcls.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace llmtune {

namespace {

constexpr int32_t kIgnore = -100;

DecoderInput input_of(const Batch& b, Rng* dropout_rng) {
  DecoderInput in;
  in.B = b.B;
  in.T = b.T;
  in.ids = b.input_ids.data();
  in.positions = b.positions.data();
  in.segments = b.segment_ids.data();
  in.dropout_rng = dropout_rng;
  return in;
}

int64_t labelled_rows(const Batch& b) {
  int64_t n = 0;
  for (int64_t r = 0; r < b.B; r++) n += row_label(b, r) != kIgnore;
  return n;
}

std::vector<int32_t> row_labels(const Batch& b) {
  std::vector<int32_t> out(size_t(b.B));
  for (int64_t r = 0; r < b.B; r++) out[size_t(r)] = row_label(b, r);
  return out;
}

void add_batch_stats(WindowLoss& w, const Batch& b) {
  for (int32_t a : b.attention_mask) w.input_tokens += a != 0;
  w.samples += b.num_samples;
}

}  // namespace

std::vector<Sample> classification_samples(const ClassificationDataset& ds) {
  std::vector<Sample> out;
  out.reserve(ds.samples.size());
  for (const ClassificationSample& s : ds.samples) {
    Sample x;
    x.ids = s.ids;
    x.labels.assign(s.ids.size(), kIgnore);
    if (ds.regression) {
      if (!std::isfinite(s.target)) fail(ds.source, ":", s.line, ": regression target ", s.target, " is not finite");
      x.labels.back() = std::bit_cast<int32_t>(s.target);
    } else {
      x.labels.back() = s.label;
    }
    out.push_back(std::move(x));
  }
  return out;
}

std::vector<Sample> preference_samples(const PreferenceDataset& ds) {
  std::vector<Sample> out;
  out.reserve(ds.samples.size());
  for (const PreferenceSample& s : ds.samples) {
    Sample x;
    x.ids = s.chosen;
    x.ids.insert(x.ids.end(), s.rejected.begin(), s.rejected.end());
    x.labels.assign(x.ids.size(), kIgnore);
    x.labels[s.chosen.size() - 1] = kPairBoundary;
    out.push_back(std::move(x));
  }
  return out;
}

int32_t row_label(const Batch& batch, int64_t b) {
  for (int64_t t = batch.T - 1; t >= 0; t--)
    if (batch.labels[size_t(b * batch.T + t)] != kIgnore) return batch.labels[size_t(b * batch.T + t)];
  return kIgnore;
}

float row_target(const Batch& batch, int64_t b) {
  const int32_t bits = row_label(batch, b);
  const float t = std::bit_cast<float>(bits);
  if (bits == kIgnore || !std::isfinite(t)) fail("internal: batch row ", b, " carries no regression target");
  return t;
}

Batch split_pair_batch(const Batch& pairs, int32_t pad_id) {
  const int64_t B = pairs.B, T = pairs.T;
  std::vector<std::vector<int32_t>> rows(size_t(2 * B));
  for (int64_t b = 0; b < B; b++) {
    int64_t boundary = -1, len = 0;
    for (int64_t t = 0; t < T; t++) {
      const size_t i = size_t(b * T + t);
      if (pairs.segment_ids[i] >= 0) len = t + 1;
      if (pairs.labels[i] == kPairBoundary) boundary = t;
    }
    if (pairs.segment_ids.empty() || boundary < 0 || boundary + 1 >= len)
      fail("internal: batch row ", b, " is not a chosen/rejected pair (packing is not supported for reward data)");
    const int32_t* ids = pairs.input_ids.data() + b * T;
    rows[size_t(b)].assign(ids, ids + boundary + 1);
    rows[size_t(B + b)].assign(ids + boundary + 1, ids + len);
  }
  int64_t TT = 1;
  for (auto& r : rows) TT = std::max<int64_t>(TT, int64_t(r.size()));
  Batch out;
  out.B = 2 * B;
  out.T = TT;
  const size_t n = size_t(out.B * TT);
  out.input_ids.assign(n, pad_id);
  out.labels.assign(n, kIgnore);
  out.positions.assign(n, 0);
  out.segment_ids.assign(n, -1);
  out.attention_mask.assign(n, 0);
  for (int64_t r = 0; r < out.B; r++)
    for (int64_t t = 0; t < int64_t(rows[size_t(r)].size()); t++) {
      const size_t i = size_t(r * TT + t);
      out.input_ids[i] = rows[size_t(r)][size_t(t)];
      out.positions[i] = int32_t(t);
      out.segment_ids[i] = 0;
      out.attention_mask[i] = 1;
    }
  out.num_samples = out.B;
  return out;
}

WindowLoss classification_window_loss(Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng) {
  WindowLoss w;
  for (const Batch& b : window) {
    w.tokens += labelled_rows(b);
    add_batch_stats(w, b);
  }
  if (w.tokens == 0) return w;
  const ClassificationHead head = classification_head(m);
  for (const Batch& b : window) {
    const int64_t n = labelled_rows(b);
    if (n == 0) continue;
    const std::vector<int32_t> labels = row_labels(b);
    const DecoderInput in = input_of(b, dropout_rng);
    decoder_forward(m, ws, in);
    const HeadOutput out = head_forward(head, ws, b.segment_ids.data());
    // The CE is a mean over this batch's n rows; scaled by n / window rows it becomes the window mean.
    const double mean = classification_ce_loss(head, ws, out, labels.data(), float(double(n) / double(w.tokens)), true);
    w.loss_sum += mean * double(n);
    decoder_backward(m, ws, in);
  }
  return w;
}

WindowLoss regression_window_loss(Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng) {
  WindowLoss w;
  for (const Batch& b : window) {
    w.tokens += b.B;
    add_batch_stats(w, b);
  }
  if (w.tokens == 0) return w;
  const ClassificationHead head = classification_head(m);
  if (head.num_labels != 1)
    fail("regression rows carry one number but the head has ", head.num_labels, " outputs (num_labels must be 1)");
  for (const Batch& b : window) {
    if (b.B == 0) continue;
    std::vector<float> targets(size_t(b.B));
    for (int64_t r = 0; r < b.B; r++) targets[size_t(r)] = row_target(b, r);
    const DecoderInput in = input_of(b, dropout_rng);
    decoder_forward(m, ws, in);
    const HeadOutput out = head_forward(head, ws, b.segment_ids.data());
    // MSE is a mean over this batch's rows; scaled by B / window rows it becomes the window mean.
    const double mean = regression_mse_loss(head, ws, out, targets.data(), float(double(b.B) / double(w.tokens)), true);
    w.loss_sum += mean * double(b.B);
    decoder_backward(m, ws, in);
  }
  return w;
}

WindowLossFn reward_window_loss(int32_t pad_id) {
  return [pad_id](Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng) {
    WindowLoss w;
    for (const Batch& b : window) {
      w.tokens += b.B;
      add_batch_stats(w, b);
    }
    if (w.tokens == 0) return w;
    const ClassificationHead head = classification_head(m);
    for (const Batch& pb : window) {
      const Batch b = split_pair_batch(pb, pad_id);
      const DecoderInput in = input_of(b, dropout_rng);
      decoder_forward(m, ws, in);
      const HeadOutput out = head_forward(head, ws, b.segment_ids.data());
      const RewardLoss r = reward_bt_loss(head, ws, out, split_halves_pairs(b.B), 0.0,
                                          float(double(pb.B) / double(w.tokens)), true);
      w.loss_sum += r.loss * double(pb.B);
      decoder_backward(m, ws, in);
    }
    return w;
  };
}

std::vector<float> batch_logits(Model& m, Workspace& ws, const Batch& b) {
  const ClassificationHead head = classification_head(m);
  decoder_forward(m, ws, input_of(b, nullptr));
  return head_forward(head, ws, b.segment_ids.data()).logits;
}

ClassificationEval evaluate_classification(Model& m, Workspace& ws, const DataLoader& loader) {
  ClassificationEval e;
  const ClassificationHead head = classification_head(m);
  const int64_t L = head.num_labels;
  e.num_labels = L;
  double loss_sum = 0;
  int64_t counted = 0;
  for (int64_t i = 0; i < loader.num_batches_per_epoch(); i++) {
    const Batch b = loader.get(0, i);
    const std::vector<float> logits = batch_logits(m, ws, b);
    for (int64_t r = 0; r < b.B; r++) {
      const float* z = logits.data() + r * L;
      const double mx = *std::max_element(z, z + L);
      double se = 0;
      for (int64_t l = 0; l < L; l++) se += std::exp(double(z[l]) - mx);
      const double lse = mx + std::log(se);
      int32_t pred = 0;
      for (int64_t l = 0; l < L; l++) {
        e.probabilities.push_back(float(std::exp(double(z[l]) - lse)));
        if (z[l] > z[pred]) pred = int32_t(l);
      }
      const int32_t label = row_label(b, r);
      if (label != kIgnore && (label < 0 || label >= L))
        fail("label ", label, " is outside [0, ", L, "): the model has ", L, " labels");
      if (label != kIgnore) {
        loss_sum += lse - double(z[label]);
        counted++;
      }
      e.labels.push_back(label);
      e.predicted.push_back(pred);
    }
  }
  e.loss = counted ? loss_sum / double(counted) : std::numeric_limits<double>::quiet_NaN();
  return e;
}

nlohmann::json classification_metrics(const ClassificationEval& e, const std::vector<std::string>& id2label) {
  const int64_t L = e.num_labels;
  std::vector<std::vector<int64_t>> cm(size_t(L), std::vector<int64_t>(size_t(L), 0));
  int64_t n = 0, correct = 0;
  for (size_t i = 0; i < e.labels.size(); i++) {
    if (e.labels[i] == kIgnore) continue;
    cm[size_t(e.labels[i])][size_t(e.predicted[i])]++;
    n++;
    correct += e.labels[i] == e.predicted[i];
  }
  nlohmann::json per = nlohmann::json::array();
  double f1_sum = 0;
  for (int64_t c = 0; c < L; c++) {
    int64_t support = 0, predicted = 0;
    for (int64_t k = 0; k < L; k++) {
      support += cm[size_t(c)][size_t(k)];
      predicted += cm[size_t(k)][size_t(c)];
    }
    const int64_t tp = cm[size_t(c)][size_t(c)];
    // sklearn's zero_division=0: an undefined precision/recall counts as 0.
    const double precision = predicted ? double(tp) / double(predicted) : 0.0;
    const double recall = support ? double(tp) / double(support) : 0.0;
    const double f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
    f1_sum += f1;
    per.push_back({{"label", c < int64_t(id2label.size()) ? id2label[size_t(c)] : std::to_string(c)},
                   {"id", c},
                   {"support", support},
                   {"predicted", predicted},
                   {"correct", tp},
                   {"precision", precision},
                   {"recall", recall},
                   {"f1", f1}});
  }
  return {{"accuracy", n ? double(correct) / double(n) : 0.0},
          {"macro_f1", L ? f1_sum / double(L) : 0.0},
          {"samples", n},
          {"loss", e.loss},
          {"per_class", per},
          {"confusion_matrix", cm}};
}

RegressionEval evaluate_regression(Model& m, Workspace& ws, const DataLoader& loader) {
  RegressionEval e;
  const ClassificationHead head = classification_head(m);
  if (head.num_labels != 1)
    fail("regression rows carry one number but the head has ", head.num_labels, " outputs (num_labels must be 1)");
  for (int64_t i = 0; i < loader.num_batches_per_epoch(); i++) {
    const Batch b = loader.get(0, i);
    const std::vector<float> z = batch_logits(m, ws, b);
    for (int64_t r = 0; r < b.B; r++) {
      e.targets.push_back(row_target(b, r));
      e.predicted.push_back(z[size_t(r)]);
    }
  }
  return e;
}

nlohmann::json regression_metrics(const RegressionEval& e) {
  const size_t n = e.targets.size();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  double se = 0, ae = 0, mt = 0, mp = 0;
  for (size_t i = 0; i < n; i++) {
    const double d = double(e.predicted[i]) - double(e.targets[i]);
    se += d * d;
    ae += std::fabs(d);
    mt += e.targets[i];
    mp += e.predicted[i];
  }
  if (n) {
    mt /= double(n);
    mp /= double(n);
  }
  double vt = 0, vp = 0, cov = 0;  // sums of squares about the means (two-pass: no cancellation)
  for (size_t i = 0; i < n; i++) {
    const double a = double(e.targets[i]) - mt, b = double(e.predicted[i]) - mp;
    vt += a * a;
    vp += b * b;
    cov += a * b;
  }
  const double mse = n ? se / double(n) : nan;
  nlohmann::json j = {{"samples", int64_t(n)},
                      {"mse", mse},
                      {"rmse", std::sqrt(mse)},
                      {"mae", n ? ae / double(n) : nan},
                      {"loss", mse},
                      {"target_mean", n ? mt : nan},
                      {"target_std", n ? std::sqrt(vt / double(n)) : nan},
                      {"baseline_mse", n ? vt / double(n) : nan}};
  // Pearson r is undefined when either side is constant: JSON null rather than a made-up 0.
  j["pearson_r"] = vt > 0 && vp > 0 ? nlohmann::json(cov / std::sqrt(vt * vp)) : nlohmann::json(nullptr);
  return j;
}

RewardEval evaluate_reward(Model& m, Workspace& ws, const DataLoader& loader) {
  RewardEval e;
  const ClassificationHead head = classification_head(m);
  if (head.num_labels != 1) fail("a reward model has one output (num_labels 1), this one has ", head.num_labels);
  double loss = 0, acc = 0, margin = 0;
  for (int64_t i = 0; i < loader.num_batches_per_epoch(); i++) {
    const Batch pb = loader.get(0, i);
    const Batch b = split_pair_batch(pb, loader.options.pad_id);
    const std::vector<float> r = batch_logits(m, ws, b);
    const RewardLoss bt = bradley_terry_loss(r.data(), b.B, split_halves_pairs(b.B));
    loss += bt.loss * double(pb.B);
    acc += bt.accuracy * double(pb.B);
    margin += bt.mean_margin * double(pb.B);
    e.pairs += pb.B;
    for (int64_t k = 0; k < pb.B; k++) {
      e.chosen_rewards.push_back(r[size_t(k)]);
      e.rejected_rewards.push_back(r[size_t(pb.B + k)]);
    }
  }
  if (e.pairs > 0) {
    e.loss = loss / double(e.pairs);
    e.accuracy = acc / double(e.pairs);
    e.mean_margin = margin / double(e.pairs);
  }
  return e;
}

nlohmann::json classification_eval_entry(Model& m, Workspace& ws, const DataLoader& loader) {
  const ClassificationEval e = evaluate_classification(m, ws, loader);
  const nlohmann::json j = classification_metrics(e, m.cfg.id2label);
  return {{"eval_loss", e.loss}, {"eval_accuracy", j["accuracy"]}, {"eval_macro_f1", j["macro_f1"]}};
}

nlohmann::json regression_eval_entry(Model& m, Workspace& ws, const DataLoader& loader) {
  const nlohmann::json j = regression_metrics(evaluate_regression(m, ws, loader));
  return {{"eval_loss", j["mse"]}, {"eval_rmse", j["rmse"]}, {"eval_mae", j["mae"]}, {"eval_pearson_r", j["pearson_r"]}};
}

nlohmann::json reward_eval_entry(Model& m, Workspace& ws, const DataLoader& loader) {
  const RewardEval e = evaluate_reward(m, ws, loader);
  return {{"eval_loss", e.loss}, {"eval_accuracy", e.accuracy}, {"eval_mean_margin", e.mean_margin}};
}

}  // namespace llmtune
