// Rotary position embedding, HF "rotate_half" layout (pairs (i, i + rot/2)), applied in place to the
// first rot_dim dims of every head; the rest of the head passes through (GPT-NeoX rotary_pct < 1).
// cos/sin tables follow HF: inv_freq_i = 1 / base^(2i/rot_dim) in f32, angle = pos · inv_freq_i,
// with optional llama3 / linear rope_scaling. Backward applies the inverse rotation in place.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace llmtune {

struct RopeScaling {
  std::string type;  // "" (none), "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct RopeTable {
  int64_t rot_dim = 0;               // even, <= head_dim
  int64_t max_pos = 0;
  std::vector<float> cos, sin;       // [max_pos, rot_dim/2]
};

// inv_freq_i for i < rot_dim/2, computed in f32 the way HF/torch does, scaling applied.
std::vector<float> rope_inv_freq(int64_t rot_dim, double base, const RopeScaling& scaling);
RopeTable rope_table(int64_t rot_dim, int64_t max_pos, double base, const RopeScaling& scaling);

// x: N tokens, each holding nheads heads of head_dim floats; token t starts at x + t·token_stride,
// head h at + h·head_dim. pos[t] is the token's position (must be < table.max_pos).
void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                  int64_t token_stride, const RopeTable& table);
void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                   int64_t token_stride, const RopeTable& table);

namespace reference {
void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                  int64_t token_stride, const RopeTable& table);
void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                   int64_t token_stride, const RopeTable& table);
}  // namespace reference

}  // namespace llmtune
