// Tests for quant4: NF4/FP4 quantize → dequantize bit-exact against tools/bnb_reference.py goldens
// (packed bytes, absmax, double-quant state, f32 and bf16 dequant), round-trip bounds, odd sizes,
// ranges, bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/quant4.h"
#include "kernels/quant8.h"
#include "quant_test_util.h"

namespace llmtune {
namespace {

using test::count_mismatches;
using test::quant_data;
using test::read_safetensors;

TEST(Quant4, CodesMatchGolden) {
  const auto f = read_safetensors(quant_data("maps.safetensors"));
  const auto& nf4 = quant4_code(Quant4Type::NF4);
  const auto& fp4 = quant4_code(Quant4Type::FP4);
  EXPECT_EQ(count_mismatches(f.at("nf4").as<float>(), std::vector<float>(nf4.begin(), nf4.end())),
            0);
  EXPECT_EQ(count_mismatches(f.at("fp4").as<float>(), std::vector<float>(fp4.begin(), fp4.end())),
            0);
  EXPECT_EQ(fp4[0b0011], 1.0f);
  EXPECT_EQ(fp4[0b1011], -1.0f);
  EXPECT_EQ(fp4[0b0001], 0.0625f / 12.0f);
  EXPECT_EQ(nf4[7], 0.0f);
}

class Quant4Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Quant4Golden, BitExact) {
  const auto f = read_safetensors(quant_data(GetParam()));
  const Quant4Type type = quant4_type_from_name(f.metadata.at("quant_type"));
  const int64_t bs = f.meta_int("blocksize"), rows = f.meta_int("rows"), cols = f.meta_int("cols");
  const bool dq = f.meta_int("double_quant") != 0;
  const auto x = f.at("input").as<float>();
  ASSERT_EQ(int64_t(x.size()), rows * cols);

