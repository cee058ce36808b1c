// Packing must not change training: the real model's loss (sum and token count) and every parameter
// gradient on packed rows (several samples per row, positions restarting, segment ids keeping attention
// inside each sample) equal the unpacked batch of the same samples — GPT-NeoX and Llama (GQA) goldens.
// A control shows the check has teeth: the same packed rows WITHOUT segment boundaries give another loss.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "data/collator.h"
#include "model/decoder.h"
#include "train/trainer.h"
#include "train_test_util.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

struct LossAndGrads {
  WindowLoss window;
  std::map<std::string, std::vector<float>> grads;
};

LossAndGrads run(Model& m, const Batch& b) {
  Workspace ws;
  m.zero_grads();
  LossAndGrads r;
  r.window = accumulate_window_gradients(m, ws, std::span<const Batch>(&b, 1), nullptr);
  for (const Param& p : m.params)
    if (p.trainable) r.grads[p.name].assign(p.grad.f32(), p.grad.f32() + p.grad.numel());
  m.zero_grads();
  return r;
}

void check_packing(const std::string& golden) {
  SCOPED_TRACE(golden);
  Model m = load_model(train_golden_dir(golden));
  for (auto& p : m.params) p.trainable = true;
  m.sync_grad_buffers();
  // 7 samples of lengths 3..20 (different lengths), labels = ids except a masked prefix on some.
  std::vector<Sample> samples = random_samples(7, 3, 20, m.cfg.vocab_size, 1234);
  for (size_t i = 0; i < samples.size(); i += 3) samples[i].labels[0] = kIgnoreIndex;
  std::vector<int64_t> lengths;
  for (const Sample& s : samples) lengths.push_back(int64_t(s.ids.size()));

  const Batch unpacked = collate(samples, 0);
  const auto rows = pack_samples(lengths, 40);
  const Batch packed = collate_rows(samples, rows, 0);
  ASSERT_LT(packed.B, unpacked.B) << "the rows really hold several samples";
  ASSERT_EQ(packed.num_samples, unpacked.num_samples);

  const LossAndGrads a = run(m, unpacked), b = run(m, packed);
  EXPECT_EQ(a.window.tokens, b.window.tokens) << "same number of predicted tokens";
  EXPECT_GT(a.window.tokens, 0);
  EXPECT_NEAR(b.window.loss_sum, a.window.loss_sum, 1e-5 * std::fabs(a.window.loss_sum)) << "loss sum";
  for (const auto& [name, ga] : a.grads) {
    const auto& gb = b.grads.at(name);
    EXPECT_LE(max_rel_err(gb.data(), ga.data(), int64_t(ga.size())), 1e-5) << name;
  }

  // Control: the packed rows with one segment per row (attention crosses samples) but the same targets.
  std::vector<int32_t> one_segment = packed.segment_ids;
  for (auto& s : one_segment) s = s < 0 ? -1 : 0;
  const std::vector<int32_t> targets = shift_labels(packed);
  DecoderInput in;
  in.B = packed.B;
  in.T = packed.T;
  in.ids = packed.input_ids.data();
  in.positions = packed.positions.data();
  in.segments = one_segment.data();
  Workspace ws;
  decoder_forward(m, ws, in);
  const LossSum crossing = decoder_lm_loss(m, ws, targets.data(), 1.0f, false);
  EXPECT_EQ(crossing.count, a.window.tokens);
  EXPECT_GT(std::fabs(crossing.sum - a.window.loss_sum), 1e-3 * std::fabs(a.window.loss_sum))
      << "without segment ids the packed loss should differ";
}

}  // namespace

TEST(TrainPacking, NeoxLossAndGradientsEqualUnpacked) { check_packing("neox_parallel"); }
TEST(TrainPacking, LlamaLossAndGradientsEqualUnpacked) { check_packing("llama_gqa_untied"); }
