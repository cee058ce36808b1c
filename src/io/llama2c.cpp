// llama2.c checkpoint import: header validation, the two fp32 weight orders (legacy v0 / "ak42" v1),
// the q/k rotary row permutation, and the HF Llama folder writer. Formats follow llama2.c's export.py.
#include "io/llama2c.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace llmtune {

namespace {

constexpr uint32_t kMagicAk42 = 0x616b3432;  // "ak42" as a little-endian uint32
constexpr uint64_t kV0HeaderBytes = 7 * 4;
constexpr uint64_t kV1HeaderBytes = 256;

std::string with_commas(unsigned __int128 v) {
  std::string digits;
  do {
    digits.insert(digits.begin(), char('0' + int(v % 10)));
    v /= 10;
  } while (v);
  std::string out;
  for (size_t i = 0; i < digits.size(); i++) {
    if (i && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

// Exact byte count in 128 bits so that a garbage header cannot overflow into a "matching" size.
unsigned __int128 expected_bytes_wide(const Llama2cHeader& h) {
  using U = unsigned __int128;
  const U L = U(h.n_layers), E = U(h.dim), I = U(h.hidden_dim), V = U(h.vocab_size), KV = U(h.kv_dim());
  U floats = V * E                 // token embedding
             + 2 * L * E           // rms_att, rms_ffn
             + 2 * L * E * E       // wq, wo
             + 2 * L * KV * E      // wk, wv
             + 3 * L * I * E       // w1, w2, w3
             + E;                  // rms_final
  if (h.version == 0) floats += U(h.seq_len) * U(h.head_size());  // freq_cis real + imag, [seq_len, head_size/2] each
  if (!h.shared_classifier) floats += V * E;
  return U(h.header_bytes) + 4 * floats;
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

FilePtr open_for_reading(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot open ", path, ": ", std::strerror(errno));
  return FilePtr(f);
}

void read_exact(FILE* f, void* dst, size_t n, const std::string& path) {
  if (n && std::fread(dst, 1, n, f) != n) fail("cannot read ", path, ": unexpected end of file or read error");
}

Llama2cHeader parse_header(const std::string& path, FILE* f, uint64_t file_bytes) {
  Llama2cHeader h;
  if (file_bytes < kV0HeaderBytes)
    fail(path, ": file has ", file_bytes, " bytes, too small for a llama2.c checkpoint header (",
         kV0HeaderBytes, " bytes)");
  int32_t first[2];
  read_exact(f, first, sizeof first, path);
  int32_t fields[7];
  if (uint32_t(first[0]) == kMagicAk42) {
    if (first[1] != 1)
      fail(path, ": llama2.c export version ", first[1],
           first[1] == 2 ? " (int8 Q8_0 quantized)" : "",
           " is not supported; only fp32 exports are (export.py --version 0 or --version 1)");
    if (file_bytes < kV1HeaderBytes)
      fail(path, ": file has ", file_bytes, " bytes, too small for a llama2.c version 1 header (256 bytes)");
    read_exact(f, fields, sizeof fields, path);
    uint8_t shared = 0;
    read_exact(f, &shared, 1, path);
    if (shared > 1) fail(path, ": llama2.c version 1 header has shared_classifier byte ", int(shared), " (must be 0 or 1)");
    h.version = 1;
    h.header_bytes = kV1HeaderBytes;
    h.shared_classifier = shared == 1;
  } else {
    std::memcpy(fields, first, sizeof first);
    read_exact(f, fields + 2, sizeof(int32_t) * 5, path);
    h.version = 0;
    h.header_bytes = kV0HeaderBytes;
    h.shared_classifier = fields[5] > 0;  // legacy format: negative vocab_size ⇒ separate classifier
    if (fields[5] < 0) fields[5] = fields[5] == INT32_MIN ? 0 : -fields[5];
  }
  h.dim = fields[0];
  h.hidden_dim = fields[1];
  h.n_layers = fields[2];
  h.n_heads = fields[3];
  h.n_kv_heads = fields[4];
  h.vocab_size = fields[5];
  h.seq_len = fields[6];

  const char* hint = "; is it a llama2.c checkpoint?";
  const std::pair<const char*, int64_t> named[] = {{"dim", h.dim},         {"hidden_dim", h.hidden_dim},
                                                   {"n_layers", h.n_layers}, {"n_heads", h.n_heads},
                                                   {"n_kv_heads", h.n_kv_heads}, {"vocab_size", h.vocab_size},
                                                   {"seq_len", h.seq_len}};
  for (auto& [name, v] : named)
    if (v <= 0) fail(path, ": header field ", name, " is ", v, " but must be positive (header: ", h.describe(), ")", hint);
  if (h.dim % h.n_heads)
    fail(path, ": header has n_heads ", h.n_heads, " which does not divide dim ", h.dim, hint);
  if (h.n_heads % h.n_kv_heads)
    fail(path, ": header has n_kv_heads ", h.n_kv_heads, " which does not divide n_heads ", h.n_heads, hint);
  if (h.head_size() % 2)
    fail(path, ": head size dim/n_heads = ", h.head_size(), " is odd; rotary embeddings need an even head size", hint);

  const unsigned __int128 need = expected_bytes_wide(h);
  if (need != file_bytes)
    fail(path, ": file has ", with_commas(file_bytes), " bytes but its ", h.version == 1 ? "version 1 " : "",
         "header (", h.describe(), ") needs ", with_commas(need), hint);
  return h;
}

uint64_t file_size_of(const std::string& path) {
  std::error_code ec;
  auto n = std::filesystem::file_size(path, ec);
  if (ec) fail("cannot open ", path, ": ", ec.message());
  return n;
}

Tensor read_tensor(FILE* f, const Shape& shape, const std::string& path) {
  Tensor t = Tensor::zeros(shape);
  read_exact(f, t.data, t.nbytes(), path);
  return t;
}

std::string layer_name(int64_t l, const char* rest) { return cat("model.layers.", l, ".", rest); }

}  // namespace

uint64_t Llama2cHeader::expected_file_bytes() const { return uint64_t(expected_bytes_wide(*this)); }

std::string Llama2cHeader::describe() const {
  return cat("dim ", dim, ", hidden_dim ", hidden_dim, ", layers ", n_layers, ", heads ", n_heads, ", kv_heads ",
             n_kv_heads, ", vocab ", vocab_size, shared_classifier ? " shared" : " unshared", ", seq_len ", seq_len);
}

Llama2cHeader read_llama2c_header(const std::string& path) {
  const uint64_t bytes = file_size_of(path);
  FilePtr f = open_for_reading(path);
  return parse_header(path, f.get(), bytes);
}

Tensor permute_rotary_rows_meta_to_hf(const Tensor& w, int64_t n_heads) {
  LLMTUNE_CHECK(w.dtype == DType::F32 && w.ndim() == 2 && n_heads > 0 && w.dim(0) % (2 * n_heads) == 0,
                "permute_rotary_rows_meta_to_hf: need an f32 [n_heads*head_dim, in] matrix with even head_dim, got ",
                shape_str(w.shape), " for ", n_heads, " heads");
  const int64_t rows = w.dim(0), in = w.dim(1), D = rows / n_heads, half = D / 2;
  Tensor out = Tensor::zeros(w.shape);
  for (int64_t h = 0; h < n_heads; h++)
    for (int64_t t = 0; t < 2; t++)
      for (int64_t i = 0; i < half; i++)
        std::memcpy(out.f32() + (h * D + t * half + i) * in, w.f32() + (h * D + 2 * i + t) * in,
                    size_t(in) * sizeof(float));
  return out;
}

Llama2cCheckpoint read_llama2c(const std::string& path) {
  const uint64_t bytes = file_size_of(path);
  FilePtr fp = open_for_reading(path);
  FILE* f = fp.get();
  Llama2cCheckpoint ck;
  const Llama2cHeader h = ck.header = parse_header(path, f, bytes);
  if (fseeko(f, off_t(h.header_bytes), SEEK_SET) != 0) fail("cannot read ", path, ": seek failed");

  const int64_t L = h.n_layers, E = h.dim, I = h.hidden_dim, V = h.vocab_size, KV = h.kv_dim();
  auto add = [&](std::string name, Tensor t) { ck.tensors.emplace_back(std::move(name), std::move(t)); };
  // One stacked [L, ...] block of the file, split into per-layer HF tensors.
  auto per_layer = [&](const char* hf_name, const Shape& shape, int64_t rotary_heads = 0) {
    for (int64_t l = 0; l < L; l++) {
      Tensor t = read_tensor(f, shape, path);
      add(layer_name(l, hf_name), rotary_heads ? permute_rotary_rows_meta_to_hf(t, rotary_heads) : std::move(t));
    }
  };
  auto embedding = [&] { add("model.embed_tokens.weight", read_tensor(f, {V, E}, path)); };
  auto rms_att = [&] { per_layer("input_layernorm.weight", {E}); };
  auto rms_ffn = [&] { per_layer("post_attention_layernorm.weight", {E}); };
  auto rms_final = [&] { add("model.norm.weight", read_tensor(f, {E}, path)); };
  auto matrices = [&] {
    per_layer("self_attn.q_proj.weight", {E, E}, h.n_heads);
    per_layer("self_attn.k_proj.weight", {KV, E}, h.n_kv_heads);
    per_layer("self_attn.v_proj.weight", {KV, E});
    per_layer("self_attn.o_proj.weight", {E, E});
  };
  auto mlp = [&] {
    per_layer("mlp.gate_proj.weight", {I, E});  // w1
    per_layer("mlp.down_proj.weight", {E, I});  // w2
    per_layer("mlp.up_proj.weight", {I, E});    // w3
  };

  if (h.version == 0) {
    embedding();
    rms_att();
    matrices();
    rms_ffn();
    mlp();
    rms_final();
    // freq_cis_real / freq_cis_imag [seq_len, head_size/2]: llama2.c's precomputed RoPE table; HF recomputes it.
    if (fseeko(f, off_t(h.seq_len * h.head_size() * 4), SEEK_CUR) != 0) fail("cannot read ", path, ": seek failed");
  } else {
    rms_att();
    rms_ffn();
    rms_final();
    embedding();
    matrices();
    mlp();
  }
  if (!h.shared_classifier) add("lm_head.weight", read_tensor(f, {V, E}, path));
  return ck;
}

std::string llama2c_config_json(const Llama2cHeader& h) {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  j["hidden_act"] = "silu";
  j["hidden_size"] = h.dim;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = h.hidden_dim;
  j["max_position_embeddings"] = h.seq_len;
  j["mlp_bias"] = false;
  j["model_type"] = "llama";
  j["num_attention_heads"] = h.n_heads;
  j["num_hidden_layers"] = h.n_layers;
  j["num_key_value_heads"] = h.n_kv_heads;
  j["pretraining_tp"] = 1;
  j["rms_norm_eps"] = 1e-5;  // llama2.c's RMSNorm epsilon
  j["rope_scaling"] = nullptr;
  j["rope_theta"] = 10000.0;
  j["tie_word_embeddings"] = h.shared_classifier;
  j["torch_dtype"] = "float32";
  j["use_cache"] = true;
  j["vocab_size"] = h.vocab_size;
  return j.dump(2) + "\n";
}

namespace {

std::string generation_config_json() {
  nlohmann::ordered_json j;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  return j.dump(2) + "\n";
}

// LlamaTokenizer (slow, SentencePiece) settings: BOS prepended, no EOS, llama2.c's ids 0/1/2.
std::string tokenizer_config_json(const Llama2cHeader& h) {
  nlohmann::ordered_json j;
  j["add_bos_token"] = true;
  j["add_eos_token"] = false;
  j["bos_token"] = "<s>";
  j["clean_up_tokenization_spaces"] = false;
  j["eos_token"] = "</s>";
  j["legacy"] = true;
  j["model_max_length"] = h.seq_len;
  j["pad_token"] = nullptr;
  j["sp_model_kwargs"] = nlohmann::ordered_json::object();
  j["tokenizer_class"] = "LlamaTokenizer";
  j["unk_token"] = "<unk>";
  return j.dump(2) + "\n";
}

std::string special_tokens_map_json() {
  nlohmann::ordered_json j;
  j["bos_token"] = "<s>";
  j["eos_token"] = "</s>";
  j["unk_token"] = "<unk>";
  return j.dump(2) + "\n";
}

}  // namespace

void convert_llama2c_to_hf(const std::string& bin_path, const std::string& tokenizer_model, const std::string& out_dir) {
  Llama2cCheckpoint ck = read_llama2c(bin_path);
  // Read the tokenizer before creating anything so a wrong path fails without touching out_dir.
  std::string tokenizer_bytes;
  if (!tokenizer_model.empty()) tokenizer_bytes = read_file(tokenizer_model);
  write_dir_atomic(out_dir, [&](const std::string& dir) {
    write_file_atomic(dir + "/config.json", llama2c_config_json(ck.header));
    write_file_atomic(dir + "/generation_config.json", generation_config_json());
    write_safetensors(dir + "/model.safetensors", ck.tensors, {{"format", "pt"}});
    if (!tokenizer_model.empty()) {
      write_file_atomic(dir + "/tokenizer.model", tokenizer_bytes);
      write_file_atomic(dir + "/tokenizer_config.json", tokenizer_config_json(ck.header));
      write_file_atomic(dir + "/special_tokens_map.json", special_tokens_map_json());
    }
  });
}

}  // namespace llmtune
