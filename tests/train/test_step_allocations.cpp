// A training step reuses its Workspace and optimizer state: after the first (warm-up) step it
// allocates no Tensor at all (aligned_alloc_count), in full fine-tuning, LoRA and with gradient
// checkpointing. bench_lora_step reports the small std::vector scratch that remains.
#include <gtest/gtest.h>

#include "core/tensor.h"
#include "data/collator.h"
#include "model/decoder.h"
#include "peft/lora.h"
#include "train/optimizer.h"
#include "train/trainer.h"
#include "train_test_util.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

int64_t tensors_allocated_by_steps(Model& m, bool checkpointing, int steps) {
  const std::vector<Sample> samples = random_samples(3, 5, 9, m.cfg.vocab_size, 4);
  const Batch batch = collate(samples, 0);
  Optimizer opt = make_optimizer(m, OptimizerConfig{});
  Workspace ws;
  ws.gradient_checkpointing = checkpointing;
  Rng dropout(5);
  train_step_on_window(m, ws, std::span<const Batch>(&batch, 1), opt, 1e-3, 1.0, &dropout);  // warm-up
  const int64_t before = aligned_alloc_count();
  for (int s = 0; s < steps; s++)
    train_step_on_window(m, ws, std::span<const Batch>(&batch, 1), opt, 1e-3, 1.0, &dropout);
  return aligned_alloc_count() - before;
}

}  // namespace

TEST(StepAllocations, NoTensorAllocatedAfterWarmUp) {
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing ? "checkpointing" : "stored activations");
    Model full = tiny_model();
    EXPECT_EQ(tensors_allocated_by_steps(full, checkpointing, 3), 0);

    Model lora_model = tiny_model();
    for (auto& p : lora_model.params) p.trainable = false;
    LoraConfig c;
    c.r = 4;
    c.lora_dropout = 0.1;
    c.target_modules = ModuleSelector::pattern("all-linear");
    Rng rng(3);
    apply_lora(lora_model, c, rng);
    EXPECT_EQ(tensors_allocated_by_steps(lora_model, checkpointing, 3), 0);
  }
}

TEST(StepAllocations, CounterSeesATensor) {
  const int64_t before = aligned_alloc_count();
  Tensor t = Tensor::zeros({4}, DType::F32);
  EXPECT_EQ(aligned_alloc_count() - before, 1);
}
