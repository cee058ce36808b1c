// quant4: NF4/FP4 blockwise quantization, double quantization of the absmax, dequantization (see
// quant4.h). The float operations follow bitsandbytes' pure-PyTorch backend op for op, so results
// are bit-exact.
#include "kernels/quant4.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/quant8.h"

namespace llmtune {

namespace {

const std::array<float, 16> kNF4 = {-1.0f,
                                    -0.6961928009986877f,
                                    -0.5250730514526367f,
                                    -0.39491748809814453f,
                                    -0.28444138169288635f,
                                    -0.18477343022823334f,
                                    -0.09105003625154495f,
                                    0.0f,
                                    0.07958029955625534f,
                                    0.16093020141124725f,
                                    0.24611230194568634f,
                                    0.33791524171829224f,
                                    0.44070982933044434f,
                                    0.5626170039176941f,
                                    0.7229568362236023f,
                                    1.0f};

// bitsandbytes get_4bit_type("fp4"): the FP4 values divided by their max (12) in float32.
std::array<float, 16> make_fp4() {
  const float v[16] = {0.0f,  0.0625f,  8.0f,  12.0f,  4.0f,  6.0f,  2.0f,  3.0f,
                       -0.0f, -0.0625f, -8.0f, -12.0f, -4.0f, -6.0f, -2.0f, -3.0f};
  std::array<float, 16> out{};
  for (int i = 0; i < 16; ++i) out[size_t(i)] = v[i] / 12.0f;
  return out;
}

// Nearest of the 16 codes with torch.argmin's rule, fast: count the float midpoints below s
// (branch-free), then settle the exact float32 distances among that value and its two neighbours
// (only they can win or tie).
struct Nearest16 {
  int n = 0;               // distinct values
  float val[16] = {};      // sorted ascending, distinct (FP4's -0 merged into 0)
  float mid[15] = {};      // (val[k] + val[k+1]) / 2
  uint8_t index[16] = {};  // lowest table index holding val[k] (argmin's tie rule)

  explicit Nearest16(const std::array<float, 16>& code) {
    int order[16];
    for (int i = 0; i < 16; ++i) order[i] = i;
    std::stable_sort(order, order + 16,
                     [&](int a, int b) { return code[size_t(a)] < code[size_t(b)]; });
    for (int k : order) {
      if (n > 0 && val[n - 1] == code[size_t(k)]) {
        index[n - 1] = uint8_t(std::min<int>(index[n - 1], k));
        continue;
      }
      val[n] = code[size_t(k)];
      index[n] = uint8_t(k);
      ++n;
    }
    for (int k = 0; k + 1 < n; ++k) mid[k] = (val[k] + val[k + 1]) / 2.0f;
  }

  uint8_t pick(float s) const {
    if (std::isnan(s)) return 0;
    int j = 0;
    for (int k = 0; k + 1 < n; ++k) j += s > mid[k] ? 1 : 0;
    int best = j;
    float best_d = std::fabs(s - val[j]);
    auto consider = [&](int c) {
      const float d = std::fabs(s - val[c]);
      if (d < best_d || (d == best_d && index[c] < index[best])) best = c, best_d = d;
    };
    if (j > 0) consider(j - 1);
    if (j + 1 < n) consider(j + 1);
    return index[best];
  }
};

}  // namespace

const char* quant4_type_name(Quant4Type t) { return t == Quant4Type::NF4 ? "nf4" : "fp4"; }

Quant4Type quant4_type_from_name(std::string_view name, std::string_view what) {
  if (name == "nf4") return Quant4Type::NF4;
  if (name == "fp4") return Quant4Type::FP4;
  fail(what, ": unknown 4-bit quant type '", name, "': use \"nf4\" or \"fp4\"");
}

const std::array<float, 16>& quant4_code(Quant4Type t) {
  static const std::array<float, 16> fp4 = make_fp4();
  return t == Quant4Type::NF4 ? kNF4 : fp4;
}

namespace {
const Nearest16& nearest16(Quant4Type t) {
  static const Nearest16 nf4(quant4_code(Quant4Type::NF4)), fp4(quant4_code(Quant4Type::FP4));
  return t == Quant4Type::NF4 ? nf4 : fp4;
}
}  // namespace

int quant4_nearest_code(Quant4Type t, float s) { return nearest16(t).pick(s); }

void check_quant4_blocksize(int64_t blocksize) {
  LLMTUNE_CHECK(blocksize >= 32 && blocksize <= 4096 && (blocksize & (blocksize - 1)) == 0,
                "4-bit quantization: blocksize ", blocksize,
                " is invalid: use a power of two from 32 to 4096");
}

void check_quant4_weight(const Quant4Weight& W) {
  check_quant4_blocksize(W.blocksize);
  LLMTUNE_CHECK(W.rows > 0 && W.cols > 0, "4-bit weight: empty shape [", W.rows, ", ", W.cols, "]");
  const int64_t n = W.numel(), nb = W.num_blocks();
  LLMTUNE_CHECK(W.packed.size() == size_t((n + 1) / 2), "4-bit weight [", W.rows, ", ", W.cols,
                "]: packed has ", W.packed.size(), " bytes, expected ", (n + 1) / 2);
  if (W.double_quant) {
    LLMTUNE_CHECK(W.qabsmax.size() == size_t(nb), "4-bit weight: nested absmax has ",
                  W.qabsmax.size(), " entries, expected ", nb, " (one per block of ", W.blocksize,
                  ")");
    LLMTUNE_CHECK(W.absmax2.size() == size_t((nb + 255) / 256), "4-bit weight: nested absmax2 has ",
                  W.absmax2.size(), " entries, expected ", (nb + 255) / 256,
                  " (one per 256 blocks)");
  } else {
    LLMTUNE_CHECK(W.absmax.size() == size_t(nb), "4-bit weight: absmax has ", W.absmax.size(),
                  " entries, expected ", nb, " (one per block of ", W.blocksize, ")");
  }
}

void quantize_4bit_packed(uint8_t* packed, float* absmax, const float* x, int64_t n,
                          Quant4Type type, int64_t blocksize) {
  check_quant4_blocksize(blocksize);
  const Nearest16& nearest = nearest16(type);
  // bitsandbytes pads the scaled vector with 0.0 and quantizes it: the pad nibble is the code of 0.
  const uint8_t pad = nearest.pick(0.0f);
  const int64_t nb = num_blocks(n, blocksize);
  // Blocks have an even size, so each block owns whole bytes.
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t begin = b * blocksize, end = std::min(n, begin + blocksize);
    float amax = 0.0f;
    for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
    absmax[b] = amax;
    const float inv = 1.0f / amax;  // x * (1/absmax); an all-zero block gives
                                    // NaN -> index 0, like torch
    auto q = [&](int64_t i) {
      return nearest.pick(std::clamp(round_f32(x[i] * inv), -1.0f, 1.0f));
    };
    for (int64_t i = begin; i < end; i += 2) {
      const uint8_t hi = q(i), lo = i + 1 < end ? q(i + 1) : pad;
      packed[i / 2] = uint8_t(hi << 4 | lo);
    }
  }
}

