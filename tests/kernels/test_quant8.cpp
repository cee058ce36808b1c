// Tests for quant8: dynamic maps and blockwise 8-bit quantization bit-exact against
// tools/bnb_reference.py goldens, the nearest-code search against brute force, round-trip bounds,
// LLM.int8 row-wise weights.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/quant8.h"
#include "quant_test_util.h"

namespace llmtune {
namespace {

using test::count_mismatches;
using test::quant_data;
using test::read_safetensors;

TEST(Quant8, DynamicMapsMatchTorchBitForBit) {
  const auto f = read_safetensors(quant_data("maps.safetensors"));
  const auto sig = f.at("dynamic_signed").as<float>(), uns = f.at("dynamic_unsigned").as<float>();
  const auto& s = dynamic_map_signed();
  const auto& u = dynamic_map_unsigned();
  EXPECT_EQ(count_mismatches(sig, std::vector<float>(s.begin(), s.end())), 0);
  EXPECT_EQ(count_mismatches(uns, std::vector<float>(u.begin(), u.end())), 0);
}

TEST(Quant8, DynamicMapShape) {
  for (bool is_signed : {true, false}) {
    const auto m = create_dynamic_map(is_signed);
    for (size_t i = 1; i < 256; ++i) EXPECT_LT(m[i - 1], m[i]) << i;
    EXPECT_EQ(m[255], 1.0f);
    EXPECT_EQ(std::count(m.begin(), m.end(), 0.0f), 1);
    if (is_signed) {
      EXPECT_NEAR(m[0], -0.99297, 1e-5);  // -1 is not representable
    } else {
      EXPECT_EQ(m[0], 0.0f);
    }
  }
}

TEST(Quant8, TorchLinspaceReplica) {
  // Values checked against torch 1.13: linspace(0.1, 1, 9)[3] is the FMA-rounded 0.4375
  // (0x3EE00000), and the 17-point grid has index 3 = 0.26874998 (0x3E899999) from the scalar tail.
  const auto a = torch_linspace_f32(0.1f, 1.0f, 9);
  EXPECT_EQ(test::bits(a[3]), 0x3EE00000u);
  EXPECT_EQ(a.front(), 0.1f);
  EXPECT_EQ(a.back(), 1.0f);
  const auto b = torch_linspace_f32(0.1f, 1.0f, 17);
  EXPECT_EQ(test::bits(b[3]), 0x3E899999u);
  EXPECT_EQ(torch_linspace_f32(0.1f, 1.0f, 2), (std::vector<float>{0.1f, 1.0f}));
}

// Brute-force torch.argmin(|s - code|): first minimum, NaN -> 0.
int brute_nearest(const float* code, int n, float s) {
  if (std::isnan(s)) return 0;
  int best = 0;
  for (int j = 1; j < n; ++j)
    if (std::fabs(s - code[j]) < std::fabs(s - code[best])) best = j;
  return best;
}

TEST(Quant8, NearestCodeMatchesBruteForce) {
  Rng rng(11);
  for (const auto* map : {&dynamic_map_signed(), &dynamic_map_unsigned()}) {
    const float* code = map->data();
    std::vector<float> probes;
    for (int i = 0; i + 1 < 256; ++i) {  // midpoints and their float neighbours: the tie cases
      const float m = (code[i] + code[i + 1]) / 2.0f;
      probes.insert(probes.end(), {m, std::nextafter(m, -2.0f), std::nextafter(m, 2.0f), code[i]});
    }
    for (int i = 0; i < 20000; ++i) probes.push_back(2.0f * rng.uniform() - 1.0f);
    for (int i = 0; i < 2000; ++i)
      probes.push_back(std::ldexp(2.0f * rng.uniform() - 1.0f, -int(rng.uniform() * 24)));
    probes.insert(probes.end(), {-1.0f, 1.0f, 0.0f, -0.0f, NAN});
    int64_t bad = 0;
    for (float s : probes) bad += nearest_code_sorted(code, 256, s) != brute_nearest(code, 256, s);
    EXPECT_EQ(bad, 0);
  }
}

TEST(Quant8, BlockwiseGoldenBitExact) {
  for (const char* name :
       {"q8_signed_3000_b256.safetensors", "q8_unsigned_3000_b256.safetensors",
        "q8_signed_5000_b2048.safetensors", "q8_signed_ties_b256.safetensors",
        "q8_unsigned_ties_b256.safetensors", "q8_signed_recip_b256.safetensors"}) {
    SCOPED_TRACE(name);
    const auto f = read_safetensors(quant_data(name));
    const bool is_signed = f.meta_int("signed") != 0;
    const int64_t bs = f.meta_int("blocksize");
    const auto x = f.at("input").as<float>();
    const int64_t n = int64_t(x.size());
    const float* code = is_signed ? dynamic_map_signed().data() : dynamic_map_unsigned().data();
    std::vector<uint8_t> q(static_cast<size_t>(n));
    std::vector<float> absmax(static_cast<size_t>(num_blocks(n, bs))), y(static_cast<size_t>(n));
    quantize_blockwise_8bit(q.data(), absmax.data(), x.data(), n, code, bs);
    dequantize_blockwise_8bit(y.data(), q.data(), absmax.data(), n, code, bs);
    EXPECT_EQ(count_mismatches(q, f.at("q").as<uint8_t>()), 0);
    EXPECT_EQ(count_mismatches(absmax, f.at("absmax").as<float>()), 0);
    EXPECT_EQ(count_mismatches(y, f.at("dequant").as<float>()), 0);
  }
}

TEST(Quant8, BlockwiseRoundTripBound) {
  // |x - deq| <= (largest distance from a point of [-1,1] to the map) * absmax of the block.
  for (int64_t bs : {64, 256, 2048}) {
    for (int64_t n : {1, 255, 1000, 4097}) {
      const auto x = test::random_vec(static_cast<size_t>(n), uint64_t(bs * 7 + n), 3.0f);
      const float* code = dynamic_map_signed().data();
      std::vector<uint8_t> q(static_cast<size_t>(n));
      std::vector<float> absmax(static_cast<size_t>(num_blocks(n, bs))), y(static_cast<size_t>(n));
      quantize_blockwise_8bit(q.data(), absmax.data(), x.data(), n, code, bs);
      dequantize_blockwise_8bit(y.data(), q.data(), absmax.data(), n, code, bs);
      double half = 1.0 + code[0];
      for (int i = 0; i + 1 < 256; ++i) half = std::max(half, (double(code[i + 1]) - code[i]) / 2);
      for (int64_t i = 0; i < n; ++i) {
        const double a = absmax[static_cast<size_t>(i / bs)];
        ASSERT_LE(std::fabs(double(x[static_cast<size_t>(i)]) - y[static_cast<size_t>(i)]),
                  (half + 4e-7) * a)
            << "bs " << bs << " i " << i;
      }
    }
  }
}

TEST(Quant8, ZeroBlockQuantizesToIndexZero) {
  std::vector<float> x(300, 0.0f);
  x[299] = 2.0f;
  std::vector<uint8_t> q(300);
  std::vector<float> absmax(2), y(300);
  quantize_blockwise_8bit(q.data(), absmax.data(), x.data(), 300, dynamic_map_signed().data(), 256);
  EXPECT_EQ(absmax[0], 0.0f);
  EXPECT_EQ(q[0], 0);  // torch: 0 * (1/0) = NaN -> argmin index 0
  dequantize_blockwise_8bit(y.data(), q.data(), absmax.data(), 300, dynamic_map_signed().data(),
                            256);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[299], 2.0f);
}

TEST(Quant8, Int8RowwiseGoldenBitExact) {
  const auto f = read_safetensors(quant_data("int8_rowwise_77x131.safetensors"));
  const auto W = f.at("input").as<float>();
  ASSERT_EQ(f.at("input").shape, (std::vector<int64_t>{77, 131}));
  const Int8Weight q = quantize_int8_rowwise(W.data(), 77, 131);
  EXPECT_EQ(count_mismatches(q.w8, f.at("w8").as<int8_t>()), 0);
  EXPECT_EQ(count_mismatches(q.scb, f.at("scb").as<float>()), 0);
  std::vector<float> y(77 * 131);
  dequantize_int8_rows(y.data(), q, 0, 77);
  EXPECT_EQ(count_mismatches(y, f.at("dequant").as<float>()), 0);
  // A row range lands at the start of the buffer.
  std::vector<float> part(3 * 131);
  dequantize_int8_rows(part.data(), q, 40, 43);
  EXPECT_EQ(test::count_bit_mismatches(part.data(), y.data() + 40 * 131, 3 * 131), 0);
}

TEST(Quant8, Int8RowwiseRoundTripAndErrors) {
  const auto W = test::random_vec(33 * 65, 5, 0.3f);
  const Int8Weight q = quantize_int8_rowwise(W.data(), 33, 65);
  std::vector<float> y(W.size());
  dequantize_int8_rows(y.data(), q, 0, 33);
  for (int64_t r = 0; r < 33; ++r)
    for (int64_t c = 0; c < 65; ++c) {
      const size_t i = static_cast<size_t>(r * 65 + c);
      ASSERT_LE(std::fabs(W[i] - y[i]),
                q.scb[static_cast<size_t>(r)] / 127.0f * 0.5f * (1 + 1e-5f));
      ASSERT_LE(std::abs(int(q.w8[i])), 127);
    }
  std::vector<float> bad(4);
  EXPECT_THROW(dequantize_int8_rows(bad.data(), q, 30, 34), Error);
  EXPECT_THROW(quantize_int8_rowwise(W.data(), 0, 65), Error);
}

}  // namespace
}  // namespace llmtune
