// Tests for linear_quant: tiled products with 4-bit / int8 weights against the full-dequantize
// references, backward accumulation, the bf16 path, and the reference itself against the dense f32
// linear kernel.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/linear.h"
#include "kernels/linear_quant.h"

namespace llmtune {
namespace {

using test::max_rel_err;
using test::random_vec;

struct Case {
  int64_t N, in, out;
};

TEST(LinearQuant, Q4ForwardBackwardMatchReference) {
  for (Case c : {Case{5, 131, 77}, Case{1, 64, 300}, Case{17, 96, 33}}) {
    for (Quant4Type t : {Quant4Type::NF4, Quant4Type::FP4}) {
      for (bool dq : {false, true}) {
        const auto w = random_vec(static_cast<size_t>(c.out * c.in), uint64_t(c.in + c.out), 0.1f);
        const Quant4Weight W = quantize_4bit(w.data(), c.out, c.in, t, 64, dq);
        const auto x = random_vec(static_cast<size_t>(c.N * c.in), 2, 1.0f);
        const auto bias = random_vec(static_cast<size_t>(c.out), 3, 0.5f);
        const auto dy = random_vec(static_cast<size_t>(c.N * c.out), 4, 1.0f);
        std::vector<float> y_ref(static_cast<size_t>(c.N * c.out)),
            dx_ref(static_cast<size_t>(c.N * c.in), 0.25f);
        reference::linear_q4_forward(y_ref.data(), x.data(), W, bias.data(), c.N);
        reference::linear_q4_backward_input(dx_ref.data(), dy.data(), W, c.N);
        for (int64_t tile : {0, 1, 16, 64, 128, 1000}) {
          SCOPED_TRACE(testing::Message()
                       << quant4_type_name(t) << " dq " << dq << " N " << c.N << " in " << c.in
                       << " out " << c.out << " tile " << tile);
          QuantMatmulOptions opt;
          opt.tile_rows = tile;
          std::vector<float> y(y_ref.size(), NAN),
              dx(dx_ref.size(), 0.25f);  // dx pre-filled: += checked
          linear_q4_forward(y.data(), x.data(), W, bias.data(), c.N, opt);
          linear_q4_backward_input(dx.data(), dy.data(), W, c.N, opt);
          EXPECT_LE(max_rel_err(y, y_ref), 1e-5);
          EXPECT_LE(max_rel_err(dx, dx_ref), 1e-5);
        }
      }
    }
  }
}

TEST(LinearQuant, Q4ReferenceEqualsDenseLinear) {
  const int64_t N = 6, in = 70, out = 45;
  const auto w = random_vec(static_cast<size_t>(out * in), 8, 0.2f);
  const Quant4Weight W = quantize_4bit(w.data(), out, in, Quant4Type::NF4, 32, true);
  std::vector<float> dense(w.size());
  dequantize_4bit(dense.data(), W);
  const auto x = random_vec(static_cast<size_t>(N * in), 9, 1.0f),
             dy = random_vec(static_cast<size_t>(N * out), 10, 1.0f);
  std::vector<float> y_ref(static_cast<size_t>(N * out)), y(static_cast<size_t>(N * out)),
      dx_ref(static_cast<size_t>(N * in)), dx(static_cast<size_t>(N * in));
  WeightView view{dense.data(), DType::F32, false};
  reference::linear_forward(y_ref.data(), x.data(), view, nullptr, N, in, out);
  reference::linear_backward(dx_ref.data(), nullptr, nullptr, dy.data(), x.data(), view, N, in,
                             out);
  linear_q4_forward(y.data(), x.data(), W, nullptr, N);
  linear_q4_backward_input(dx.data(), dy.data(), W, N);
  EXPECT_LE(max_rel_err(y, y_ref), 1e-5);
  EXPECT_LE(max_rel_err(dx, dx_ref), 1e-5);
}

TEST(LinearQuant, Q4Bf16Path) {
  const int64_t N = 9, in = 128, out = 96;
  const auto w = random_vec(static_cast<size_t>(out * in), 12, 0.1f);
  const Quant4Weight W = quantize_4bit(w.data(), out, in, Quant4Type::NF4, 64, false);
  const auto x = random_vec(static_cast<size_t>(N * in), 13, 1.0f),
             dy = random_vec(static_cast<size_t>(N * out), 14, 1.0f);
  std::vector<float> y_ref(static_cast<size_t>(N * out)), y(static_cast<size_t>(N * out)),
      dx_ref(static_cast<size_t>(N * in)), dx(static_cast<size_t>(N * in));
  reference::linear_q4_forward(y_ref.data(), x.data(), W, nullptr, N);
  reference::linear_q4_backward_input(dx_ref.data(), dy.data(), W, N);
  QuantMatmulOptions opt;
  opt.bf16 = true;
  opt.tile_rows = 40;
  linear_q4_forward(y.data(), x.data(), W, nullptr, N, opt);
  linear_q4_backward_input(dx.data(), dy.data(), W, N, opt);
  EXPECT_LE(max_rel_err(y, y_ref), 2e-2);
  EXPECT_LE(max_rel_err(dx, dx_ref), 2e-2);
  EXPECT_GT(max_rel_err(y, y_ref), 0.0);  // really went through bf16
}

TEST(LinearQuant, Int8ForwardBackwardMatchReference) {
  const int64_t N = 7, in = 131, out = 77;
  const auto w = random_vec(static_cast<size_t>(out * in), 15, 0.1f);
  const Int8Weight W = quantize_int8_rowwise(w.data(), out, in);
  const auto x = random_vec(static_cast<size_t>(N * in), 16, 1.0f),
             dy = random_vec(static_cast<size_t>(N * out), 17, 1.0f);
  const auto bias = random_vec(static_cast<size_t>(out), 18, 1.0f);
  std::vector<float> y_ref(static_cast<size_t>(N * out)),
      dx_ref(static_cast<size_t>(N * in), -1.0f);
  reference::linear_int8_forward(y_ref.data(), x.data(), W, bias.data(), N);
  reference::linear_int8_backward_input(dx_ref.data(), dy.data(), W, N);
  for (bool bf16 : {false, true}) {
    QuantMatmulOptions opt;
    opt.bf16 = bf16;
    opt.tile_rows = 32;
    std::vector<float> y(y_ref.size()), dx(dx_ref.size(), -1.0f);
    linear_int8_forward(y.data(), x.data(), W, bias.data(), N, opt);
    linear_int8_backward_input(dx.data(), dy.data(), W, N, opt);
    EXPECT_LE(max_rel_err(y, y_ref), bf16 ? 2e-2 : 1e-5) << "bf16 " << bf16;
    EXPECT_LE(max_rel_err(dx, dx_ref), bf16 ? 2e-2 : 1e-5) << "bf16 " << bf16;
  }
  // The dequantized weight is close to the original: the layer output is too.
  std::vector<float> y_dense(static_cast<size_t>(N * out)), y_q(static_cast<size_t>(N * out));
  reference::linear_forward(y_dense.data(), x.data(), WeightView{w.data(), DType::F32, false},
                            bias.data(), N, in, out);
  linear_int8_forward(y_q.data(), x.data(), W, bias.data(), N);
  EXPECT_LE(max_rel_err(y_q, y_dense), 2e-2);
}

TEST(LinearQuant, RejectsBadOptionsAndWeights) {
  const auto w = random_vec(64 * 8, 19, 0.1f);
  const Quant4Weight W = quantize_4bit(w.data(), 8, 64, Quant4Type::NF4);
  std::vector<float> x(64), y(8);
  QuantMatmulOptions opt;
  opt.tile_rows = -1;
  EXPECT_THROW(linear_q4_forward(y.data(), x.data(), W, nullptr, 1, opt), Error);
  Quant4Weight broken = W;
  broken.packed.resize(3);
  EXPECT_THROW(linear_q4_forward(y.data(), x.data(), broken, nullptr, 1), Error);
  Int8Weight q = quantize_int8_rowwise(w.data(), 8, 64);
  q.scb.pop_back();
  EXPECT_THROW(linear_int8_forward(y.data(), x.data(), q, nullptr, 1), Error);
}

}  // namespace
}  // namespace llmtune
