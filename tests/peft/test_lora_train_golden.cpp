// Three AdamW steps on LoRA adapters against PyTorch (tests/data/golden/{neox,llama,gpt2}_lora: the
// initial adapter, losses, grad_norms and "step3.<peft key>"), driven by train_step_on_window, the
// Trainer's inner step. The frozen base must not move by a single bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "data/collator.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "peft_test_util.h"
#include "train/optimizer.h"
#include "train/trainer.h"

using namespace llmtune;
using namespace llmtune::peft_testing;

namespace {

// The golden batch through our collator: the real tokens (and the golden labels) of each row as one
// Sample, right-padded with the golden's pad id — must give the golden input_ids and shifted-label count.
Batch golden_train_batch(const SafetensorsFile& g) {
  GoldenBatch gb = read_batch(g);
  std::vector<Sample> samples(size_t(gb.B));
  for (int64_t b = 0; b < gb.B; b++)
    for (int64_t t = 0; t < gb.T; t++)
      if (gb.mask[size_t(b * gb.T + t)]) {
        samples[size_t(b)].ids.push_back(gb.ids[size_t(b * gb.T + t)]);
        samples[size_t(b)].labels.push_back(gb.labels[size_t(b * gb.T + t)]);
      }
  int32_t pad = 0;  // the golden's padding id (eos for Llama / GPT-2)
  for (size_t i = 0; i < gb.mask.size(); i++)
    if (!gb.mask[i]) pad = gb.ids[i];
  Batch batch = collate(samples, pad);
  EXPECT_EQ(batch.T, gb.T);
  EXPECT_EQ(batch.input_ids, gb.ids);
  EXPECT_EQ(batch.num_predicted_tokens, int64_t(*g.get("num_items_shifted").as<int32_t>()));
  return batch;
}

void check_three_adamw_steps(const std::string& name) {
  SCOPED_TRACE(name);
  const std::string dir = golden_dir(name);
  const nlohmann::json cfg = read_json_file(dir + "/train_config.json");
  Model m = load_model(dir);
  load_adapter(m, dir, /*trainable=*/true);
  std::vector<std::pair<const Param*, Tensor>> frozen;
  for (const Param& p : m.params)
    if (!p.trainable) frozen.emplace_back(&p, p.value.clone());

  OptimizerConfig oc;
  oc.kind = parse_optimizer_name(cfg["optimizer"].get<std::string>());
  ASSERT_EQ(oc.kind, OptimizerKind::AdamW);
  oc.weight_decay = cfg["weight_decay"].get<double>();
  oc.beta1 = cfg["adam_beta1"].get<double>();
  oc.beta2 = cfg["adam_beta2"].get<double>();
  oc.eps = cfg["adam_epsilon"].get<double>();
  Optimizer opt = make_optimizer(m, oc);
  // Exactly the golden's trainable set, all in the decay group (train_config: "no_decay": []).
  ASSERT_EQ(opt.states.size(), cfg["trainable"].size());
  for (const auto& s : opt.states) EXPECT_TRUE(s.decay) << s.param->name;
  ASSERT_EQ(cfg["lr_scheduler"].get<std::string>(), "constant");
  const double lr = cfg["learning_rate"].get<double>();
  const double max_grad_norm = cfg["max_grad_norm"].is_null() ? 0.0 : cfg["max_grad_norm"].get<double>();

  SafetensorsFile g = open_safetensors(dir + "/golden.safetensors");
  const Batch batch = golden_train_batch(g);
  Tensor losses = g.get_f32("losses"), norms = g.get_f32("grad_norms");
  Workspace ws;
  const int steps = cfg["steps"].get<int>();
  ASSERT_EQ(steps, 3);
  for (int k = 0; k < steps; k++) {
    const StepResult r =
        train_step_on_window(m, ws, std::span<const Batch>(&batch, 1), opt, lr, max_grad_norm, nullptr);
    EXPECT_NEAR(r.window.loss(), losses.f32()[k], 2e-6 * std::fabs(losses.f32()[k])) << "loss, step " << k + 1;
    EXPECT_NEAR(r.grad_norm, norms.f32()[k], 1e-5 * norms.f32()[k]) << "grad_norm, step " << k + 1;
  }
  int checked = 0;
  for (LinearModule* l : lora_modules(m))
    for (Param* p : {l->lora.A, l->lora.B}) {
      const std::string key = "step3." + peft_key(p->name);
      ASSERT_TRUE(g.has(key)) << key;
      Tensor ref = g.get_f32(key);
      ASSERT_EQ(ref.shape, p->value.shape) << key;
      EXPECT_LE(rel_err(p->value.f32(), ref.f32(), ref.numel()), 1e-5) << key;
      checked++;
    }
  EXPECT_EQ(checked, int(cfg["trainable"].size()));
  for (auto& [p, v] : frozen) EXPECT_EQ(std::memcmp(p->value.data, v.data, v.nbytes()), 0) << p->name;
}

}  // namespace

TEST(PeftTrainGolden, NeoxLoraThreeAdamWSteps) { check_three_adamw_steps("neox_lora"); }
TEST(PeftTrainGolden, LlamaLoraThreeAdamWSteps) { check_three_adamw_steps("llama_lora"); }
TEST(PeftTrainGolden, Gpt2LoraThreeAdamWSteps) { check_three_adamw_steps("gpt2_lora"); }