void double_quantize_absmax(uint8_t* qabsmax, float* absmax2, float* offset, const float* absmax,
                            int64_t nb, const float* code) {
  LLMTUNE_CHECK(nb > 0, "double quantization: no blocks");
  double sum = 0.0;
  for (int64_t i = 0; i < nb; ++i) sum += absmax[i];
  const float mean = float(sum / double(nb));
  std::vector<float> centered(static_cast<size_t>(nb));
  for (int64_t i = 0; i < nb; ++i) centered[size_t(i)] = absmax[i] - mean;
  quantize_blockwise_8bit(qabsmax, absmax2, centered.data(), nb, code, 256);
  *offset = mean;
}

Quant4Weight quantize_4bit(const float* W, int64_t rows, int64_t cols, Quant4Type type,
                           int64_t blocksize, bool double_quant) {
  check_quant4_blocksize(blocksize);
  LLMTUNE_CHECK(rows > 0 && cols > 0, "quantize_4bit: empty weight [", rows, ", ", cols, "]");
  Quant4Weight out;
  out.rows = rows;
  out.cols = cols;
  out.quant_type = type;
  out.blocksize = blocksize;
  out.double_quant = double_quant;
  out.absmax_code = dynamic_map_signed();
  const int64_t n = out.numel(), nb = out.num_blocks();
  out.packed.assign(size_t((n + 1) / 2), 0);
  out.absmax.assign(size_t(nb), 0.0f);
  quantize_4bit_packed(out.packed.data(), out.absmax.data(), W, n, type, blocksize);
  if (double_quant) {
    out.qabsmax.assign(size_t(nb), 0);
    out.absmax2.assign(size_t((nb + 255) / 256), 0.0f);
    double_quantize_absmax(out.qabsmax.data(), out.absmax2.data(), &out.offset, out.absmax.data(),
                           nb, out.absmax_code.data());
    out.absmax.clear();
    out.absmax.shrink_to_fit();
  }
  return out;
}

float quant4_block_scale(const Quant4Weight& W, int64_t b) {
  if (!W.double_quant) return W.absmax[size_t(b)];
  // dequantize_blockwise (code * absmax2, rounded) then + offset: two roundings, never an FMA.
  return round_f32(W.absmax_code[W.qabsmax[size_t(b)]] * W.absmax2[size_t(b >> 8)]) + W.offset;
}

namespace {

template <typename Out, typename Convert>
void dequant_range(Out* out, const Quant4Weight& W, int64_t begin, int64_t end, Convert convert) {
  check_quant4_weight(W);
  LLMTUNE_CHECK(0 <= begin && begin <= end && end <= W.numel(), "4-bit dequantize: range [", begin,
                ", ", end, ") outside [0, ", W.numel(), ")");
  const float* code = quant4_code(W.quant_type).data();
  const uint8_t* p = W.packed.data();
  int64_t e = begin;
  while (e < end) {
    const int64_t b = e / W.blocksize;
    const int64_t stop = std::min(end, (b + 1) * W.blocksize);
    const float s = quant4_block_scale(W, b);
    Out lut[16];  // code[q] * scale, each product rounded once as in torch
    for (int q = 0; q < 16; ++q) lut[q] = convert(code[q] * s);
    if (e & 1) out[e - begin] = lut[p[e >> 1] & 15], ++e;
    for (; e + 1 < stop; e += 2) {
      const uint8_t byte = p[e >> 1];
      out[e - begin] = lut[byte >> 4];
      out[e + 1 - begin] = lut[byte & 15];
    }
    if (e < stop) out[e - begin] = lut[p[e >> 1] >> 4], ++e;
  }
}

}  // namespace

void dequantize_4bit_range(float* out, const Quant4Weight& W, int64_t begin, int64_t end) {
  dequant_range(out, W, begin, end, [](float v) { return v; });
}

void dequantize_4bit_range_bf16(uint16_t* out, const Quant4Weight& W, int64_t begin, int64_t end) {
  dequant_range(out, W, begin, end, [](float v) { return f32_to_bf16(v); });
}

void dequantize_4bit(float* out, const Quant4Weight& W) {
  dequantize_4bit_range(out, W, 0, W.numel());
}

void dequantize_4bit_bf16(uint16_t* out, const Quant4Weight& W) {
  dequantize_4bit_range_bf16(out, W, 0, W.numel());
}

}  // namespace llmtune
