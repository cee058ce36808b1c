// bf16/f16 conversions against known bit patterns.
#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"
#include "core/rng.h"

using namespace llmtune;

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16RoundTrip) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f}) {
    EXPECT_EQ(f16_to_f32(f32_to_f16(v)), v) << v;
  }
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
}

TEST(DType, NamesRoundTrip) {
  DType t;
  ASSERT_TRUE(dtype_from_name("BF16", &t));
  EXPECT_EQ(t, DType::BF16);
  EXPECT_EQ(dtype_size(t), 2u);
  EXPECT_FALSE(dtype_from_name("F12", &t));
}

TEST(Rng, DeterministicAndUniform) {
  Rng a(7), b(7);
  double sum = 0;
  for (int i = 0; i < 10000; i++) {
    float x = a.uniform();
    EXPECT_EQ(x, b.uniform());
    ASSERT_GE(x, 0.f);
    ASSERT_LT(x, 1.f);
    sum += x;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}
