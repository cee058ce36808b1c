// quant8: dynamic 8-bit maps, blockwise 8-bit quantization and LLM.int8 row-wise weights (see
// quant8.h). Every float operation mirrors the torch op bitsandbytes runs, in the same order and
// precision.
#include "kernels/quant8.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace llmtune {

std::vector<float> torch_linspace_f32(float start, float end, int64_t steps) {
  LLMTUNE_CHECK(steps >= 1, "linspace: steps must be >= 1, got ", steps);
  std::vector<float> out(size_t(steps), start);
  if (steps == 1) return out;
  // torch's linspace_kernel: step in float; the first half counts up from start, the second down
  // from end. The scalar lambda is compiled with FMA contraction (start + step*i rounds once); the
  // AVX2 vector lambda builds Vectorized::arange(base, step) = base + k*step with the product
  // rounded, two 8-lane vectors per iteration, the half decided once per vector from its first
  // index. This reproduces the Debian torch 1.13 tables.
  const float step = (end - start) / float(steps - 1);
  const int64_t halfway = steps / 2;
  auto scalar = [&](int64_t i) {
    return i < halfway ? std::fma(step, float(i), start)
                       : std::fma(-step, float(steps - i - 1), end);
  };
  constexpr int64_t kLanes = 8;
  int64_t i = 0;
  for (; i + 2 * kLanes <= steps; i += 2 * kLanes) {
    for (int64_t v = i; v < i + 2 * kLanes; v += kLanes) {
      const float base = scalar(v);
      out[size_t(v)] = base;
      for (int64_t k = 1; k < kLanes; ++k) out[size_t(v + k)] = base + round_f32(float(k) * step);
    }
  }
  for (; i < steps; ++i) out[size_t(i)] = scalar(i);
  return out;
}

std::array<float, 256> create_dynamic_map(bool is_signed) {
  // bitsandbytes: for i in 0..6: b = linspace(0.1, 1, 2^i + 1) (signed) or 2^(i+1) + 1 (unsigned),
  // means = (b[:-1] + b[1:]) / 2, add 10^(i-6) * means (and its negation when signed); then 0 and
  // 1; sort. The scalar 10**(i-6) is a Python double that torch casts to float32 before the
  // product.
  static const double kPow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    const int64_t items = is_signed ? (int64_t(1) << i) + 1 : (int64_t(1) << (i + 1)) + 1;
    const std::vector<float> b = torch_linspace_f32(0.1f, 1.0f, items);
    const float scale = float(kPow10[i]);
    for (int64_t j = 0; j + 1 < items; ++j) {
      const float mean = (b[size_t(j)] + b[size_t(j + 1)]) / 2.0f;
      data.push_back(scale * mean);
      if (is_signed) data.push_back(-scale * mean);
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  LLMTUNE_CHECK(data.size() == 256, "create_dynamic_map: internal size error");
  std::sort(data.begin(), data.end());
  std::array<float, 256> out{};
  std::copy(data.begin(), data.end(), out.begin());
  return out;
}

const std::array<float, 256>& dynamic_map_signed() {
  static const std::array<float, 256> map = create_dynamic_map(true);
  return map;
}
const std::array<float, 256>& dynamic_map_unsigned() {
  static const std::array<float, 256> map = create_dynamic_map(false);
  return map;
}

int nearest_code_sorted(const float* code, int n, float s) {
  if (std::isnan(s)) return 0;  // torch.argmin picks the first NaN distance
  // Branch-free lower_bound (first code >= s): the optimizer requantizes every state element each
  // step.
  const float* base = code;
  for (int len = n; len > 1;) {
    const int half = len / 2;
    base += (base[half] < s) ? half : 0;
    len -= half;
  }
  int i = std::min(int(base - code) + (*base < s ? 1 : 0), n - 1);
  // Rounded distances are monotone in the code value, so the minimum is at one of the two
  // neighbours of s.
  int best = i;
  float best_d = std::fabs(s - code[i]);
  if (i > 0) {
    const float d = std::fabs(s - code[i - 1]);
    if (d <= best_d) best = i - 1, best_d = d;  // ties -> lower index
  }
  // Rounding can make a farther code tie; argmin then takes the lowest index.
  while (best > 0 && std::fabs(s - code[best - 1]) == best_d) --best;
  return best;
}

int nearest_code_any(const float* code, int n, float s) {
  int best = 0;
  float best_d = std::fabs(s - code[0]);
  for (int j = 1; j < n; ++j) {
    const float d = std::fabs(s - code[j]);
    if (d < best_d) best = j, best_d = d;  // NaN never compares less: stays 0
  }
  return best;
}

int64_t num_blocks(int64_t n, int64_t blocksize) { return (n + blocksize - 1) / blocksize; }

void quantize_blockwise_8bit(uint8_t* q, float* absmax, const float* x, int64_t n,
                             const float* code, int64_t blocksize) {
  LLMTUNE_CHECK(blocksize > 0, "quantize_blockwise_8bit: blocksize must be positive, got ",
                blocksize);
  const int64_t nb = num_blocks(n, blocksize);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t begin = b * blocksize, end = std::min(n, begin + blocksize);
    float amax = 0.0f;
    for (int64_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
    absmax[b] = amax;
    const float inv = 1.0f / amax;  // torch: x * (1 / absmax), not x / absmax
    for (int64_t i = begin; i < end; ++i) {
      const float s = std::clamp(round_f32(x[i] * inv), -1.0f,
                                 1.0f);  // NaN (zero block) passes through
      q[i] = uint8_t(nearest_code_sorted(code, 256, s));
    }
  }
}

void dequantize_blockwise_8bit(float* y, const uint8_t* q, const float* absmax, int64_t n,
                               const float* code, int64_t blocksize) {
  LLMTUNE_CHECK(blocksize > 0, "dequantize_blockwise_8bit: blocksize must be positive, got ",
                blocksize);
  const int64_t nb = num_blocks(n, blocksize);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t begin = b * blocksize, end = std::min(n, begin + blocksize);
    const float a = absmax[b];
    for (int64_t i = begin; i < end; ++i) y[i] = code[q[i]] * a;
  }
}

