// Element types of tensors as they appear in safetensors files, plus bf16/f16 conversions.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace llmtune {

enum class DType : uint8_t { F32, F16, BF16, F64, I8, U8, I16, U16, I32, U32, I64, U64, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);                      // safetensors spelling: "F32", "BF16", ...
bool dtype_from_name(std::string_view s, DType* out);  // false if unknown

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round-to-nearest-even, NaN kept NaN (what torch does).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of type `src_type` to f32.
void convert_to_f32(const void* src, DType src_type, float* dst, size_t n);
void convert_f32_to_bf16(const float* src, uint16_t* dst, size_t n);

}  // namespace llmtune
