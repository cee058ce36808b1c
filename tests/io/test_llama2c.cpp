// llama2.c import: tiny synthetic checkpoints written here (legacy v0 and "ak42" v1, shared and
// unshared classifier), the q/k rotary permutation (index formula and RoPE equivalence), and the
// errors for truncated files and impossible headers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "io_test_util.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

// Model sizes of the synthetic checkpoint: head_size 4, GQA 2 query heads per kv head.
struct Dims {
  int32_t dim = 8, hidden = 12, layers = 2, heads = 2, kv_heads = 1, vocab = 10, seq_len = 4;
  int32_t head_size() const { return dim / heads; }
  int32_t kv_dim() const { return kv_heads * head_size(); }
};

// The llama2.c tensors ("Meta" layout, stacked over layers), each filled with distinct values.
struct MetaWeights {
  std::map<std::string, std::vector<float>> w;
  explicit MetaWeights(const Dims& d, bool shared) {
    const size_t L = size_t(d.layers), E = size_t(d.dim), I = size_t(d.hidden), V = size_t(d.vocab),
                 KV = size_t(d.kv_dim());
    const std::pair<const char*, size_t> sizes[] = {
        {"emb", V * E},     {"rms_att", L * E},   {"wq", L * E * E},  {"wk", L * KV * E}, {"wv", L * KV * E},
        {"wo", L * E * E},  {"rms_ffn", L * E},   {"w1", L * I * E},  {"w2", L * E * I},  {"w3", L * I * E},
        {"rms_final", E},   {"wcls", shared ? 0 : V * E}};
    float base = 0.f;
    for (auto& [name, n] : sizes) {
      auto& v = w[name];
      for (size_t i = 0; i < n; i++) v.push_back(std::sin(base + 0.731f * float(i)) + 0.001f * float(i));
      base += 100.f;
    }
  }
};

void put(std::string& out, const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }
void put_floats(std::string& out, const std::vector<float>& v) { put(out, v.data(), v.size() * sizeof(float)); }

std::string v0_bytes(const Dims& d, const MetaWeights& m, bool shared) {
  std::string out;
  int32_t header[7] = {d.dim, d.hidden, d.layers, d.heads, d.kv_heads, shared ? d.vocab : -d.vocab, d.seq_len};
  put(out, header, sizeof header);
  for (const char* k : {"emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final"})
    put_floats(out, m.w.at(k));
  std::vector<float> freq(size_t(d.seq_len * d.head_size() / 2), 7.f);  // real, imag: ignored by the reader
  put_floats(out, freq);
  put_floats(out, freq);
  if (!shared) put_floats(out, m.w.at("wcls"));
  return out;
}

std::string v1_bytes(const Dims& d, const MetaWeights& m, bool shared) {
  std::string out;
  uint32_t magic = 0x616b3432;
  int32_t version = 1;
  put(out, &magic, 4);
  put(out, &version, 4);
  int32_t header[7] = {d.dim, d.hidden, d.layers, d.heads, d.kv_heads, d.vocab, d.seq_len};
  put(out, header, sizeof header);
  out.push_back(char(shared ? 1 : 0));
  out.resize(256, '\0');
  for (const char* k : {"rms_att", "rms_ffn", "rms_final", "emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3"})
    put_floats(out, m.w.at(k));
  if (!shared) put_floats(out, m.w.at("wcls"));
  return out;
}

std::map<std::string, Tensor> as_map(const Llama2cCheckpoint& ck) {
  std::map<std::string, Tensor> m;
  for (auto& [name, t] : ck.tensors) m[name] = t;
  return m;
}

// Layer l's [rows, cols] slice of a stacked llama2.c tensor, row r, column c.
float meta_at(const std::vector<float>& stacked, int64_t l, int64_t rows, int64_t cols, int64_t r, int64_t c) {
  return stacked[size_t((l * rows + r) * cols + c)];
}

