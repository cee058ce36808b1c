// 8-bit AdamW (bitsandbytes AdamW8bit, hf-semantics §3.4): states equal the reference blockwise
// quantization of hand-computed f32 moments, the 8-bit/f32 state split, bit-exact resume, and a
// 100-step loss curve within a stated bound of 32-bit AdamW.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/threads.h"
#include "io/safetensors.h"
#include "kernels/quant8.h"
#include "model/decoder.h"
#include "train/optimizer.h"
#include "train_test_util.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

std::vector<float> randn(int64_t n, uint64_t seed, float scale) {
  Rng r(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = scale * r.normal();
  return v;
}

// Half the largest gap between neighbouring codes: the worst rounding error relative to absmax.
float half_max_gap(const std::array<float, 256>& code) {
  float g = 0;
  for (size_t i = 1; i < code.size(); i++) g = std::max(g, code[i] - code[i - 1]);
  return 0.5f * g;
}

}  // namespace

// Two steps on a tensor of 4096 + 300 elements (a short last block): after each step the uint8
// states and absmax equal quantize_blockwise_8bit of the moments computed here by hand from the
// dequantized previous states (§3.4 reference), and the parameter equals the hand update that uses
// the f32 moments before requantization.
TEST(Adam8bit, StatesMatchReferenceQuantization) {
  const int64_t n = 4096 + 300, nb = num_blocks(n, 256);
  const double lr = 1e-3, wd = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  std::vector<float> p = randn(n, 1, 1.f), P = p;
  std::vector<uint8_t> s1(static_cast<size_t>(n), 0), s2(static_cast<size_t>(n), 0), S1 = s1, S2 = s2;
  std::vector<float> a1(size_t(nb), 0.f), a2(size_t(nb), 0.f), A1 = a1, A2 = a2;
  // A 32-bit AdamW alongside, to bound the drift the quantization introduces.
  std::vector<float> p32 = p, m32(static_cast<size_t>(n), 0.f), v32(static_cast<size_t>(n), 0.f);
  const auto& code1 = dynamic_map_signed();
  const auto& code2 = dynamic_map_unsigned();
  for (int t = 1; t <= 2; t++) {
    std::vector<float> g = randn(n, 10 + uint64_t(t), 0.1f);
    g[5] = 0.f;  // a zero gradient and a huge one
    g[700] = 50.f;
    adamw8bit_update(p.data(), g.data(), s1.data(), a1.data(), s2.data(), a2.data(), n, lr, wd, b1, b2, eps, t);
    adamw_update(p32.data(), g.data(), m32.data(), v32.data(), n, lr, wd, b1, b2, eps, t);
    // Reference: dequantize, update in f32, quantize.
    std::vector<float> m(static_cast<size_t>(n)), v(static_cast<size_t>(n));
    dequantize_blockwise_8bit(m.data(), S1.data(), A1.data(), n, code1.data(), 256);
    dequantize_blockwise_8bit(v.data(), S2.data(), A2.data(), n, code2.data(), 256);
    const float sc = float(lr / (1 - std::pow(b1, t))), bc2 = float(std::sqrt(1 - std::pow(b2, t)));
    for (int64_t i = 0; i < n; i++) {
      m[size_t(i)] = round_f32(m[size_t(i)] * float(b1)) + round_f32(float(1 - b1) * g[size_t(i)]);
      v[size_t(i)] = round_f32(v[size_t(i)] * float(b2)) +
                     round_f32(float(1 - b2) * round_f32(g[size_t(i)] * g[size_t(i)]));
      const float pi = P[size_t(i)] * float(1 - lr * wd);
      P[size_t(i)] = pi - round_f32(sc * (m[size_t(i)] / (std::sqrt(v[size_t(i)]) / bc2 + float(eps))));
    }
    quantize_blockwise_8bit(S1.data(), A1.data(), m.data(), n, code1.data(), 256);
    quantize_blockwise_8bit(S2.data(), A2.data(), v.data(), n, code2.data(), 256);
    SCOPED_TRACE(t);
    EXPECT_EQ(s1, S1);
    EXPECT_EQ(s2, S2);
    EXPECT_EQ(std::memcmp(a1.data(), A1.data(), a1.size() * 4), 0);
    EXPECT_EQ(std::memcmp(a2.data(), A2.data(), a2.size() * 4), 0);
    EXPECT_EQ(std::memcmp(p.data(), P.data(), p.size() * 4), 0);
    // New absmax = max |updated moment| of the block.
    EXPECT_EQ(a1[2], std::fabs(m[700]));
    // The dequantized states are the f32 moments up to half a code gap × absmax. At step 1 the
    // 8-bit and 32-bit moments start equal; by step 2 they differ only by that rounding.
    std::vector<float> dm(static_cast<size_t>(n)), dv(static_cast<size_t>(n));
    dequantize_blockwise_8bit(dm.data(), s1.data(), a1.data(), n, code1.data(), 256);
    dequantize_blockwise_8bit(dv.data(), s2.data(), a2.data(), n, code2.data(), 256);
    for (int64_t i = 0; i < n; i++) {
      const int64_t b = i / 256;
      ASSERT_LE(std::fabs(dm[size_t(i)] - m[size_t(i)]), half_max_gap(code1) * a1[size_t(b)] * 1.0001f) << i;
      ASSERT_LE(std::fabs(dv[size_t(i)] - v[size_t(i)]), half_max_gap(code2) * a2[size_t(b)] * 1.0001f) << i;
      if (t == 1) {
        ASSERT_EQ(m[size_t(i)], m32[size_t(i)]) << i;
      }
    }
    double maxdp = 0;
    for (int64_t i = 0; i < n; i++) maxdp = std::max(maxdp, double(std::fabs(p[size_t(i)] - p32[size_t(i)])));
    EXPECT_LT(maxdp, 2 * lr) << "8-bit vs 32-bit parameter drift";
  }
}

