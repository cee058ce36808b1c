// Sequence-classification / reward head: golden parity with PyTorch (tools/make_golden_seqcls.py) for
// right and left padding and CE / MSE / Bradley–Terry, pooling rules, gradient checks, save/load round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "../io/io_test_util.h"
#include "golden_util.h"
#include "io/hf_checkpoint.h"
#include "io/json_file.h"
#include "model/decoder.h"
#include "model/heads.h"
#include "model/model.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

enum class LossKind { CE, MSE, BT };

struct HeadRun {
  std::vector<int32_t> ids, segments, positions;
  DecoderInput in;
  Workspace ws;
  HeadOutput out;
};

// Runs decoder_forward + head_forward on golden batch `tag`: segments from the attention mask, positions
// from the file (left padding: cumsum(mask) − 1).
void forward_batch(Model& m, const ClassificationHead& head, const SafetensorsFile& g, const std::string& tag, HeadRun& r) {
  r.ids = read_i32(g, tag + ".input_ids");
  r.positions = read_i32(g, tag + ".positions");
  std::vector<int32_t> mask = read_i32(g, tag + ".attention_mask");
  r.segments.resize(mask.size());
  for (size_t i = 0; i < mask.size(); i++) r.segments[i] = mask[i] ? 0 : -1;
  Tensor ids_t = g.get(tag + ".input_ids");
  r.in.B = ids_t.shape[0];
  r.in.T = ids_t.shape[1];
  r.in.ids = r.ids.data();
  r.in.positions = r.positions.data();
  r.in.segments = r.segments.data();
  decoder_forward(m, r.ws, r.in);
  r.out = head_forward(head, r.ws, r.segments.data());
}

void check_golden(const std::string& folder, const std::string& tag, LossKind kind) {
  SCOPED_TRACE(folder + "/" + tag);
  Model m = load_model(golden_dir(folder));
  ASSERT_TRUE(m.cfg.is_seq_cls);
  EXPECT_EQ(m.lm_head.weight, nullptr);
  ClassificationHead head = classification_head(m);
  for (auto& p : m.params) p.trainable = true;
  m.sync_grad_buffers();
  SafetensorsFile g = open_safetensors(golden_dir(folder) + "/golden.safetensors");
  HeadRun r;
  forward_batch(m, head, g, tag, r);

  std::vector<int32_t> pooled = read_i32(g, tag + ".pooled");
  for (int64_t b = 0; b < r.in.B; b++) EXPECT_EQ(r.out.pooled[size_t(b)], pooled[size_t(b)]) << "row " << b;
  std::vector<int32_t> hf = read_i32(g, tag + ".hf_pooled");
  std::vector<int64_t> ours_hf = hf_pooled_positions(r.ids.data(), r.in.B, r.in.T, m.cfg.pad_token_id);
  for (int64_t b = 0; b < r.in.B; b++) EXPECT_EQ(ours_hf[size_t(b)], hf[size_t(b)]) << "HF rule, row " << b;

  Tensor ref_logits = g.get_f32(tag + ".logits");
  ASSERT_EQ(ref_logits.numel(), int64_t(r.out.logits.size()));
  EXPECT_LE(rel_err(r.out.logits.data(), ref_logits.f32(), ref_logits.numel()), 1e-5) << "logits";

  // The loss formula alone, on the golden logits, must match to 1e-6; the whole pipeline too, except that
  // MSE multiplies the f32 logit noise (~1e-6 here) by 2|z − t| ≈ 3, so it gets 5e-6.
  HeadOutput ref_out = r.out;
  ref_out.logits.assign(ref_logits.f32(), ref_logits.f32() + ref_logits.numel());
  auto compute = [&](const HeadOutput& out, bool backward) {
    if (kind == LossKind::CE) {
      std::vector<int32_t> labels = read_i32(g, tag + ".labels");
      return classification_ce_loss(head, r.ws, out, labels.data(), 1.f, backward);
    }
    if (kind == LossKind::MSE) {
      Tensor targets = g.get_f32(tag + ".labels");
      return regression_mse_loss(head, r.ws, out, targets.f32(), 1.f, backward);
    }
    RewardLoss rl = reward_bt_loss(head, r.ws, out, split_halves_pairs(r.in.B), 0.0, 1.f, backward);
    EXPECT_GE(rl.accuracy, 0.0);
    return rl.loss;
  };
  const double ref_loss = g.get_f32(tag + ".loss").f32()[0];
  EXPECT_NEAR(compute(ref_out, false), ref_loss, 1e-6) << "loss formula on the golden logits";
  EXPECT_NEAR(compute(r.out, true), ref_loss, kind == LossKind::MSE ? 5e-6 : 1e-6) << "loss";
  decoder_backward(m, r.ws, r.in);

  int checked = 0;
  for (auto& p : m.params) {
    std::string gname = tag + ".grad." + file_name_for(m.cfg, p.name);
    ASSERT_TRUE(g.has(gname)) << gname;
    Tensor ref = g.get_f32(gname);
    ASSERT_EQ(ref.shape, p.grad.shape) << gname;
    EXPECT_LE(rel_err(p.grad.f32(), ref.f32(), ref.numel()), 1e-4) << gname;
    checked++;
  }
  EXPECT_GT(checked, 10);
}