void check_checkpoint(const Llama2cCheckpoint& ck, const Dims& d, const MetaWeights& m, bool shared) {
  auto t = as_map(ck);
  const int64_t E = d.dim, I = d.hidden, KV = d.kv_dim(), D = d.head_size();
  EXPECT_EQ(ck.header.shared_classifier, shared);
  EXPECT_EQ(ck.header.vocab_size, d.vocab);
  EXPECT_EQ(t.size(), size_t(2 + 9 * d.layers + (shared ? 0 : 1)));
  EXPECT_EQ(t.count("lm_head.weight"), shared ? 0u : 1u);
  ASSERT_EQ(t.at("model.embed_tokens.weight").shape, (Shape{d.vocab, E}));
  EXPECT_EQ(0, std::memcmp(t.at("model.embed_tokens.weight").data, m.w.at("emb").data(), size_t(d.vocab * E) * 4));
  EXPECT_EQ(0, std::memcmp(t.at("model.norm.weight").data, m.w.at("rms_final").data(), size_t(E) * 4));
  if (!shared) {
    EXPECT_EQ(0, std::memcmp(t.at("lm_head.weight").data, m.w.at("wcls").data(), size_t(d.vocab * E) * 4));
  }

  for (int64_t l = 0; l < d.layers; l++) {
    auto name = [&](const char* rest) { return "model.layers." + std::to_string(l) + "." + rest; };
    // Unpermuted matrices: element-wise equal to llama2.c's.
    struct Plain { const char* hf; const char* meta; int64_t rows, cols; };
    for (Plain p : {Plain{"self_attn.v_proj.weight", "wv", KV, E}, Plain{"self_attn.o_proj.weight", "wo", E, E},
                    Plain{"mlp.gate_proj.weight", "w1", I, E}, Plain{"mlp.down_proj.weight", "w2", E, I},
                    Plain{"mlp.up_proj.weight", "w3", I, E}, Plain{"input_layernorm.weight", "rms_att", 1, E},
                    Plain{"post_attention_layernorm.weight", "rms_ffn", 1, E}}) {
      const Tensor& x = t.at(name(p.hf));
      ASSERT_EQ(x.numel(), p.rows * p.cols) << p.hf;
      for (int64_t r = 0; r < p.rows; r++)
        for (int64_t c = 0; c < p.cols; c++)
          ASSERT_EQ(x.f32()[r * p.cols + c], meta_at(m.w.at(p.meta), l, p.rows, p.cols, r, c)) << p.hf;
    }
    // q/k: HF row h·D + t·D/2 + i holds Meta row h·D + 2i + t (torch: view(H, D/2, 2, E).transpose(1, 2)).
    struct Rot { const char* hf; const char* meta; int64_t heads; };
    for (Rot p : {Rot{"self_attn.q_proj.weight", "wq", d.heads}, Rot{"self_attn.k_proj.weight", "wk", d.kv_heads}}) {
      const Tensor& x = t.at(name(p.hf));
      ASSERT_EQ(x.shape, (Shape{p.heads * D, E})) << p.hf;
      for (int64_t h = 0; h < p.heads; h++)
        for (int64_t i = 0; i < D / 2; i++)
          for (int64_t tt = 0; tt < 2; tt++)
            for (int64_t c = 0; c < E; c++)
              ASSERT_EQ(x.f32()[(h * D + tt * (D / 2) + i) * E + c],
                        meta_at(m.w.at(p.meta), l, p.heads * D, E, h * D + 2 * i + tt, c))
                  << p.hf << " head " << h << " i " << i << " t " << tt;
    }
  }
}

}  // namespace

TEST(Llama2c, ReadsLegacySharedClassifier) {
  TempDir tmp;
  Dims d;
  MetaWeights m(d, true);
  write_file_atomic(tmp.file("m.bin"), v0_bytes(d, m, true));
  Llama2cCheckpoint ck = read_llama2c(tmp.file("m.bin"));
  EXPECT_EQ(ck.header.version, 0);
  check_checkpoint(ck, d, m, true);
}

TEST(Llama2c, ReadsLegacyUnsharedClassifier) {
  TempDir tmp;
  Dims d;
  MetaWeights m(d, false);
  write_file_atomic(tmp.file("m.bin"), v0_bytes(d, m, false));
  check_checkpoint(read_llama2c(tmp.file("m.bin")), d, m, false);
}

TEST(Llama2c, ReadsVersion1BothClassifiers) {
  TempDir tmp;
  Dims d;
  for (bool shared : {true, false}) {
    MetaWeights m(d, shared);
    write_file_atomic(tmp.file("m.bin"), v1_bytes(d, m, shared));
    Llama2cCheckpoint ck = read_llama2c(tmp.file("m.bin"));
    EXPECT_EQ(ck.header.version, 1);
    check_checkpoint(ck, d, m, shared);
  }
}