Int8Weight quantize_int8_rowwise(const float* W, int64_t rows, int64_t cols) {
  LLMTUNE_CHECK(rows > 0 && cols > 0, "quantize_int8_rowwise: empty weight [", rows, ", ", cols,
                "]");
  Int8Weight out;
  out.rows = rows;
  out.cols = cols;
  out.w8.assign(size_t(rows * cols), 0);
  out.scb.assign(size_t(rows), 0.0f);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* w = W + r * cols;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(w[c]));
    out.scb[size_t(r)] = amax;
    if (amax == 0.0f) continue;
    const float scale = round_f32(1.0f / amax) * 127.0f;  // torch: 127.0 / t == reciprocal(t) * 127
    int8_t* o = out.w8.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      o[c] = int8_t(std::nearbyint(w[c] * scale));  // round half to even
  }
  return out;
}

namespace {
constexpr float kInv127 =
    float(7.874015718698502e-3);  // the Python double bitsandbytes multiplies by
void check_rows(const Int8Weight& W, int64_t row_begin, int64_t row_end) {
  LLMTUNE_CHECK(W.w8.size() == size_t(W.rows * W.cols) && W.scb.size() == size_t(W.rows),
                "int8 weight: w8 must hold rows*cols bytes and SCB rows floats (rows ", W.rows,
                ", cols ", W.cols, ")");
  LLMTUNE_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= W.rows,
                "int8 weight: row range [", row_begin, ", ", row_end, ") outside [0, ", W.rows,
                ")");
}
}  // namespace

void dequantize_int8_rows(float* out, const Int8Weight& W, int64_t row_begin, int64_t row_end) {
  check_rows(W, row_begin, row_end);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int8_t* q = W.w8.data() + r * W.cols;
    const float s = W.scb[size_t(r)];
    float* o = out + (r - row_begin) * W.cols;
    for (int64_t c = 0; c < W.cols; ++c) o[c] = (float(q[c]) * s) * kInv127;
  }
}

void dequantize_int8_rows_bf16(uint16_t* out, const Int8Weight& W, int64_t row_begin,
                               int64_t row_end) {
  check_rows(W, row_begin, row_end);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int8_t* q = W.w8.data() + r * W.cols;
    const float s = W.scb[size_t(r)];
    uint16_t* o = out + (r - row_begin) * W.cols;
    for (int64_t c = 0; c < W.cols; ++c) o[c] = f32_to_bf16((float(q[c]) * s) * kInv127);
  }
}

}  // namespace llmtune
