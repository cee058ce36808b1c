// Tests for gemv (decode-step products): every weight kind and every row count 1..kGemvMaxRows against
// the plain reference, odd sizes (vector tails, row blocks), bias and accumulate, several products in one
// call, the parallel path, and agreement with the linear kernels the generic path uses.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "kernel_test_util.h"
#include "kernels/gemv.h"
#include "kernels/linear.h"
#include "kernels/linear_quant.h"

namespace llmtune {
namespace {

using test::max_rel_err;
using test::random_vec;

struct Shape2 {
  int64_t in, out;
};

// Runs fast and reference on the same task (y pre-filled, so accumulate is checked too).
double compare(GemvTask t, const std::vector<float>& x, int64_t M, int64_t in) {
  std::vector<float> y_fast(static_cast<size_t>(M * t.out)), y_ref;
  for (size_t i = 0; i < y_fast.size(); i++) y_fast[i] = 0.01f * float(i % 7);
  y_ref = y_fast;
  t.y = y_fast.data();
  gemv_forward(&t, 1, x.data(), M, in);
  t.y = y_ref.data();
  reference::gemv_forward(&t, 1, x.data(), M, in);
  return max_rel_err(y_fast, y_ref);
}

TEST(Gemv, DenseF32AndBf16EveryRowCount) {
  for (Shape2 s : {Shape2{40, 13}, Shape2{768, 77}, Shape2{33, 5}, Shape2{512, 300}}) {
    const auto w = random_vec(size_t(s.in * s.out), uint64_t(s.in * 7 + s.out), 0.2f);
    const auto w16 = test::to_bf16(w);
    const auto bias = random_vec(size_t(s.out), 5, 0.5f);
    for (int64_t M = 1; M <= kGemvMaxRows; M++) {
      const auto x = random_vec(size_t(M * s.in), uint64_t(M), 1.0f);
      for (bool bf16 : {false, true})
        for (bool with_bias : {false, true})
          for (bool acc : {false, true}) {
            SCOPED_TRACE(testing::Message() << "in " << s.in << " out " << s.out << " M " << M << " bf16 " << bf16
                                            << " bias " << with_bias << " acc " << acc);
            GemvTask t;
            t.out = s.out;
            t.bias = with_bias ? bias.data() : nullptr;
            t.accumulate = acc;
            t.dense = bf16 ? WeightView{w16.data(), DType::BF16, false} : WeightView{w.data(), DType::F32, false};
            EXPECT_LE(compare(t, x, M, s.in), 2e-6);
          }
    }
  }
}

// The same numbers the oneDNN linear path (used for prompts and by the generic decode) produces.
TEST(Gemv, AgreesWithLinearForward) {
  const int64_t in = 384, out = 200;
  const auto w = random_vec(size_t(in * out), 11, 0.1f);
  const auto w16 = test::to_bf16(w);
  const auto bias = random_vec(size_t(out), 12, 0.5f);
  for (int64_t M : {1, 3, 8}) {
    const auto x = random_vec(size_t(M * in), 13 + uint64_t(M), 1.0f);
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(testing::Message() << "M " << M << " bf16 " << bf16);
      WeightView W = bf16 ? WeightView{w16.data(), DType::BF16, false} : WeightView{w.data(), DType::F32, false};
      std::vector<float> y(size_t(M * out)), y_lin(size_t(M * out));
      gemv_forward(y.data(), x.data(), W, bias.data(), M, in, out);
      linear_forward(y_lin.data(), x.data(), W, bias.data(), M, in, out);
      EXPECT_LE(max_rel_err(y, y_lin), 2e-6);
    }
  }
}

TEST(Gemv, FourBitEveryTypeAndBlocksize) {
  for (Shape2 s : {Shape2{256, 37}, Shape2{128, 9}, Shape2{1024, 260}})
    for (Quant4Type type : {Quant4Type::NF4, Quant4Type::FP4})
      for (bool dq : {false, true})
        for (int64_t bs : {64, 128}) {
          const auto w = random_vec(size_t(s.in * s.out), uint64_t(s.in + s.out + bs), 0.1f);
          const Quant4Weight W = quantize_4bit(w.data(), s.out, s.in, type, bs, dq);
          const auto bias = random_vec(size_t(s.out), 21, 0.5f);
          for (int64_t M : {1, 2, 4, 5, 8}) {
            SCOPED_TRACE(testing::Message() << quant4_type_name(type) << " dq " << dq << " bs " << bs << " in "
                                            << s.in << " out " << s.out << " M " << M);
            const auto x = random_vec(size_t(M * s.in), 30 + uint64_t(M), 1.0f);
            GemvTask t;
            t.out = s.out;
            t.q4 = &W;
            t.bias = bias.data();
            EXPECT_LE(compare(t, x, M, s.in), 2e-6);
            // and the tiled linear kernel the prompt pass uses
            std::vector<float> y(size_t(M * s.out)), y_lin(size_t(M * s.out));
            gemv_q4_forward(y.data(), x.data(), W, bias.data(), M);
            linear_q4_forward(y_lin.data(), x.data(), W, bias.data(), M);
            EXPECT_LE(max_rel_err(y, y_lin), 2e-6);
          }
        }
}

TEST(Gemv, Int8) {
  for (Shape2 s : {Shape2{256, 37}, Shape2{100, 9}, Shape2{1024, 300}}) {
    const auto w = random_vec(size_t(s.in * s.out), uint64_t(s.in + 3 * s.out), 0.1f);
    const Int8Weight W = quantize_int8_rowwise(w.data(), s.out, s.in);
    const auto bias = random_vec(size_t(s.out), 22, 0.5f);
    for (int64_t M : {1, 3, 4, 6, 8}) {
      SCOPED_TRACE(testing::Message() << "in " << s.in << " out " << s.out << " M " << M);
      const auto x = random_vec(size_t(M * s.in), 40 + uint64_t(M), 1.0f);
      GemvTask t;
      t.out = s.out;
      t.q8 = &W;
      t.bias = bias.data();
      EXPECT_LE(compare(t, x, M, s.in), 2e-6);
      std::vector<float> y(size_t(M * s.out)), y_lin(size_t(M * s.out));
      gemv_int8_forward(y.data(), x.data(), W, bias.data(), M);
      linear_int8_forward(y_lin.data(), x.data(), W, bias.data(), M);
      EXPECT_LE(max_rel_err(y, y_lin), 2e-6);
    }
  }
}

// Several products of different kinds sharing x in one parallel call; 1 and 2 threads agree bit for
// bit (each output is computed by one thread in a fixed order).
TEST(Gemv, BatchOfTasksAndThreadCountInvariance) {
  const int64_t in = 512, M = 2;
  const auto wa = random_vec(size_t(700 * in), 51, 0.1f), wb = random_vec(size_t(300 * in), 52, 0.1f);
  const auto wc = random_vec(size_t(129 * in), 53, 0.1f);
  const auto wb16 = test::to_bf16(wb);
  const Quant4Weight Wq = quantize_4bit(wc.data(), 129, in, Quant4Type::NF4, 64, true);
  const auto x = random_vec(size_t(M * in), 54, 1.0f);
  std::vector<float> ya(size_t(M * 700)), yb(size_t(M * 300)), yc(size_t(M * 129));
  GemvTask t[3];
  t[0].dense = WeightView{wa.data(), DType::F32, false}, t[0].out = 700, t[0].y = ya.data();
  t[1].dense = WeightView{wb16.data(), DType::BF16, false}, t[1].out = 300, t[1].y = yb.data();
  t[2].q4 = &Wq, t[2].out = 129, t[2].y = yc.data();
  const int before = num_threads();
  set_num_threads(2);
  gemv_forward(t, 3, x.data(), M, in);
  const auto ya2 = ya, yb2 = yb, yc2 = yc;
  set_num_threads(1);
  gemv_forward(t, 3, x.data(), M, in);
  set_num_threads(before);
  EXPECT_EQ(ya, ya2);
  EXPECT_EQ(yb, yb2);
  EXPECT_EQ(yc, yc2);
  for (int i = 0; i < 3; i++) {
    std::vector<float> ref(size_t(M * t[i].out));
    GemvTask r = t[i];
    r.y = ref.data();
    reference::gemv_forward(&r, 1, x.data(), M, in);
    EXPECT_LE(max_rel_err(t[i].y, ref.data(), ref.size()), 2e-6) << "task " << i;
  }
}

TEST(Gemv, RejectsWhatItDoesNotHandle) {
  const auto w = random_vec(64 * 96, 61, 0.1f);
  const auto x = random_vec(96 * 9, 62, 1.0f);
  std::vector<float> y(64 * 9);
  GemvTask t;
  t.out = 64, t.y = y.data();
  t.dense = WeightView{w.data(), DType::F32, true};  // Conv1D [in, out]: not a GEMV layout here
  EXPECT_FALSE(gemv_supports(t, 96));
  EXPECT_THROW(gemv_forward(&t, 1, x.data(), 1, 96), Error);
  t.dense.transposed = false;
  EXPECT_TRUE(gemv_supports(t, 96));
  EXPECT_THROW(gemv_forward(&t, 1, x.data(), 9, 96), Error);  // M > kGemvMaxRows
  EXPECT_THROW(gemv_forward(&t, 1, x.data(), 0, 96), Error);
  // 4-bit blocks that straddle rows (in = 96 is not a multiple of 64)
  const Quant4Weight W = quantize_4bit(w.data(), 64, 96, Quant4Type::NF4, 64, false);
  GemvTask q;
  q.out = 64, q.y = y.data(), q.q4 = &W;
  EXPECT_FALSE(gemv_supports(q, 96));
  EXPECT_THROW(gemv_forward(&q, 1, x.data(), 1, 96), Error);
}

}  // namespace
}  // namespace llmtune
