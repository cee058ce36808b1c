// Collation: right padding, labels on padding only, pad==eos keeps real EOS labels, segment-aware
// shift, best-fit-decreasing packing, and "packing does not change the loss terms".
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "core/error.h"
#include "core/rng.h"
#include "data/collator.h"

using namespace llmtune;

namespace {

Sample make_sample(std::vector<int32_t> ids, int64_t masked_prefix = 0) {
  Sample s;
  s.ids = std::move(ids);
  s.labels = s.ids;
  for (int64_t i = 0; i < masked_prefix && i < int64_t(s.labels.size()); ++i) s.labels[size_t(i)] = -100;
  return s;
}

// HF ForCausalLMLoss shift for plain (unpacked) rows: labels padded right with -100, then [1:].
std::vector<int32_t> hf_shift(const Batch& b) {
  std::vector<int32_t> out(b.labels.size(), -100);
  for (int64_t r = 0; r < b.B; ++r)
    for (int64_t t = 0; t + 1 < b.T; ++t) out[size_t(r * b.T + t)] = b.labels[size_t(r * b.T + t + 1)];
  return out;
}

// Every loss term as (the sample's tokens up to and including t, position t, target): the model's
// input to position t when attention stays inside the segment, and what it must predict.
using LossTerm = std::tuple<std::vector<int32_t>, int32_t, int32_t>;
std::vector<LossTerm> loss_terms(const Batch& b) {
  std::vector<int32_t> target = shift_labels(b);
  std::vector<LossTerm> terms;
  for (int64_t r = 0; r < b.B; ++r)
    for (int64_t t = 0; t < b.T; ++t) {
      const size_t i = size_t(r * b.T + t);
      if (target[i] == -100) continue;
      const size_t start = i - size_t(b.positions[i]);
      for (size_t k = start; k <= i; ++k) EXPECT_EQ(b.segment_ids[k], b.segment_ids[i]);
      terms.emplace_back(std::vector<int32_t>(b.input_ids.begin() + std::ptrdiff_t(start),
                                              b.input_ids.begin() + std::ptrdiff_t(i) + 1),
                         b.positions[i], target[i]);
    }
  return terms;
}

}  // namespace

TEST(DataCollator, PadsRightAndMasksOnlyPadding) {
  std::vector<Sample> samples = {make_sample({5, 6, 7}, 1), make_sample({8})};
  Batch b = collate(samples, /*pad_id=*/0);
  ASSERT_EQ(b.B, 2);
  ASSERT_EQ(b.T, 3);
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{5, 6, 7, 8, 0, 0}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{-100, 6, 7, 8, -100, -100}));
  EXPECT_EQ(b.attention_mask, (std::vector<int32_t>{1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 2, 0, 0, 0}));
  EXPECT_EQ(b.segment_ids, (std::vector<int32_t>{0, 0, 0, 0, -1, -1}));
  EXPECT_EQ(b.num_label_tokens, 3);      // 6, 7, 8 on the unshifted labels (HF num_items_in_batch)
  EXPECT_EQ(b.num_predicted_tokens, 2);  // after the shift only 6 and 7 are targets
  EXPECT_EQ(b.num_samples, 2);
  EXPECT_EQ(shift_labels(b), (std::vector<int32_t>{6, 7, -100, -100, -100, -100}));
}

TEST(DataCollator, PadEqualsEosKeepsRealEosLabels) {
  const TokenIds ids{1, /*eos=*/2, /*pad=*/-1};
  const int32_t pad = resolve_pad_id(ids);
  EXPECT_EQ(pad, 2);
  std::vector<Sample> samples = {make_sample({1, 9, 2}), make_sample({1, 2})};
  Batch b = collate(samples, pad);
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{1, 9, 2, 1, 2, 2}));
  // HF would give labels[ids == 2] = -100 everywhere; we keep the two real EOS labels.
  EXPECT_EQ(b.labels, (std::vector<int32_t>{1, 9, 2, 1, 2, -100}));
  EXPECT_EQ(shift_labels(b), (std::vector<int32_t>{9, 2, -100, 2, -100, -100}));
  std::string note = pad_token_note(ids);
  EXPECT_NE(note.find("EOS"), std::string::npos);
  EXPECT_NE(note.find("keep their labels"), std::string::npos);
  EXPECT_NE(pad_token_note(TokenIds{1, 2, 2}), "");  // pad configured as eos explicitly
  EXPECT_EQ(pad_token_note(TokenIds{1, 2, 0}), "");  // own pad token: nothing to say
  EXPECT_EQ(resolve_pad_id(TokenIds{1, 2, 0}), 0);
  EXPECT_EQ(resolve_pad_id(TokenIds{}), 0);
  EXPECT_NE(pad_token_note(TokenIds{}).find("id 0"), std::string::npos);
}

TEST(DataCollator, UnpackedShiftEqualsHfShift) {
  Rng rng(7);
  std::vector<Sample> samples;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> ids(1 + rng.below(9));
    for (auto& v : ids) v = int32_t(3 + rng.below(50));
    samples.push_back(make_sample(ids, int64_t(rng.below(3))));
  }
  Batch b = collate(samples, 0, /*pad_to_multiple_of=*/4);
  EXPECT_EQ(b.T % 4, 0);
  EXPECT_EQ(shift_labels(b), hf_shift(b));
  int64_t predicted = 0;
  for (int32_t t : hf_shift(b)) predicted += t != -100;
  EXPECT_EQ(b.num_predicted_tokens, predicted);
}