std::vector<int32_t> segments_from_mask(const std::vector<int32_t>& mask) {
  std::vector<int32_t> s(mask.size());
  for (size_t i = 0; i < mask.size(); i++) s[i] = mask[i] ? 0 : -1;
  return s;
}

}  // namespace

TEST(HeadsGolden, LlamaCeRightPadding) { check_golden("llama_seqcls", "right", LossKind::CE); }
TEST(HeadsGolden, LlamaCeLeftPadding) { check_golden("llama_seqcls", "left", LossKind::CE); }
TEST(HeadsGolden, NeoxPadEqualsEosRightPadding) { check_golden("neox_seqcls_padeos", "right", LossKind::CE); }
TEST(HeadsGolden, NeoxPadEqualsEosLeftPadding) { check_golden("neox_seqcls_padeos", "left", LossKind::CE); }
TEST(HeadsGolden, Gpt2CeRightPadding) { check_golden("gpt2_seqcls", "right", LossKind::CE); }
TEST(HeadsGolden, Gpt2CeLeftPadding) { check_golden("gpt2_seqcls", "left", LossKind::CE); }
TEST(HeadsGolden, RewardMseLeftPadding) { check_golden("llama_reward", "mse", LossKind::MSE); }
TEST(HeadsGolden, RewardBradleyTerryRightPadding) { check_golden("llama_reward", "bt", LossKind::BT); }

TEST(HeadsGolden, PadEqualsEosDiffersFromHfByOneToken) {
  // With pad == eos and an appended EOS, HF pools the token before the EOS; we pool the EOS itself.
  SafetensorsFile g = open_safetensors(golden_dir("neox_seqcls_padeos") + "/golden.safetensors");
  for (std::string tag : {"right", "left"}) {
    std::vector<int32_t> ours = read_i32(g, tag + ".pooled"), hf = read_i32(g, tag + ".hf_pooled");
    for (size_t b = 0; b < ours.size(); b++) EXPECT_EQ(hf[b], ours[b] - 1) << tag << " row " << b;
  }
}

TEST(HeadsPooling, RightPadding) {
  std::vector<int32_t> seg = {0, 0, 0, 0, 0, 0, -1, -1, 0, 0, 0, 0};
  EXPECT_EQ(last_token_positions(seg.data(), 3, 4), (std::vector<int64_t>{3, 1, 3}));
}

TEST(HeadsPooling, LeftPadding) {
  std::vector<int32_t> seg = {-1, -1, 0, 0, -1, 0, 0, 0};
  EXPECT_EQ(last_token_positions(seg.data(), 2, 4), (std::vector<int64_t>{3, 3}));
  // HF's id rule agrees when pad != any real token.
  std::vector<int32_t> ids = {9, 9, 5, 6, 9, 7, 8, 4};
  EXPECT_EQ(hf_pooled_positions(ids.data(), 2, 4, 9), (std::vector<int64_t>{3, 3}));
}

