// Collator and packer: turns Samples into right-padded [B, T] batches (one sample per row, or several
// packed into a row with per-sample positions and segment ids), and shifts labels for the causal loss.
//
// Deliberate differences from Hugging Face's DataCollatorForLanguageModeling (hf-semantics §4.15, §9.4):
//  * Labels come from the Samples, not from `labels[ids == pad] = -100`. Only PADDING positions get
//    -100. So when pad == eos (GPT-2, NeoX, Llama-3 practice) the real EOS tokens in the data keep their
//    labels and the model learns to stop; HF masks every EOS there. pad_token_note() returns a one-time
//    message saying so, for the caller to print.
//  * No pad token and no EOS: we pad with id 0 instead of failing; padded positions are never attended
//    (attention_mask 0, segment -1) and never in the loss, so the id does not matter.
//  * Packed rows: positions restart at 0 for each sample and shift_labels() never makes a token predict
//    the first token of the next sample, so packing changes neither the per-token loss terms nor the
//    label counts (see pack_samples). attention_mask is 1 on every real token of a packed row; the model
//    MUST additionally restrict attention to equal segment_ids (block-diagonal causal attention).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace llmtune {

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> input_ids;       // [B, T], padding = pad id
  std::vector<int32_t> labels;          // [B, T] UNSHIFTED, -100 = ignored (always on padding)
  std::vector<int32_t> positions;       // [B, T], 0.. per sample (restart per packed sample), 0 on pad
  std::vector<int32_t> segment_ids;     // [B, T], index of the sample within its row, -1 on padding
  std::vector<int32_t> attention_mask;  // [B, T], 1 on real tokens, 0 on padding
  // count(labels != -100) on the UNSHIFTED labels: HF's num_items_in_batch contribution (§4.6).
  int64_t num_label_tokens = 0;
  // count(shift_labels(batch) != -100): the positions that actually carry a loss term.
  int64_t num_predicted_tokens = 0;
  int64_t num_samples = 0;  // samples in the batch (> B when packed); eval weights batches by it (§4.13)
};

// The id used for padding: pad if the tokenizer has one, else eos, else 0 (see top of file).
int32_t resolve_pad_id(const TokenIds& ids);

// The message to print once before training when padding reuses EOS or there is no pad/eos token;
// empty when the tokenizer has its own pad token.
std::string pad_token_note(const TokenIds& ids);

// Collates rows of samples: rows[r] lists the indices (into `samples`) packed into row r, in order.
// T = the longest row rounded up to pad_to_multiple_of (>= 1).
Batch collate_rows(std::span<const Sample> samples, const std::vector<std::vector<int64_t>>& rows,
                   int32_t pad_id, int64_t pad_to_multiple_of = 1);

// One sample per row.
Batch collate(std::span<const Sample> samples, int32_t pad_id, int64_t pad_to_multiple_of = 1);

// Per-position targets for the causal loss, [B, T]: target[t] = labels[t+1] when t+1 is in the same
// row and the same segment, else -100. For unpacked rows this equals HF's ForCausalLMLoss shift.
// The same on raw [B, T] arrays; segment_ids may be null (one segment per row, no padding).
std::vector<int32_t> shift_labels(const int32_t* labels, const int32_t* segment_ids, int64_t B, int64_t T);
std::vector<int32_t> shift_labels(const Batch& batch);

// Groups samples (by length) into rows of at most max_seq_length tokens: best-fit decreasing (TRL's
// "bfd" packing), deterministic, every index exactly once; indices within a row are ascending and rows
// are in creation order. Any grouping gives the same per-token loss terms because positions restart
// and shift_labels() stops at sample boundaries; BFD just wastes the least padding.
// Fails if a length is < 1 or > max_seq_length.
std::vector<std::vector<int64_t>> pack_samples(std::span<const int64_t> lengths,
                                               int64_t max_seq_length);

}  // namespace llmtune
