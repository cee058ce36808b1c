// Forward logits, loss and every parameter gradient of the generic decoder against PyTorch golden
// files (tools/make_golden.py) for GPT-NeoX, Llama (GQA, tied/untied, llama3 RoPE), Qwen2 and GPT-2.
#include <gtest/gtest.h>

#include "data/collator.h"
#include "golden_util.h"
#include "kernels/linear.h"
#include "model/decoder.h"
#include "model/model.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

void check_case(const std::string& name) {
  SCOPED_TRACE(name);
  Model m = load_model(golden_dir(name));
  for (auto& p : m.params) p.trainable = true;
  m.sync_grad_buffers();
  SafetensorsFile g = open_safetensors(golden_dir(name) + "/golden.safetensors");
  std::vector<int32_t> ids = read_i32(g, "input_ids"), labels = read_i32(g, "labels");
  std::vector<int32_t> mask = read_i32(g, "attention_mask"), segments(mask.size());
  for (size_t i = 0; i < mask.size(); i++) segments[i] = mask[i] ? 0 : -1;  // right padding → segment -1
  Tensor ids_t = g.get("input_ids");
  const int64_t B = ids_t.shape[0], T = ids_t.shape[1], V = m.cfg.vocab_size, E = m.cfg.hidden_size;

  DecoderInput in;
  in.B = B;
  in.T = T;
  in.ids = ids.data();
  in.segments = segments.data();
  Workspace ws;
  decoder_forward(m, ws, in);

  // Logits of every position (the training path never materialises them; this check does).
  std::vector<float> logits(size_t(B * T * V));
  linear_forward(logits.data(), ws.h_final.f32(), m.lm_head.view(), nullptr, B * T, E, V);
  Tensor ref_logits = g.get_f32("logits");
  ASSERT_EQ(ref_logits.numel(), int64_t(logits.size()));
  // Padding positions carry no meaning (nothing reads them); compare real tokens only.
  std::vector<float> ours, ref;
  for (int64_t i = 0; i < B * T; i++)
    if (mask[size_t(i)])
      for (int64_t j = 0; j < V; j++) {
        ours.push_back(logits[size_t(i * V + j)]);
        ref.push_back(ref_logits.f32()[i * V + j]);
      }
  EXPECT_LE(rel_err(ours.data(), ref.data(), int64_t(ref.size())), 1e-5) << "logits";

  std::vector<int32_t> targets = shift_labels(labels.data(), segments.data(), B, T);
  int64_t count = 0;
  for (int32_t t : targets) count += t != kIgnoreIndex;
  LossSum ls = decoder_lm_loss(m, ws, targets.data(), 1.0f / float(count), true);
  EXPECT_EQ(ls.count, count);
  float loss = float(ls.sum / double(ls.count));
  float ref_loss = g.get_f32("loss").f32()[0];
  EXPECT_NEAR(loss, ref_loss, 1e-6) << "loss";
  decoder_backward(m, ws, in);

  int checked = 0;
  for (auto& p : m.params) {
    std::string gname = "grad." + file_name_for(m.cfg, p.name);
    ASSERT_TRUE(g.has(gname)) << gname;
    Tensor ref = g.get_f32(gname);
    ASSERT_EQ(ref.shape, p.grad.shape) << gname;
    EXPECT_LE(rel_err(p.grad.f32(), ref.f32(), ref.numel()), 1e-4) << gname;
    checked++;
  }
  EXPECT_GT(checked, 10);
}

}  // namespace

TEST(ModelGolden, NeoxParallelResidual) { check_case("neox_parallel"); }
TEST(ModelGolden, NeoxSequentialResidual) { check_case("neox_sequential"); }
TEST(ModelGolden, LlamaGqaUntied) { check_case("llama_gqa_untied"); }
TEST(ModelGolden, LlamaTiedLlama3Rope) { check_case("llama_tied_llama3rope"); }
TEST(ModelGolden, Qwen2Bias) { check_case("qwen2_bias"); }
TEST(ModelGolden, Gpt2) { check_case("gpt2"); }