TEST(HeadsPooling, PadEqualsEosWithRealEosInside) {
  const int32_t eos = 0;
  // row 0: "5 eos 6 eos" (a real EOS inside, an appended EOS at the end), row 1: "7 eos" + 2 pads (= eos).
  std::vector<int32_t> ids = {5, eos, 6, eos, 7, eos, eos, eos};
  // (Written as segments, not as the mask {1,1,1,1,1,1,0,0}: GCC 12.2 with -march=native (AVX-512) SLP-vectorises
  // that constant into eight 1s — a compiler bug, see the report.)
  std::vector<int32_t> seg = {0, 0, 0, 0, 0, 0, -1, -1};
  EXPECT_EQ(last_token_positions(seg.data(), 2, 4), (std::vector<int64_t>{3, 1}));
  // HF (pad_token_id = eos) skips every trailing EOS: the token before the appended EOS.
  EXPECT_EQ(hf_pooled_positions(ids.data(), 2, 4, eos), (std::vector<int64_t>{2, 0}));
  // Left padding with pad == eos: HF would pool T − 2.
  std::vector<int32_t> ids_l = {eos, eos, 7, eos};
  std::vector<int32_t> seg_l = segments_from_mask({0, 0, 1, 1});
  EXPECT_EQ(last_token_positions(seg_l.data(), 1, 4), (std::vector<int64_t>{3}));
  EXPECT_EQ(hf_pooled_positions(ids_l.data(), 1, 4, eos), (std::vector<int64_t>{2}));
}

TEST(HeadsPooling, NoSegmentsMeansLastPositionAndAllPaddingFails) {
  EXPECT_EQ(last_token_positions(nullptr, 2, 5), (std::vector<int64_t>{4, 4}));
  std::vector<int32_t> seg = {0, -1, -1, -1};
  std::string err = error_of([&] { last_token_positions(seg.data(), 2, 2); });
  EXPECT_NE(err.find("row 1 has no real token"), std::string::npos) << err;
}

TEST(HeadsLoss, BradleyTerryGradientMatchesFiniteDifferences) {
  std::vector<float> r = {0.7f, -1.3f, 2.5f, 0.1f, -0.4f, 1.9f};
  RewardPairs pairs;
  pairs.chosen = {0, 2, 5};
  pairs.rejected = {1, 3, 4};
  pairs.margin = {0.25f, -0.5f, 1.0f};
  for (double center : {0.0, 0.1}) {
    std::vector<double> d(r.size());
    RewardLoss base = bradley_terry_loss(r.data(), int64_t(r.size()), pairs, center, d.data());
    EXPECT_GT(base.loss, 0);
    for (size_t i = 0; i < r.size(); i++) {
      // rewards are float; perturb in double through a float copy with a step float can represent
      const float h = 1.0f / 1024;
      std::vector<float> p = r, m = r;
      p[i] += h;
      m[i] -= h;
      double fd = (bradley_terry_loss(p.data(), int64_t(r.size()), pairs, center).loss -
                   bradley_terry_loss(m.data(), int64_t(r.size()), pairs, center).loss) /
                  (2.0 * h);
      EXPECT_NEAR(d[i], fd, 1e-6 * (1 + std::fabs(fd))) << "reward " << i << " center " << center;
    }
  }
  // Metrics: r_c > r_r for pairs 0, 1, 2 → accuracy 1; margin mean((0.7+1.3), (2.5−0.1), (1.9+0.4)) / 3.
  RewardLoss l = bradley_terry_loss(r.data(), int64_t(r.size()), pairs);
  EXPECT_DOUBLE_EQ(l.accuracy, 1.0);
  EXPECT_NEAR(l.mean_margin, (2.0 + 2.4 + 2.3) / 3.0, 1e-6);
}

TEST(HeadsLoss, BradleyTerryIsStableForLargeRewardGaps) {
  std::vector<float> r = {1000.f, -1000.f, -1000.f, 1000.f};
  RewardPairs pairs = split_halves_pairs(4);  // (0, 2), (1, 3)
  std::vector<double> d(4);
  RewardLoss l = bradley_terry_loss(r.data(), 4, pairs, 0.0, d.data());
  // pair (0,2): x = 2000 → loss ≈ 0, pair (1,3): x = −2000 → loss 2000; mean 1000.
  EXPECT_NEAR(l.loss, 1000.0, 1e-9);
  EXPECT_DOUBLE_EQ(l.accuracy, 0.5);
  for (double g : d) EXPECT_TRUE(std::isfinite(g));
  EXPECT_NEAR(d[1], -0.5, 1e-12);
  EXPECT_NEAR(d[3], 0.5, 1e-12);
  EXPECT_NE(error_of([] { split_halves_pairs(3); }).find("even number"), std::string::npos);
}

