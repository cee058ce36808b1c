// Data loader: every sample once per epoch, deterministic (seed, epoch) order for exact resume,
// packing, and the HF Trainer step arithmetic (hf-semantics §4.2, §4.12).
#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "data/loader.h"

using namespace llmtune;

namespace {

// Sample i has ids {100+i, 100+i, ...} of length 1 + i % 5, so every token names its sample.
std::vector<Sample> numbered_samples(int n) {
  std::vector<Sample> out;
  for (int i = 0; i < n; ++i) {
    Sample s;
    s.ids.assign(size_t(1 + i % 5), 100 + i);
    s.labels = s.ids;
    out.push_back(s);
  }
  return out;
}

// The sample ids seen in a batch, in row order (first token of each segment).
std::vector<int> samples_in(const Batch& b) {
  std::vector<int> out;
  for (int64_t i = 0; i < b.B * b.T; ++i)
    if (b.segment_ids[size_t(i)] >= 0 && b.positions[size_t(i)] == 0) out.push_back(b.input_ids[size_t(i)] - 100);
  return out;
}

std::vector<int> epoch_samples(const DataLoader& dl, int64_t epoch) {
  std::vector<int> out;
  for (int64_t i = 0; i < dl.num_batches_per_epoch(); ++i) {
    auto s = samples_in(dl.get(epoch, i));
    out.insert(out.end(), s.begin(), s.end());
  }
  return out;
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.B == b.B && a.T == b.T && a.input_ids == b.input_ids && a.labels == b.labels &&
         a.positions == b.positions && a.segment_ids == b.segment_ids;
}

}  // namespace

TEST(DataLoader, EverySampleOncePerEpochAndLastBatchSmaller) {
  LoaderOptions opt;
  opt.batch_size = 3;
  DataLoader dl(numbered_samples(10), opt);
  EXPECT_EQ(dl.num_batches_per_epoch(), 4);  // drop_last = false
  EXPECT_EQ(dl.get(0, 3).B, 1);
  EXPECT_EQ(dl.get(0, 0).B, 3);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    auto seen = epoch_samples(dl, epoch);
    std::sort(seen.begin(), seen.end());
    std::vector<int> all(10);
    for (int i = 0; i < 10; ++i) all[size_t(i)] = i;
    EXPECT_EQ(seen, all);
  }
  EXPECT_THROW(dl.get(0, 4), Error);
  EXPECT_THROW(dl.get(-1, 0), Error);
}

TEST(DataLoader, SameSeedAndEpochGiveTheSameBatchesInAnyOrder) {
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.seed = 1234;
  DataLoader a(numbered_samples(30), opt), b(numbered_samples(30), opt);
  // Resume: fetching epoch 2 batch 5 first (as a resumed run would) equals the uninterrupted sequence.
  Batch resumed = b.get(2, 5);
  for (int64_t e = 0; e < 3; ++e)
    for (int64_t i = 0; i < a.num_batches_per_epoch(); ++i) a.get(e, i);
  EXPECT_TRUE(same_batch(a.get(2, 5), resumed));
  EXPECT_EQ(epoch_samples(a, 1), epoch_samples(b, 1));
}

TEST(DataLoader, EpochsAndSeedsGiveDifferentOrders) {
  LoaderOptions opt;
  opt.batch_size = 4;
  DataLoader dl(numbered_samples(30), opt);
  EXPECT_NE(epoch_samples(dl, 0), epoch_samples(dl, 1));
  EXPECT_NE(epoch_samples(dl, 1), epoch_samples(dl, 2));
  opt.seed = 43;
  DataLoader other(numbered_samples(30), opt);
  EXPECT_NE(epoch_samples(dl, 0), epoch_samples(other, 0));
  std::vector<int> identity(30);
  for (int i = 0; i < 30; ++i) identity[size_t(i)] = i;
  EXPECT_NE(epoch_samples(dl, 0), identity);
  // (seed 0, epoch 1) must not repeat (seed 1, epoch 0), as seed + epoch would.
  opt.seed = 0;
  DataLoader s0(numbered_samples(30), opt);
  opt.seed = 1;
  DataLoader s1(numbered_samples(30), opt);
  EXPECT_NE(epoch_samples(s0, 1), epoch_samples(s1, 0));
}

TEST(DataLoader, NoShuffleKeepsFileOrder) {
  LoaderOptions opt;
  opt.batch_size = 4;
  opt.shuffle = false;
  DataLoader dl(numbered_samples(9), opt);
  std::vector<int> identity(9);
  for (int i = 0; i < 9; ++i) identity[size_t(i)] = i;
  EXPECT_EQ(epoch_samples(dl, 0), identity);
  EXPECT_EQ(epoch_samples(dl, 3), identity);
}

