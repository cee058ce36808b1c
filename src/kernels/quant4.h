// quant4: bitsandbytes 4-bit blockwise quantization (NF4 / FP4, optional double quantization of the
// absmax), bit-exact with bitsandbytes' semantics (hf-semantics §3.2; details and deviations in
// tests/data/quant/README.md).
#pragma once
#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace llmtune {

enum class Quant4Type : uint8_t { NF4, FP4 };

const char* quant4_type_name(Quant4Type t);  // "nf4" / "fp4" (bitsandbytes spelling)
// Parses "nf4"/"fp4"; `what` names the setting in the error message.
Quant4Type quant4_type_from_name(std::string_view name,
                                 std::string_view what = "bnb_4bit_quant_type");

// The 16 code values indexed by the stored nibble. NF4: sorted, index 7 = 0. FP4: by bit pattern (1
// sign, 2 exponent, 1 mantissa bit), magnitudes {0, .0625, 8, 12, 4, 6, 2, 3} / 12 in float32.
const std::array<float, 16>& quant4_code(Quant4Type t);

// Index of the code nearest to s (in [-1, 1]) by torch.argmin's rule: float32 distances, ties ->
// lowest index, NaN -> 0. For FP4 that is the bit pattern (+0 wins over -0).
int quant4_nearest_code(Quant4Type t, float s);

// Throws llmtune::Error unless blocksize is a power of two in [32, 4096].
void check_quant4_blocksize(int64_t blocksize);

// A [rows, cols] weight quantized over its row-major flattening. Element e has nibble (packed[e/2]
// >> (e even ? 4 : 0)) & 15 and block e / blocksize; an odd count is padded with the code of 0.0.
struct Quant4Weight {
  int64_t rows = 0, cols = 0;
  Quant4Type quant_type = Quant4Type::NF4;
  int64_t blocksize = 64;
  std::vector<uint8_t> packed;  // (rows*cols + 1) / 2 bytes
  std::vector<float> absmax;    // one per block; empty when double_quant
  // Double quantization (bnb compress_statistics / bnb_4bit_use_double_quant): the block absmax is
  // stored as qabsmax (one byte per block, index into absmax_code) with absmax2 (one float per 256
  // blocks) and offset: absmax[b] = absmax_code[qabsmax[b]] * absmax2[b / 256] + offset.
  bool double_quant = false;
  std::vector<uint8_t> qabsmax;
  std::vector<float> absmax2;
  float offset = 0.0f;
  // The nested map: the signed dynamic map when we quantize; a checkpoint's `nested_quant_map` when
  // loaded.
  std::array<float, 256> absmax_code{};

  int64_t numel() const { return rows * cols; }
  int64_t num_blocks() const { return (numel() + blocksize - 1) / blocksize; }
};

// Validates sizes/blocksize of a (possibly hand-filled) Quant4Weight; throws llmtune::Error naming
// the field.
void check_quant4_weight(const Quant4Weight& W);

// Quantizes W [rows, cols] (float32; bf16 weights: convert first — bitsandbytes does the same math
// in float32).
Quant4Weight quantize_4bit(const float* W, int64_t rows, int64_t cols, Quant4Type type,
                           int64_t blocksize = 64, bool double_quant = false);

// Low level: n values -> packed[(n+1)/2], absmax[ceil(n/blocksize)].
void quantize_4bit_packed(uint8_t* packed, float* absmax, const float* x, int64_t n,
                          Quant4Type type, int64_t blocksize);
// offset = mean(absmax) (accumulated in double, rounded to float32), then blockwise 8-bit of absmax
// - offset with `code` (256 sorted values), block 256: qabsmax[nb], absmax2[ceil(nb/256)].
void double_quantize_absmax(uint8_t* qabsmax, float* absmax2, float* offset, const float* absmax,
                            int64_t nb, const float* code);

// The float32 scale of block b (absmax, or its double-quantized reconstruction).
float quant4_block_scale(const Quant4Weight& W, int64_t b);

// Dequantizes flat elements [begin, end): out[e - begin] = code[nibble(e)] * scale(block(e)),
// float32; the bf16 variants round that float32 value to nearest even (as bitsandbytes' CUDA
// kernels do).
void dequantize_4bit_range(float* out, const Quant4Weight& W, int64_t begin, int64_t end);
void dequantize_4bit_range_bf16(uint16_t* out, const Quant4Weight& W, int64_t begin, int64_t end);
void dequantize_4bit(float* out, const Quant4Weight& W);          // rows*cols floats
void dequantize_4bit_bf16(uint16_t* out, const Quant4Weight& W);  // rows*cols bf16

}  // namespace llmtune