TEST(HeadsLoss, CeWeightGradientMatchesFiniteDifferences) {
  // Head weight gradient through head_forward + CE on a fixed decoder output (random model).
  Model m = load_model(golden_dir("llama_seqcls"));
  ClassificationHead head = classification_head(m);
  head.weight->trainable = true;
  m.sync_grad_buffers();
  std::vector<int32_t> ids = {1, 5, 6, 7, 1, 8, 9, 0};
  std::vector<int32_t> seg = {0, 0, 0, 0, 0, 0, 0, -1};
  DecoderInput in;
  in.B = 2;
  in.T = 4;
  in.ids = ids.data();
  in.segments = seg.data();
  Workspace ws;
  decoder_forward(m, ws, in);
  std::vector<int32_t> labels = {2, 0};
  HeadOutput out = head_forward(head, ws, seg.data());
  EXPECT_EQ(out.pooled, (std::vector<int64_t>{3, 2}));
  classification_ce_loss(head, ws, out, labels.data());
  // d_final is zero except at the pooled rows.
  const int64_t E = m.cfg.hidden_size;
  for (int64_t row = 0; row < 8; row++) {
    double norm = 0;
    for (int64_t e = 0; e < E; e++) norm += std::fabs(ws.d_final.f32()[row * E + e]);
    if (row == 3 || row == 6) EXPECT_GT(norm, 0) << row;
    else EXPECT_EQ(norm, 0) << row;
  }
  float* w = head.weight->value.f32();
  for (int64_t idx : {int64_t(0), int64_t(77), int64_t(3 * E - 1)}) {
    const float old = w[idx], h = 1.0f / 256;
    w[idx] = old + h;
    double lp = classification_ce_loss(head, ws, head_forward(head, ws, seg.data()), labels.data(), 1.f, false);
    w[idx] = old - h;
    double lm = classification_ce_loss(head, ws, head_forward(head, ws, seg.data()), labels.data(), 1.f, false);
    w[idx] = old;
    double fd = (lp - lm) / (2.0 * h);
    EXPECT_NEAR(head.weight->grad.f32()[idx], fd, 1e-5 * (1 + std::fabs(fd))) << idx;
  }
  std::vector<int32_t> bad = {3, 0};
  EXPECT_NE(error_of([&] { classification_ce_loss(head, ws, out, bad.data()); }).find("outside [0, 3)"),
            std::string::npos);
}

TEST(HeadsModel, SaveLoadRoundTripGivesIdenticalLogits) {
  for (std::string folder : {"llama_seqcls", "gpt2_seqcls"}) {
    SCOPED_TRACE(folder);
    TempDir tmp;
    Model m = load_model(golden_dir(folder));
    save_model(m, tmp.path);
    Model m2 = load_model(tmp.path);
    EXPECT_TRUE(m2.cfg.is_seq_cls);
    EXPECT_EQ(m2.cfg.num_labels, 3);
    EXPECT_EQ(m2.cfg.id2label, m.cfg.id2label);
    EXPECT_EQ(m2.cfg.architecture, m.cfg.architecture);
    CheckpointFiles ck = open_checkpoint(tmp.path);
    EXPECT_TRUE(ck.has("score.weight"));
    if (folder == "gpt2_seqcls") {
      EXPECT_TRUE(ck.has("transformer.h.0.attn.c_attn.weight"));  // HF's own naming for GPT-2 seq-cls
    }
    SafetensorsFile g = open_safetensors(golden_dir(folder) + "/golden.safetensors");
    HeadRun a, b;
    forward_batch(m, classification_head(m), g, "left", a);
    forward_batch(m2, classification_head(m2), g, "left", b);
    EXPECT_EQ(a.out.logits, b.out.logits);
  }
}