TEST(DataLoader, PackingBatchesRowsAndKeepsEverySample) {
  LoaderOptions opt;
  opt.batch_size = 2;
  opt.packing = true;
  opt.max_seq_length = 8;
  auto samples = numbered_samples(20);  // lengths 1..5, 60 tokens in all
  DataLoader dl(samples, opt);
  EXPECT_LT(dl.num_rows(), 20);
  EXPECT_GE(dl.num_rows(), 8);  // at least ceil(60 / 8)
  EXPECT_EQ(dl.num_batches_per_epoch(), (dl.num_rows() + 1) / 2);
  int64_t tokens = 0, label_tokens = 0;
  for (int64_t i = 0; i < dl.num_batches_per_epoch(); ++i) {
    Batch b = dl.get(1, i);
    EXPECT_LE(b.T, 8);
    for (int32_t m : b.attention_mask) tokens += m;
    label_tokens += b.num_label_tokens;
  }
  EXPECT_EQ(tokens, 60);
  EXPECT_EQ(label_tokens, 60);
  auto seen = epoch_samples(dl, 1);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen.size(), 20u);
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end());
  EXPECT_NE(epoch_samples(dl, 0), epoch_samples(dl, 1));
}

TEST(DataLoader, HfStepArithmetic) {
  // 10 examples, batch 3, GA 2 → len_dl 4, 2 update steps per epoch (the second window is full;
  // with GA 3 the last window holds 1 micro-batch and is still a step).
  const int64_t len_dl = num_batches(10, 3);
  EXPECT_EQ(len_dl, 4);
  EXPECT_EQ(num_update_steps_per_epoch(len_dl, 2), 2);
  EXPECT_EQ(num_update_steps_per_epoch(len_dl, 3), 2);
  EXPECT_EQ(num_update_steps_per_epoch(len_dl, 4), 1);
  EXPECT_EQ(num_update_steps_per_epoch(1, 8), 1);
  EXPECT_EQ(num_update_steps_per_epoch(0, 8), 1);  // max(1, ...)
  EXPECT_THROW(num_update_steps_per_epoch(4, 0), Error);
  // Epochs → max_steps; max_steps overrides epochs.
  EXPECT_EQ(total_max_steps(3.0, -1, 2), 6);
  EXPECT_EQ(total_max_steps(2.5, -1, 3), 8);  // ceil(7.5)
  EXPECT_EQ(total_max_steps(3.0, 5, 2), 5);
  EXPECT_EQ(num_epochs_to_run(3.0, 5, 2), 3);  // data cycled: ceil(5 / 2)
  EXPECT_EQ(num_epochs_to_run(2.5, -1, 3), 3);
  EXPECT_EQ(num_epochs_to_run(1.0, 4, 2), 2);
  // state.epoch after micro-batch m of epoch e = e + (m + 1) / len_dl.
  EXPECT_DOUBLE_EQ(epoch_after_micro_step(0, 1, 4), 0.5);
  EXPECT_DOUBLE_EQ(epoch_after_micro_step(1, 3, 4), 2.0);
  // Accumulation windows of epoch with len_dl 4, GA 3: [0, 3) then the short [3, 4).
  EXPECT_EQ(accumulation_window(0, 4, 3).begin, 0);
  EXPECT_EQ(accumulation_window(0, 4, 3).end, 3);
  EXPECT_EQ(accumulation_window(1, 4, 3).begin, 3);
  EXPECT_EQ(accumulation_window(1, 4, 3).end, 4);
  // Resume after 3 steps with 2 steps/epoch, GA 2: epoch 1, skip 2 micro-batches.
  ResumePoint p = resume_point(3, 2, 2);
  EXPECT_EQ(p.epoch, 1);
  EXPECT_EQ(p.micro_step, 2);
  p = resume_point(4, 2, 2);
  EXPECT_EQ(p.epoch, 2);
  EXPECT_EQ(p.micro_step, 0);
}

TEST(DataLoader, BadOptionsAreErrors) {
  LoaderOptions opt;
  opt.batch_size = 0;
  EXPECT_THROW(DataLoader(numbered_samples(3), opt), Error);
  opt.batch_size = 2;
  EXPECT_THROW(DataLoader(std::vector<Sample>{}, opt), Error);
  opt.packing = true;
  opt.max_seq_length = 3;  // sample 3 has 4 tokens: must be truncated before packing
  EXPECT_THROW(DataLoader(numbered_samples(5), opt), Error);
}
