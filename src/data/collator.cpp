// Right padding, packed rows with segment ids, the segment-aware causal label shift, and BFD packing.
#include "data/collator.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "core/error.h"

namespace llmtune {

int32_t resolve_pad_id(const TokenIds& ids) {
  if (ids.pad >= 0) return ids.pad;
  if (ids.eos >= 0) return ids.eos;
  return 0;
}

std::string pad_token_note(const TokenIds& ids) {
  if (ids.pad >= 0 && ids.pad != ids.eos) return "";
  if (ids.pad < 0 && ids.eos < 0)
    return "note: the tokenizer has neither a pad nor an EOS token; padding with id 0 (padded "
           "positions are masked out of attention and the loss, so the id does not matter)";
  return cat("note: padding uses the EOS token (id ", ids.eos,
             "). Unlike Hugging Face's DataCollatorForLanguageModeling, which sets the label of every "
             "token equal to pad (so every EOS) to -100 and never trains the model to stop, llmtune "
             "masks only the padding positions: real EOS tokens in the data keep their labels");
}

Batch collate_rows(std::span<const Sample> samples, const std::vector<std::vector<int64_t>>& rows,
                   int32_t pad_id, int64_t pad_to_multiple_of) {
  LLMTUNE_CHECK(pad_to_multiple_of >= 1, "pad_to_multiple_of must be at least 1 (got ",
                pad_to_multiple_of, ")");
  Batch b;
  b.B = int64_t(rows.size());
  int64_t longest = 0;
  for (const auto& row : rows) {
    int64_t len = 0;
    for (int64_t i : row) {
      LLMTUNE_CHECK(i >= 0 && i < int64_t(samples.size()), "collate: sample index ", i,
                    " out of range (", samples.size(), " samples)");
      const Sample& s = samples[size_t(i)];
      LLMTUNE_CHECK(s.ids.size() == s.labels.size(), "collate: sample ", i, " has ", s.ids.size(),
                    " ids but ", s.labels.size(), " labels");
      len += int64_t(s.ids.size());
    }
    longest = std::max(longest, len);
  }
  b.T = (longest + pad_to_multiple_of - 1) / pad_to_multiple_of * pad_to_multiple_of;
  const size_t n = size_t(b.B * b.T);
  b.input_ids.assign(n, pad_id);
  b.labels.assign(n, kLabelIgnore);
  b.positions.assign(n, 0);
  b.segment_ids.assign(n, -1);
  b.attention_mask.assign(n, 0);

  for (int64_t r = 0; r < b.B; ++r) {
    size_t t = size_t(r * b.T);
    int32_t segment = 0;
    for (int64_t i : rows[size_t(r)]) {
      const Sample& s = samples[size_t(i)];
      for (size_t k = 0; k < s.ids.size(); ++k, ++t) {
        b.input_ids[t] = s.ids[k];
        b.labels[t] = s.labels[k];
        b.positions[t] = int32_t(k);
        b.segment_ids[t] = segment;
        b.attention_mask[t] = 1;
        if (s.labels[k] != kLabelIgnore) ++b.num_label_tokens;
      }
      ++segment;
      ++b.num_samples;
    }
  }
  for (int32_t target : shift_labels(b))
    if (target != kLabelIgnore) ++b.num_predicted_tokens;
  return b;
}

Batch collate(std::span<const Sample> samples, int32_t pad_id, int64_t pad_to_multiple_of) {
  std::vector<std::vector<int64_t>> rows(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) rows[i] = {int64_t(i)};
  return collate_rows(samples, rows, pad_id, pad_to_multiple_of);
}

std::vector<int32_t> shift_labels(const int32_t* labels, const int32_t* segment_ids, int64_t B, int64_t T) {
  std::vector<int32_t> target(size_t(B * T), kLabelIgnore);
  for (int64_t r = 0; r < B; ++r) {
    const size_t row = size_t(r * T);
    for (int64_t t = 0; t + 1 < T; ++t) {
      const size_t here = row + size_t(t), next = here + 1;
      if (!segment_ids || (segment_ids[here] >= 0 && segment_ids[next] == segment_ids[here]))
        target[here] = labels[next];
    }
  }
  return target;
}

std::vector<int32_t> shift_labels(const Batch& batch) {
  return shift_labels(batch.labels.data(), batch.segment_ids.data(), batch.B, batch.T);
}

std::vector<std::vector<int64_t>> pack_samples(std::span<const int64_t> lengths,
                                               int64_t max_seq_length) {
  LLMTUNE_CHECK(max_seq_length >= 1, "packing: max_seq_length must be at least 1 (got ",
                max_seq_length, ")");
  for (size_t i = 0; i < lengths.size(); ++i)
    LLMTUNE_CHECK(lengths[i] >= 1 && lengths[i] <= max_seq_length, "packing: sample ", i,
                  " has length ", lengths[i], ", outside 1..max_seq_length=", max_seq_length,
                  " (truncate samples before packing)");

  // Longest first; ties by index so the result does not depend on the sort implementation.
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return lengths[size_t(a)] > lengths[size_t(b)]; });

  std::vector<std::vector<int64_t>> rows;
  // remaining capacity → row; best fit = the smallest remaining capacity that still holds the sample.
  // Among equal capacities multimap keeps insertion order, so the oldest row is chosen: deterministic.
  std::multimap<int64_t, size_t> free_space;
  for (int64_t i : order) {
    const int64_t len = lengths[size_t(i)];
    auto it = free_space.lower_bound(len);
    size_t row;
    int64_t remaining;
    if (it == free_space.end()) {
      row = rows.size();
      rows.emplace_back();
      remaining = max_seq_length;
    } else {
      row = it->second;
      remaining = it->first;
      free_space.erase(it);
    }
    rows[row].push_back(i);
    remaining -= len;
    if (remaining > 0) free_space.emplace(remaining, row);
  }
  for (auto& row : rows) std::sort(row.begin(), row.end());
  return rows;
}

}  // namespace llmtune