  const Quant4Weight W = quantize_4bit(x.data(), rows, cols, type, bs, dq);
  const auto packed = f.at("packed");
  EXPECT_EQ(packed.shape, (std::vector<int64_t>{(rows * cols + 1) / 2, 1}));
  EXPECT_EQ(count_mismatches(W.packed, packed.as<uint8_t>()), 0);
  if (dq) {
    EXPECT_EQ(count_mismatches(W.qabsmax, f.at("qabsmax").as<uint8_t>()), 0);
    EXPECT_EQ(count_mismatches(W.absmax2, f.at("absmax2").as<float>()), 0);
    EXPECT_EQ(test::bits(W.offset), test::bits(f.at("offset").as<float>()[0]));
    std::vector<float> scales(static_cast<size_t>(W.num_blocks()));
    for (int64_t b = 0; b < W.num_blocks(); ++b)
      scales[static_cast<size_t>(b)] = quant4_block_scale(W, b);
    EXPECT_EQ(count_mismatches(scales, f.at("absmax_dequant").as<float>()), 0);
    // The 4-bit codes themselves were chosen with the exact absmax, which the golden also stores.
    std::vector<uint8_t> p2(W.packed.size());
    std::vector<float> a2(static_cast<size_t>(W.num_blocks()));
    quantize_4bit_packed(p2.data(), a2.data(), x.data(), rows * cols, type, bs);
    EXPECT_EQ(count_mismatches(a2, f.at("absmax").as<float>()), 0);
  } else {
    EXPECT_EQ(count_mismatches(W.absmax, f.at("absmax").as<float>()), 0);
  }
  std::vector<float> y(x.size());
  dequantize_4bit(y.data(), W);
  EXPECT_EQ(count_mismatches(y, f.at("dequant").as<float>()), 0);
  std::vector<uint16_t> y16(x.size());
  dequantize_4bit_bf16(y16.data(), W);
  EXPECT_EQ(count_mismatches(y16, f.at("dequant_bf16").as<uint16_t>()), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Quant4, Quant4Golden,
    ::testing::Values("q4_nf4_1000_b64.safetensors", "q4_fp4_1000_b64.safetensors",
                      "q4_nf4_77x131_b64_dq.safetensors", "q4_fp4_77x131_b32_dq.safetensors",
                      "q4_nf4_77x131_b128.safetensors", "q4_fp4_1001_b4096.safetensors",
                      "q4_nf4_ties_b64.safetensors", "q4_fp4_ties_b64.safetensors",
                      "q4_nf4_recip_b64.safetensors", "q4_fp4_recip_b64.safetensors"),
    [](const auto& info) {
      std::string s = info.param.substr(3, info.param.size() - 3 - 12);
      return s;
    });

TEST(Quant4, NearestMatchesBruteForceAtMidpoints) {
  for (Quant4Type t : {Quant4Type::NF4, Quant4Type::FP4}) {
    const auto& code = quant4_code(t);
    std::vector<float> probes = {-1.0f, 1.0f, 0.0f, -0.0f, NAN};
    for (float a : code)
      for (float b : code) {
        const float m = (a + b) / 2.0f;
        probes.insert(probes.end(), {m, std::nextafter(m, -2.0f), std::nextafter(m, 2.0f)});
      }
    Rng rng(3);
    for (int i = 0; i < 5000; ++i) probes.push_back(2.0f * rng.uniform() - 1.0f);
    for (float s : probes) {
      int brute = 0;
      if (!std::isnan(s))
        for (int j = 1; j < 16; ++j)
          if (std::fabs(s - code[static_cast<size_t>(j)]) <
              std::fabs(s - code[static_cast<size_t>(brute)]))
            brute = j;
      ASSERT_EQ(quant4_nearest_code(t, s), brute) << quant4_type_name(t) << " s=" << s;
      const int generic = t == Quant4Type::NF4 ? nearest_code_sorted(code.data(), 16, s)
                                               : nearest_code_any(code.data(), 16, s);
      ASSERT_EQ(generic, brute) << quant4_type_name(t) << " s=" << s;
    }
  }
}

TEST(Quant4, RoundTripBoundOddSizes) {
  for (Quant4Type t : {Quant4Type::NF4, Quant4Type::FP4}) {
    const auto& code = quant4_code(t);
    std::vector<float> sorted(code.begin(), code.end());
    std::sort(sorted.begin(), sorted.end());
    double half = 0;
    for (size_t i = 0; i + 1 < 16; ++i)
      half = std::max(half, (double(sorted[i + 1]) - sorted[i]) / 2);
    for (int64_t bs : {32, 64, 256, 4096}) {
      for (auto [rows, cols] :
           {std::pair<int64_t, int64_t>{1, 1}, {1, 63}, {7, 9}, {13, 77}, {33, 129}}) {
        const auto x = test::random_vec(static_cast<size_t>(rows * cols),
                                        uint64_t(rows * 1000 + cols + bs), 0.05f);
        for (bool dq : {false, true}) {
          const Quant4Weight W = quantize_4bit(x.data(), rows, cols, t, bs, dq);
          std::vector<float> y(x.size());
          dequantize_4bit(y.data(), W);
          std::vector<float> exact_absmax(static_cast<size_t>(W.num_blocks()));
          std::vector<uint8_t> p(W.packed.size());
          quantize_4bit_packed(p.data(), exact_absmax.data(), x.data(), rows * cols, t, bs);
          for (size_t i = 0; i < x.size(); ++i) {
            const int64_t b = int64_t(i) / bs;
            const double a = exact_absmax[static_cast<size_t>(b)];
            // Double quant perturbs the scale by at most ~absmax2/127: allow that on top of the
            // code error.
            const double scale_err = std::fabs(double(quant4_block_scale(W, b)) - a);
            if (!dq) {
              ASSERT_EQ(scale_err, 0.0);
            }
            ASSERT_LE(std::fabs(double(x[i]) - y[i]),
                      (half + 1e-6) * a + scale_err * 1.0001 + 1e-12)
                << quant4_type_name(t) << " bs " << bs << " dq " << dq << " i " << i;
          }
        }
      }
    }
  }
}

TEST(Quant4, OddCountPadsWithCodeOfZero) {
  for (Quant4Type t : {Quant4Type::NF4, Quant4Type::FP4}) {
    const float first =
        quant4_code(t)[t == Quant4Type::NF4 ? 13 : 5];  // 0.5626 / 0.5: exact code values
    const std::vector<float> x = {first, -1.0f, 0.25f};
    const Quant4Weight W = quantize_4bit(x.data(), 1, 3, t, 64);
    ASSERT_EQ(W.packed.size(), 2u);
    const uint8_t zero_code = t == Quant4Type::NF4 ? 7 : 0;
    EXPECT_EQ(W.packed[1] & 15, zero_code) << quant4_type_name(t);
    // High nibble = element 0, low nibble = element 1.
    const auto& code = quant4_code(t);
    EXPECT_EQ(code[W.packed[0] >> 4], first);
    EXPECT_EQ(code[W.packed[0] & 15], -1.0f);
  }
}

TEST(Quant4, ZeroBlock) {
  std::vector<float> x(128, 0.0f);
  x[100] = 3.0f;
  for (Quant4Type t : {Quant4Type::NF4, Quant4Type::FP4}) {
    const Quant4Weight W = quantize_4bit(x.data(), 2, 64, t, 64);
    EXPECT_EQ(W.absmax[0], 0.0f);
    EXPECT_EQ(W.packed[0], 0);  // NaN scaled value -> index 0, like torch.argmin
    std::vector<float> y(128);
    dequantize_4bit(y.data(), W);
    EXPECT_EQ(y[0], 0.0f);
    EXPECT_EQ(y[100], 3.0f);
  }
}

TEST(Quant4, RangeMatchesFull) {
  const auto x = test::random_vec(31 * 45, 9, 1.0f);
  const Quant4Weight W = quantize_4bit(x.data(), 31, 45, Quant4Type::NF4, 32, true);
  std::vector<float> full(x.size());
  dequantize_4bit(full.data(), W);
  std::vector<uint16_t> full16(x.size());
  dequantize_4bit_bf16(full16.data(), W);
  for (auto [b, e] : {std::pair<int64_t, int64_t>{0, 1},
                      {1, 2},
                      {3, 100},
                      {31, 33},
                      {45, 90},
                      {1394, 1395},
                      {0, 1395},
                      {7, 7}}) {
    std::vector<float> part(static_cast<size_t>(e - b));
    dequantize_4bit_range(part.data(), W, b, e);
    EXPECT_EQ(test::count_bit_mismatches(part.data(), full.data() + b, e - b), 0) << b << ".." << e;
    std::vector<uint16_t> part16(static_cast<size_t>(e - b));
    dequantize_4bit_range_bf16(part16.data(), W, b, e);
    for (int64_t i = b; i < e; ++i)
      ASSERT_EQ(part16[static_cast<size_t>(i - b)], full16[static_cast<size_t>(i)]);
  }
}

TEST(Quant4, RejectsBadInput) {
  const std::vector<float> x(100, 1.0f);
  for (int64_t bs : {0, 16, 48, 8192, -64})
    EXPECT_THROW(quantize_4bit(x.data(), 10, 10, Quant4Type::NF4, bs), Error);
  EXPECT_THROW(quant4_type_from_name("int4"), Error);
  Quant4Weight W = quantize_4bit(x.data(), 10, 10, Quant4Type::NF4);
  W.absmax.pop_back();
  std::vector<float> y(100);
  EXPECT_THROW(dequantize_4bit(y.data(), W), Error);
  W = quantize_4bit(x.data(), 10, 10, Quant4Type::NF4);
  EXPECT_THROW(dequantize_4bit_range(y.data(), W, 50, 101), Error);
  try {
    quantize_4bit(x.data(), 10, 10, Quant4Type::NF4, 100);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("power of two"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace llmtune