// The point of the permutation: Meta's interleaved RoPE on the Meta projection equals HF's
// rotate-half RoPE on the permuted projection, up to the same row permutation — so q·k scores agree.
TEST(Llama2c, PermutationTurnsInterleavedRopeIntoRotateHalf) {
  const int64_t H = 3, D = 8, E = 5;
  Tensor w = Tensor::zeros({H * D, E});
  for (int64_t i = 0; i < w.numel(); i++) w.f32()[i] = std::cos(0.37f * float(i)) * 0.5f;
  Tensor hf = permute_rotary_rows_meta_to_hf(w, H);
  std::vector<double> x(static_cast<size_t>(E));
  for (int64_t c = 0; c < E; c++) x[size_t(c)] = 0.3 * double(c) - 0.7;
  auto project = [&](const Tensor& m) {
    std::vector<double> y(size_t(H * D), 0.0);
    for (int64_t r = 0; r < H * D; r++)
      for (int64_t c = 0; c < E; c++) y[size_t(r)] += double(m.f32()[r * E + c]) * x[size_t(c)];
    return y;
  };
  std::vector<double> qm = project(w), qh = project(hf);
  for (int pos : {0, 1, 5}) {
    std::vector<double> rm = qm, rh = qh;
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < D / 2; i++) {
        double theta = pos * std::pow(10000.0, -2.0 * double(i) / double(D)), c = std::cos(theta), s = std::sin(theta);
        // llama2.c / Meta: pairs (2i, 2i+1)
        double a = qm[size_t(h * D + 2 * i)], b = qm[size_t(h * D + 2 * i + 1)];
        rm[size_t(h * D + 2 * i)] = a * c - b * s;
        rm[size_t(h * D + 2 * i + 1)] = a * s + b * c;
        // HF rotate_half: pairs (i, i + D/2)
        double u = qh[size_t(h * D + i)], v = qh[size_t(h * D + i + D / 2)];
        rh[size_t(h * D + i)] = u * c - v * s;
        rh[size_t(h * D + i + D / 2)] = v * c + u * s;
      }
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < D / 2; i++)
        for (int64_t t = 0; t < 2; t++)
          EXPECT_NEAR(rh[size_t(h * D + t * D / 2 + i)], rm[size_t(h * D + 2 * i + t)], 1e-12) << "pos " << pos;
  }
}

TEST(Llama2c, TruncatedFileNamesBothSizes) {
  TempDir tmp;
  Dims d;
  MetaWeights m(d, true);
  std::string bytes = v0_bytes(d, m, true);
  const size_t full = bytes.size();
  ASSERT_EQ(full, 4412u);  // 28-byte header + 1,096 floats
  bytes.resize(full - 4);
  write_file_atomic(tmp.file("stories.bin"), bytes);
  std::string e = error_of([&] { read_llama2c(tmp.file("stories.bin")); });
  EXPECT_NE(e.find("stories.bin: file has 4,408 bytes but its header (dim 8, hidden_dim 12, "
                   "layers 2, heads 2, kv_heads 1, vocab 10 shared, seq_len 4) needs 4,412;"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("is it a llama2.c checkpoint?"), std::string::npos) << e;
  // A file that is too long is just as wrong (e.g. a different format with a plausible prefix).
  bytes.resize(full + 8, '\0');
  write_file_atomic(tmp.file("stories.bin"), bytes);
  EXPECT_NE(error_of([&] { read_llama2c(tmp.file("stories.bin")); }).find("file has 4,420 bytes but its header (dim 8"),
            std::string::npos);
}

TEST(Llama2c, CommasInLargeSizes) {
  TempDir tmp;
  int32_t header[7] = {64, 172, 5, 8, 4, 512, 512};  // stories260K's header
  std::string bytes(1000, '\0');
  std::memcpy(bytes.data(), header, sizeof header);
  write_file_atomic(tmp.file("stories.bin"), bytes);
  EXPECT_NE(error_of([&] { read_llama2c_header(tmp.file("stories.bin")); })
                .find("stories.bin: file has 1,000 bytes but its header (dim 64, hidden_dim 172, layers 5, heads 8, "
                      "kv_heads 4, vocab 512 shared, seq_len 512) needs 1,056,540;"),
            std::string::npos);
}

TEST(Llama2c, BadHeaders) {
  TempDir tmp;
  auto err_for = [&](std::vector<int32_t> h, size_t pad = 4096) {
    std::string bytes(reinterpret_cast<const char*>(h.data()), h.size() * 4);
    bytes.resize(bytes.size() + pad, '\0');
    write_file_atomic(tmp.file("bad.bin"), bytes);
    return error_of([&] { read_llama2c(tmp.file("bad.bin")); });
  };
  EXPECT_NE(err_for({8, 12, 0, 2, 1, 10, 4}).find("bad.bin: header field n_layers is 0 but must be positive"),
            std::string::npos);
  EXPECT_NE(err_for({8, 12, 2, 3, 1, 10, 4}).find("n_heads 3 which does not divide dim 8"), std::string::npos);
  EXPECT_NE(err_for({8, 12, 2, 2, 3, 10, 4}).find("n_kv_heads 3 which does not divide n_heads 2"), std::string::npos);
  EXPECT_NE(err_for({6, 12, 2, 2, 1, 10, 4}).find("head size dim/n_heads = 3 is odd"), std::string::npos);
  // Huge garbage values must not overflow into a "matching" size.
  EXPECT_NE(err_for({1 << 30, 1 << 30, 1 << 30, 2, 1, 1 << 30, 4}).find("needs "), std::string::npos);
  EXPECT_NE(err_for({8, 12}, 0).find("too small for a llama2.c checkpoint header"), std::string::npos);
  // "ak42" version 2 (int8) is recognised and refused by name.
  EXPECT_NE(err_for({0x616b3432, 2, 8, 12, 2, 2, 1, 10, 4}).find("version 2 (int8 Q8_0 quantized) is not supported"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_llama2c(tmp.file("missing.bin")); }).find("cannot open"), std::string::npos);
}

