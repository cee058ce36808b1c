// Epochs, shuffling and batching over tokenised samples, plus the HF Trainer step arithmetic
// (hf-semantics §4.2, §4.12). Every batch is a pure function of (seed, epoch, index), so resuming at
// (epoch, micro_step) reproduces exactly the batches an uninterrupted run would have seen, with no
// replay of the skipped batches.
//
// Choices / differences from Hugging Face:
//  * The per-epoch order is a Fisher–Yates permutation from llmtune::Rng seeded with a hash of
//    (seed, epoch). HF seeds torch's generator with seed + epoch; we cannot reproduce torch's stream
//    (§4.14), and hashing avoids (seed=1, epoch=0) giving the same order as (seed=0, epoch=1).
//  * With packing, samples are packed ONCE at construction (best-fit decreasing, see pack_samples) and
//    the packed rows are shuffled per epoch, as TRL packs the dataset before the Trainer shuffles it.
//    batch_size then counts packed rows, and the number of batches per epoch does not change between
//    epochs.
//  * drop_last = false: the last batch of an epoch may be smaller (HF dataloader_drop_last=False).
#pragma once
#include <cstdint>
#include <vector>

#include "data/collator.h"
#include "data/dataset.h"

namespace llmtune {

struct LoaderOptions {
  int64_t batch_size = 8;  // rows per micro-batch (samples, or packed rows when packing)
  uint64_t seed = 42;
  bool shuffle = true;     // false for evaluation: file order
  bool packing = false;
  int64_t max_seq_length = 1024;  // row capacity when packing
  int32_t pad_id = 0;             // use resolve_pad_id(token_ids)
  int64_t pad_to_multiple_of = 1;
};

struct DataLoader {
  DataLoader(std::vector<Sample> samples, const LoaderOptions& options);

  int64_t num_rows() const { return int64_t(rows.size()); }  // samples, or packed rows
  int64_t num_batches_per_epoch() const;  // ceil(num_rows / batch_size): HF len(dataloader)
  // The row order of one epoch (identity when shuffle is off).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // Micro-batch `index` (0-based) of `epoch` (0-based); fails when index is out of range.
  Batch get(int64_t epoch, int64_t index) const;

  std::vector<Sample> samples;
  LoaderOptions options;
  std::vector<std::vector<int64_t>> rows;  // sample indices per row (one each when not packing)
};

// ---- HF Trainer step arithmetic (§4.2) ----

// len(dataloader) with drop_last=False.
int64_t num_batches(int64_t num_rows, int64_t batch_size);
// max(1, ceil(len_dl / GA)): a shorter last accumulation window still makes one optimizer step.
int64_t num_update_steps_per_epoch(int64_t len_dl, int64_t grad_accum);
// args.max_steps if > 0, else ceil(num_train_epochs · steps_per_epoch).
int64_t total_max_steps(double num_train_epochs, int64_t max_steps_arg, int64_t steps_per_epoch);
// Epochs the training loop runs: ceil(max_steps / steps_per_epoch) when max_steps was given, else
// ceil(num_train_epochs).
int64_t num_epochs_to_run(double num_train_epochs, int64_t max_steps_arg, int64_t steps_per_epoch);
// state.epoch after micro-batch `micro_step_in_epoch` (0-based) of `epoch`: epoch + (m+1)/len_dl.
double epoch_after_micro_step(int64_t epoch, int64_t micro_step_in_epoch, int64_t len_dl);

// The micro-batches [begin, end) of `epoch` that form update step `step_in_epoch` (0-based).
struct MicroBatchWindow {
  int64_t begin = 0, end = 0;
};
MicroBatchWindow accumulation_window(int64_t step_in_epoch, int64_t len_dl, int64_t grad_accum);

// Where training continues after `global_step` optimizer steps (§4.12): epochs_trained =
// global_step / steps_per_epoch, and the first (global_step % steps_per_epoch)·GA micro-batches of that
// epoch are skipped (our loader just starts at that index; nothing is replayed).
struct ResumePoint {
  int64_t epoch = 0;
  int64_t micro_step = 0;
};
ResumePoint resume_point(int64_t global_step, int64_t steps_per_epoch, int64_t grad_accum);

}  // namespace llmtune
