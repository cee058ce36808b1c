// Guards against a GCC 12.2 / AVX-512 SLP-vectoriser miscompilation of constant initialisers that
// silently corrupts data (CMakeLists.txt disables that pass); this test fails if it comes back.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

TEST(Compiler, ConstantInitialisersWithTrailingZerosSurvive) {
  std::vector<int32_t> v{1, 1, 1, 1, 1, 1, 0, 0};
  int32_t b[8] = {2, 2, 2, 2, 2, 2, 0, 0};
  EXPECT_EQ(v[6], 0);
  EXPECT_EQ(v[7], 0);
  EXPECT_EQ(b[6], 0);
  EXPECT_EQ(b[7], 0);
}