TEST(DataCollator, PackedRowsRestartPositionsAndNeverCrossSamples) {
  std::vector<Sample> samples = {make_sample({5, 6, 7}), make_sample({8, 9}, 1), make_sample({4})};
  Batch b = collate_rows(samples, {{0, 1}, {2}}, /*pad_id=*/0);
  ASSERT_EQ(b.B, 2);
  ASSERT_EQ(b.T, 5);
  EXPECT_EQ(b.input_ids, (std::vector<int32_t>{5, 6, 7, 8, 9, 4, 0, 0, 0, 0}));
  EXPECT_EQ(b.positions, (std::vector<int32_t>{0, 1, 2, 0, 1, 0, 0, 0, 0, 0}));
  EXPECT_EQ(b.segment_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 0, -1, -1, -1, -1}));
  EXPECT_EQ(b.attention_mask, (std::vector<int32_t>{1, 1, 1, 1, 1, 1, 0, 0, 0, 0}));
  // Position 2 (token 7, end of sample 0) must not predict 8, the first token of sample 1.
  EXPECT_EQ(shift_labels(b), (std::vector<int32_t>{6, 7, -100, 9, -100, -100, -100, -100, -100, -100}));
  EXPECT_EQ(b.num_label_tokens, 3 + 1 + 1);
  EXPECT_EQ(b.num_predicted_tokens, 3);
  EXPECT_EQ(b.num_samples, 3);
}

TEST(DataCollator, PackSamplesBestFitDecreasing) {
  const std::vector<int64_t> lengths = {3, 7, 5, 2, 8, 1, 4};
  auto rows = pack_samples(lengths, 10);
  // Longest first: 8 → row0 (2 left), 7 → row1 (3 left), 5 → row2 (5 left), 4 → row2 (1 left),
  // 3 → row1 (0 left), 2 → row0 (0 left), 1 → row2 (0 left).
  EXPECT_EQ(rows, (std::vector<std::vector<int64_t>>{{3, 4}, {0, 1}, {2, 5, 6}}));
  std::vector<int> seen(lengths.size(), 0);
  for (const auto& row : rows) {
    int64_t total = 0;
    for (int64_t i : row) total += lengths[size_t(i)], ++seen[size_t(i)];
    EXPECT_LE(total, 10);
  }
  for (int s : seen) EXPECT_EQ(s, 1);
  EXPECT_THROW(pack_samples(std::vector<int64_t>{3, 11}, 10), Error);
  EXPECT_THROW(pack_samples(std::vector<int64_t>{0}, 10), Error);
  EXPECT_TRUE(pack_samples(std::vector<int64_t>{}, 10).empty());
}

TEST(DataCollator, PackingKeepsEveryLossTerm) {
  Rng rng(123);
  std::vector<Sample> samples;
  std::vector<int64_t> lengths;
  for (int i = 0; i < 40; ++i) {
    std::vector<int32_t> ids(1 + rng.below(16));
    for (auto& v : ids) v = int32_t(3 + rng.below(20));  // small vocab: repeats across samples
    samples.push_back(make_sample(ids, int64_t(rng.below(5))));
    lengths.push_back(int64_t(ids.size()));
  }
  // Unpacked: batches of 3 samples. Packed: rows of at most 24 tokens, batches of 2 rows.
  std::vector<LossTerm> unpacked, packed;
  int64_t unpacked_labels = 0, packed_labels = 0, unpacked_pred = 0, packed_pred = 0;
  for (size_t i = 0; i < samples.size(); i += 3) {
    std::vector<std::vector<int64_t>> rows;
    for (size_t k = i; k < std::min(samples.size(), i + 3); ++k) rows.push_back({int64_t(k)});
    Batch b = collate_rows(samples, rows, 0);
    auto t = loss_terms(b);
    unpacked.insert(unpacked.end(), t.begin(), t.end());
    unpacked_labels += b.num_label_tokens;
    unpacked_pred += b.num_predicted_tokens;
  }
  auto rows = pack_samples(lengths, 24);
  EXPECT_LT(rows.size(), samples.size());
  for (size_t i = 0; i < rows.size(); i += 2) {
    std::vector<std::vector<int64_t>> batch_rows(rows.begin() + std::ptrdiff_t(i),
                                                 rows.begin() + std::ptrdiff_t(std::min(rows.size(), i + 2)));
    Batch b = collate_rows(samples, batch_rows, 0);
    EXPECT_LE(b.T, 24);
    auto t = loss_terms(b);
    packed.insert(packed.end(), t.begin(), t.end());
    packed_labels += b.num_label_tokens;
    packed_pred += b.num_predicted_tokens;
  }
  ASSERT_FALSE(unpacked.empty());
  std::sort(unpacked.begin(), unpacked.end());
  std::sort(packed.begin(), packed.end());
  EXPECT_EQ(unpacked, packed);
  EXPECT_EQ(unpacked_labels, packed_labels);
  EXPECT_EQ(unpacked_pred, packed_pred);
  EXPECT_EQ(int64_t(unpacked.size()), unpacked_pred);

  // The check can fail: naive concatenation (one segment per row) adds cross-sample terms.
  int64_t naive_pred = 0;
  for (const auto& row : rows) {
    Batch naive = collate_rows(samples, {row}, 0);
    std::fill(naive.segment_ids.begin(), naive.segment_ids.end(), 0);
    for (int32_t t : shift_labels(naive)) naive_pred += t != -100;
  }
  EXPECT_GT(naive_pred, packed_pred);
}

TEST(DataCollator, BadInputIsAnError) {
  std::vector<Sample> samples = {make_sample({1, 2})};
  EXPECT_THROW(collate_rows(samples, {{1}}, 0), Error);
  samples[0].labels.pop_back();
  EXPECT_THROW(collate(samples, 0), Error);
  EXPECT_THROW(collate(std::vector<Sample>{make_sample({1})}, 0, 0), Error);
}