TEST(Adam8bit, SmallTensorsAndEmbeddingsKeepF32States) {
  Model m = tiny_model();  // V 128 × E 64 embedding (8192) → f32; qkv 192 × 64 → 8-bit; norms → f32
  OptimizerConfig oc;
  oc.kind = parse_optimizer_name("paged_adamw_8bit");
  Optimizer opt = make_optimizer(m, oc);
  int eight = 0, f32 = 0;
  for (const auto& s : opt.states) {
    const bool embedding = s.param == m.embed;
    EXPECT_EQ(s.eight_bit, s.param->value.numel() >= 4096 && !embedding) << s.param->name;
    EXPECT_EQ(s.eight_bit, !s.exp_avg.defined()) << s.param->name;
    if (s.eight_bit) {
      EXPECT_EQ(s.state1.dtype, DType::U8);
      EXPECT_EQ(s.absmax2.numel(), (s.param->value.numel() + 255) / 256);
    }
    (s.eight_bit ? eight : f32)++;
  }
  EXPECT_GT(eight, 4);
  EXPECT_GT(f32, 4);
}

namespace {

struct TinyBatch {
  int64_t B = 4, T = 16;
  std::vector<int32_t> ids, targets;
};

TinyBatch make_batch(int64_t vocab, uint64_t seed) {
  TinyBatch b;
  Rng r(seed);
  b.ids.resize(size_t(b.B * b.T));
  b.targets.assign(size_t(b.B * b.T), -100);
  for (auto& x : b.ids) x = int32_t(3 + r.below(uint64_t(vocab - 3)));
  for (int64_t i = 0; i < b.B; i++)
    for (int64_t t = 0; t + 1 < b.T; t++) b.targets[size_t(i * b.T + t)] = b.ids[size_t(i * b.T + t + 1)];
  return b;
}

// Tiny sizes: one thread avoids paying a parallel-region wake-up per kernel on a loaded machine.
struct OneThread {
  int saved = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(saved); }
};

// One optimizer step on batch `b`; returns the loss before the step.
double train_step(Model& m, Workspace& ws, Optimizer& opt, const TinyBatch& b, double lr) {
  for (auto& s : opt.states) std::memset(s.param->grad.data, 0, s.param->grad.nbytes());
  DecoderInput in;
  in.B = b.B;
  in.T = b.T;
  in.ids = b.ids.data();
  decoder_forward(m, ws, in);
  const int64_t count = b.B * (b.T - 1);
  LossSum ls = decoder_lm_loss(m, ws, b.targets.data(), 1.0f / float(count), true);
  decoder_backward(m, ws, in);
  opt.step(lr);
  return ls.sum / double(ls.count);
}

}  // namespace

