// Deterministic per-epoch shuffling and batching, and the HF step arithmetic.
#include "data/loader.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace llmtune {

namespace {

// splitmix64 finaliser: spreads (seed, epoch) so that nearby pairs give unrelated streams.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

DataLoader::DataLoader(std::vector<Sample> samples_in, const LoaderOptions& opt)
    : samples(std::move(samples_in)), options(opt) {
  LLMTUNE_CHECK(options.batch_size >= 1, "batch_size must be at least 1 (got ", options.batch_size,
                ")");
  LLMTUNE_CHECK(!samples.empty(), "the dataset has no samples to batch");
  if (options.packing) {
    std::vector<int64_t> lengths(samples.size());
    for (size_t i = 0; i < samples.size(); ++i) lengths[i] = int64_t(samples[i].ids.size());
    rows = pack_samples(lengths, options.max_seq_length);
  } else {
    rows.resize(samples.size());
    for (size_t i = 0; i < samples.size(); ++i) rows[i] = {int64_t(i)};
  }
}

int64_t DataLoader::num_batches_per_epoch() const {
  return num_batches(num_rows(), options.batch_size);
}

std::vector<int64_t> DataLoader::epoch_order(int64_t epoch) const {
  std::vector<int64_t> order(rows.size());
  std::iota(order.begin(), order.end(), int64_t(0));
  if (!options.shuffle) return order;
  Rng rng(mix64(options.seed) ^ mix64(uint64_t(epoch) + 0x9e3779b97f4a7c15ull));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

Batch DataLoader::get(int64_t epoch, int64_t index) const {
  const int64_t n_batches = num_batches_per_epoch();
  LLMTUNE_CHECK(epoch >= 0 && index >= 0 && index < n_batches, "data loader: batch ", index,
                " of epoch ", epoch, " does not exist (", n_batches, " batches per epoch)");
  const std::vector<int64_t> order = epoch_order(epoch);
  const int64_t begin = index * options.batch_size;
  const int64_t end = std::min(begin + options.batch_size, num_rows());
  std::vector<std::vector<int64_t>> batch_rows;
  batch_rows.reserve(size_t(end - begin));
  for (int64_t k = begin; k < end; ++k) batch_rows.push_back(rows[size_t(order[size_t(k)])]);
  return collate_rows(samples, batch_rows, options.pad_id, options.pad_to_multiple_of);
}

int64_t num_batches(int64_t num_rows, int64_t batch_size) {
  LLMTUNE_CHECK(batch_size >= 1, "batch_size must be at least 1 (got ", batch_size, ")");
  return (num_rows + batch_size - 1) / batch_size;
}

int64_t num_update_steps_per_epoch(int64_t len_dl, int64_t grad_accum) {
  LLMTUNE_CHECK(grad_accum >= 1, "gradient_accumulation_steps must be at least 1 (got ", grad_accum,
                ")");
  return std::max<int64_t>(1, len_dl / grad_accum + (len_dl % grad_accum > 0 ? 1 : 0));
}

int64_t total_max_steps(double num_train_epochs, int64_t max_steps_arg, int64_t steps_per_epoch) {
  if (max_steps_arg > 0) return max_steps_arg;
  LLMTUNE_CHECK(num_train_epochs > 0, "num_train_epochs must be positive when max_steps is not set (got ",
                num_train_epochs, ")");
  return int64_t(std::ceil(num_train_epochs * double(steps_per_epoch)));
}

int64_t num_epochs_to_run(double num_train_epochs, int64_t max_steps_arg, int64_t steps_per_epoch) {
  if (max_steps_arg > 0) return (max_steps_arg + steps_per_epoch - 1) / steps_per_epoch;
  return int64_t(std::ceil(num_train_epochs));
}

double epoch_after_micro_step(int64_t epoch, int64_t micro_step_in_epoch, int64_t len_dl) {
  return double(epoch) + double(micro_step_in_epoch + 1) / double(len_dl);
}

MicroBatchWindow accumulation_window(int64_t step_in_epoch, int64_t len_dl, int64_t grad_accum) {
  MicroBatchWindow w;
  w.begin = std::min(step_in_epoch * grad_accum, len_dl);
  w.end = std::min(w.begin + grad_accum, len_dl);
  return w;
}

ResumePoint resume_point(int64_t global_step, int64_t steps_per_epoch, int64_t grad_accum) {
  ResumePoint p;
  p.epoch = global_step / steps_per_epoch;
  p.micro_step = (global_step % steps_per_epoch) * grad_accum;
  return p;
}

}  // namespace llmtune