TEST(Llama2c, ConvertWritesHfFolder) {
  TempDir tmp;
  Dims d;
  MetaWeights m(d, false);
  write_file_atomic(tmp.file("m.bin"), v0_bytes(d, m, false));
  write_file_atomic(tmp.file("tok.model"), std::string("not really sentencepiece\0bytes", 30));
  const std::string out = tmp.file("hf");
  convert_llama2c_to_hf(tmp.file("m.bin"), tmp.file("tok.model"), out);

  nlohmann::json cfg = nlohmann::json::parse(read_file(out + "/config.json"));
  EXPECT_EQ(cfg["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["hidden_size"], 8);
  EXPECT_EQ(cfg["intermediate_size"], 12);
  EXPECT_EQ(cfg["num_hidden_layers"], 2);
  EXPECT_EQ(cfg["num_attention_heads"], 2);
  EXPECT_EQ(cfg["num_key_value_heads"], 1);
  EXPECT_EQ(cfg["vocab_size"], 10);
  EXPECT_EQ(cfg["max_position_embeddings"], 4);
  EXPECT_EQ(cfg["tie_word_embeddings"], false);
  EXPECT_EQ(cfg["hidden_act"], "silu");
  EXPECT_DOUBLE_EQ(cfg["rms_norm_eps"].get<double>(), 1e-5);
  EXPECT_DOUBLE_EQ(cfg["rope_theta"].get<double>(), 10000.0);
  EXPECT_EQ(cfg["bos_token_id"], 1);
  EXPECT_EQ(cfg["eos_token_id"], 2);
  EXPECT_EQ(cfg["torch_dtype"], "float32");

  EXPECT_EQ(read_file(out + "/tokenizer.model"), read_file(tmp.file("tok.model")));
  nlohmann::json tc = nlohmann::json::parse(read_file(out + "/tokenizer_config.json"));
  EXPECT_EQ(tc["add_bos_token"], true);
  EXPECT_EQ(tc["add_eos_token"], false);
  EXPECT_EQ(tc["bos_token"], "<s>");
  EXPECT_EQ(tc["eos_token"], "</s>");
  EXPECT_EQ(tc["unk_token"], "<unk>");
  EXPECT_EQ(tc["tokenizer_class"], "LlamaTokenizer");
  EXPECT_EQ(tc["model_max_length"], 4);
  nlohmann::json st = nlohmann::json::parse(read_file(out + "/special_tokens_map.json"));
  EXPECT_EQ(st["bos_token"], "<s>");
  nlohmann::json gc = nlohmann::json::parse(read_file(out + "/generation_config.json"));
  EXPECT_EQ(gc["eos_token_id"], 2);

  SafetensorsFile f = open_safetensors(out + "/model.safetensors");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  EXPECT_EQ(f.tensors.size(), size_t(2 + 9 * d.layers + 1));
  Llama2cCheckpoint ck = read_llama2c(tmp.file("m.bin"));
  for (auto& [name, t] : ck.tensors) {
    Tensor s = f.get(name);
    ASSERT_EQ(s.shape, t.shape) << name;
    EXPECT_EQ(0, std::memcmp(s.data, t.data, t.nbytes())) << name;
  }

  // Without a tokenizer: model files only. A failing conversion leaves an existing folder alone.
  convert_llama2c_to_hf(tmp.file("m.bin"), "", out);
  EXPECT_FALSE(std::filesystem::exists(out + "/tokenizer.model"));
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors"));
  EXPECT_NE(error_of([&] { convert_llama2c_to_hf(tmp.file("m.bin"), tmp.file("nope.model"), out); }).find("nope.model"),
            std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(out + "/config.json"));
}