TEST(HeadsModel, CausalCheckpointConvertsToSeqCls) {
  TempDir tmp;
  SeqClsOptions opt;
  opt.num_labels = 2;
  opt.id2label = {"neg", "pos"};
  opt.pad_token_id = 0;
  opt.seed = 5;
  Model m = load_model_for_classification(golden_dir("neox_parallel"), opt);
  EXPECT_TRUE(m.cfg.is_seq_cls);
  EXPECT_EQ(m.cfg.architecture, "GPTNeoXForSequenceClassification");
  EXPECT_EQ(m.find("embed_out.weight"), nullptr);
  EXPECT_EQ(m.lm_head.weight, nullptr);
  for (LinearModule* l : m.linears()) EXPECT_NE(l->weight, nullptr);
  ClassificationHead head = classification_head(m);
  EXPECT_EQ(head.weight->value.shape, (Shape{2, 64}));
  double sq = 0;
  for (int64_t i = 0; i < head.weight->value.numel(); i++) sq += double(head.weight->value.f32()[i]) * head.weight->value.f32()[i];
  EXPECT_NEAR(std::sqrt(sq / 128.0), 0.02, 0.006);  // N(0, 0.02) init
  save_model(m, tmp.path);
  nlohmann::json cfg = read_json_file(tmp.file("config.json"));
  EXPECT_EQ(cfg["architectures"][0], "GPTNeoXForSequenceClassification");
  EXPECT_EQ(cfg["id2label"]["1"], "pos");
  EXPECT_EQ(cfg["label2id"]["neg"], 0);
  EXPECT_EQ(cfg["pad_token_id"], 0);
  EXPECT_FALSE(open_checkpoint(tmp.path).has("embed_out.weight"));
  Model m2 = load_model(tmp.path);
  std::vector<int32_t> ids = {5, 6, 7, 8, 9, 10};
  DecoderInput in;
  in.B = 1;
  in.T = 6;
  in.ids = ids.data();
  Workspace w1, w2;
  decoder_forward(m, w1, in);
  decoder_forward(m2, w2, in);
  EXPECT_EQ(head_forward(head, w1, nullptr).logits, head_forward(classification_head(m2), w2, nullptr).logits);
  // A seq-cls model has no LM head: the LM loss says so instead of crashing.
  std::vector<int32_t> targets(6, -100);
  EXPECT_NE(error_of([&] { decoder_lm_loss(m2, w2, targets.data(), 1.f, false); }).find("no LM head"),
            std::string::npos);
  // Default options keep a seq-cls checkpoint's own head; a different label count is an error.
  EXPECT_EQ(load_model_for_classification(tmp.path, SeqClsOptions{}).cfg.num_labels, 2);
  opt.num_labels = 4;
  opt.id2label.clear();
  EXPECT_NE(error_of([&] { load_model_for_classification(tmp.path, opt); }).find("2 labels but 4"), std::string::npos);
}

TEST(HeadsConfig, NumLabelsAndId2Label) {
  nlohmann::json base = read_json_file(golden_dir("llama_seqcls") + "/config.json");
  ModelConfig c = parse_model_config(base, "c.json");
  EXPECT_TRUE(c.is_seq_cls);
  EXPECT_EQ(c.num_labels, 3);
  EXPECT_EQ(c.id2label, (std::vector<std::string>{"negative", "neutral", "positive"}));
  EXPECT_EQ(c.problem_type, "single_label_classification");
  EXPECT_EQ(c.pad_token_id, 0);

  nlohmann::json j = base;
  j.erase("id2label");
  EXPECT_EQ(parse_model_config(j, "c.json").num_labels, 2);  // HF default
  j["num_labels"] = 1;
  ModelConfig r = parse_model_config(j, "c.json");
  EXPECT_EQ(r.num_labels, 1);
  EXPECT_EQ(resolve_problem_type(r), "single_label_classification");  // explicit problem_type kept
  j.erase("problem_type");
  EXPECT_EQ(resolve_problem_type(parse_model_config(j, "c.json")), "regression");

  j = base;
  j["num_labels"] = 5;
  EXPECT_NE(error_of([&] { parse_model_config(j, "c.json"); }).find("'id2label' has 3"), std::string::npos);
  j = base;
  j["id2label"] = {{"0", "a"}, {"2", "b"}};
  EXPECT_NE(error_of([&] { parse_model_config(j, "c.json"); }).find("got key \"2\""), std::string::npos);
  j = base;
  j["problem_type"] = "ranking";
  EXPECT_NE(error_of([&] { parse_model_config(j, "c.json"); }).find("problem_type"), std::string::npos);
  // A causal-LM config is not seq-cls.
  EXPECT_FALSE(load_model_config(golden_dir("llama_gqa_untied")).is_seq_cls);
}