// 100 steps of full fine-tuning on the tiny model (two alternating batches, lr 3e-3, wd 0.01):
// the 8-bit loss curve stays within 2% (relative) of the 32-bit AdamW curve at every step, and both
// learn (final loss well below the first).
TEST(Adam8bit, LossCurveWithinTwoPercentOf32Bit) {
  OneThread one;
  std::vector<double> curve[2];
  for (int k = 0; k < 2; k++) {
    Model m = tiny_model(3);
    OptimizerConfig oc;
    oc.kind = k == 0 ? OptimizerKind::AdamW : OptimizerKind::AdamW8bit;
    oc.weight_decay = 0.01;
    Optimizer opt = make_optimizer(m, oc);
    Workspace ws;
    TinyBatch b0 = make_batch(m.cfg.vocab_size, 1), b1 = make_batch(m.cfg.vocab_size, 2);
    for (int step = 0; step < 100; step++) curve[k].push_back(train_step(m, ws, opt, step % 2 ? b1 : b0, 3e-3));
  }
  double worst = 0;
  for (size_t i = 0; i < curve[0].size(); i++)
    worst = std::max(worst, std::fabs(curve[1][i] - curve[0][i]) / curve[0][i]);
  std::printf("[ adam8bit ] loss %.4f → %.4f (32-bit %.4f → %.4f), max |Δloss|/loss = %.4f%%\n", curve[1][0],
              curve[1].back(), curve[0][0], curve[0].back(), 100 * worst);
  EXPECT_LE(worst, 0.02);
  EXPECT_LT(curve[1].back(), 0.7 * curve[1][0]);
  EXPECT_NE(curve[0].back(), curve[1].back());  // the 8-bit path really ran
}

// Save after 3 steps, load into a fresh optimizer over a copy of the weights, continue 3 steps on
// both: parameters and states equal bit for bit.
TEST(Adam8bit, StateSaveLoadResumesBitExact) {
  OneThread one;
  Model a = tiny_model(4);
  OptimizerConfig oc;
  oc.kind = OptimizerKind::AdamW8bit;
  oc.weight_decay = 0.01;
  Optimizer opt_a = make_optimizer(a, oc);
  Workspace ws;
  TinyBatch b = make_batch(a.cfg.vocab_size, 9);
  for (int i = 0; i < 3; i++) train_step(a, ws, opt_a, b, 1e-3);
  TempDir dir("adam8bit");
  const std::string path = dir.path + "/optimizer.safetensors";
  save_optimizer_state(opt_a, path);
  SafetensorsFile f = open_safetensors(path);
  EXPECT_TRUE(f.has("state1.gpt_neox.layers.0.attention.query_key_value.weight"));
  EXPECT_EQ(f.info("state2.gpt_neox.layers.0.attention.query_key_value.weight").dtype, DType::U8);
  EXPECT_TRUE(f.has("absmax1.gpt_neox.layers.0.attention.query_key_value.weight"));
  EXPECT_TRUE(f.has("exp_avg.gpt_neox.embed_in.weight"));

  Model c = tiny_model(99);
  copy_weights(c, a);
  Optimizer opt_c = make_optimizer(c, oc);
  load_optimizer_state(opt_c, path);
  Workspace ws2;
  for (int i = 0; i < 3; i++) {
    train_step(a, ws, opt_a, b, 1e-3);
    train_step(c, ws2, opt_c, b, 1e-3);
  }
  std::string diff;
  EXPECT_TRUE(same_weights(a, c, &diff)) << diff;
  for (size_t i = 0; i < opt_a.states.size(); i++)
    if (opt_a.states[i].eight_bit) {
      EXPECT_EQ(std::memcmp(opt_a.states[i].state1.data, opt_c.states[i].state1.data, opt_a.states[i].state1.nbytes()),
                0);
    }
  // A 32-bit optimizer cannot load the 8-bit file.
  Optimizer plain = make_optimizer(c, OptimizerConfig{});
  EXPECT_THROW(load_optimizer_state(plain, path), Error);
}
