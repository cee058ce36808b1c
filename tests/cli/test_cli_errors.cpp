// Runs the built `llmtune` binary on broken model folders and bad command lines (each must end in ONE
// "error: " line naming the file and the problem, exit code 1, no crash), and checks the good paths
// (tokenize, generate --json, eval, info) against the same computation done in-process.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "kernels/linear.h"
#include "model/decoder.h"
#include "model/generate.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace llmtune;
using nlohmann::json;

namespace {

const std::string kGolden = std::string(LLMTUNE_TEST_DATA) + "/golden/";

using llmtune::cli_test::CliRun;
using llmtune::cli_test::put;
using llmtune::cli_test::run_llmtune;
using llmtune::cli_test::slurp;

// This file's scratch folders.
struct Scratch : llmtune::cli_test::Scratch {
  Scratch() : llmtune::cli_test::Scratch("llmtune_cli_") {}
};

// Byte-level BPE tokenizer.json with `vocab_size` entries: <|endoftext|> (0), the printable ASCII
// bytes '!'..'~' (1..94), 'Ġ' (space, 95), then merges while ids stay below vocab_size.
std::string tiny_tokenizer_json(int64_t vocab_size) {
  json vocab = json::object();
  vocab["<|endoftext|>"] = 0;
  int id = 1;
  for (char c = '!'; c <= '~'; c++) vocab[std::string(1, c)] = id++;
  vocab["\xC4\xA0"] = id++;  // Ġ
  const std::vector<std::pair<std::string, std::string>> merge_list = {
      {"\xC4\xA0", "t"}, {"h", "e"}, {"\xC4\xA0t", "he"}, {"i", "n"}, {"e", "r"}, {"a", "n"}, {"\xC4\xA0", "a"},
      {"o", "n"},        {"r", "e"}, {"\xC4\xA0", "s"},   {"e", "n"}, {"a", "t"}, {"o", "u"}, {"\xC4\xA0", "w"}};
  json merges = json::array();
  for (auto& [a, b] : merge_list) {
    if (id >= vocab_size) break;
    vocab[a + b] = id++;
    merges.push_back(a + " " + b);
  }
  json t = {
      {"version", "1.0"},
      {"added_tokens", json::array({{{"id", 0},
                                     {"content", "<|endoftext|>"},
                                     {"single_word", false},
                                     {"lstrip", false},
                                     {"rstrip", false},
                                     {"normalized", false},
                                     {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
        {"vocab", vocab}, {"merges", merges}}}};
  return t.dump(1);
}

// A usable model folder in `dir` made from golden case `name`: its config.json and weights plus the
// tiny tokenizer sized to the model's vocabulary.
fs::path make_model_dir(const fs::path& dir, const std::string& name) {
  fs::create_directories(dir);
  fs::copy_file(kGolden + name + "/config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(kGolden + name + "/model.safetensors", dir / "model.safetensors",
                fs::copy_options::overwrite_existing);
  json cfg = json::parse(slurp(dir / "config.json"));
  put(dir / "tokenizer.json", tiny_tokenizer_json(std::min<int64_t>(cfg["vocab_size"].get<int64_t>(), 128)));
  return dir;
}

// Tiny models: one thread is fastest, and OpenMP spinning on a busy shared machine is very slow.
struct OneThread {
  int before = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(before); }
};

CliRun generate_on(const fs::path& model, const fs::path& scratch, const std::string& prompt = "hello there") {
  return run_llmtune(
      {"generate", "--model", model.string(), "--prompt", prompt, "--max_new_tokens", "3", "--num_threads", "1"}, scratch);
}

// safetensors helpers: split a file into (header JSON, data section) and join them back.
std::pair<json, std::string> split_safetensors(const std::string& bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  return {json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}
std::string join_safetensors(const json& header, const std::string& data) {
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[size_t(i)] = char((uint64_t(h.size()) >> (8 * i)) & 0xFF);
  return out + h + data;
}

}  // namespace

// ---------------------------------------------------------------- bad weights

TEST(CliErrors, TruncatedSafetensors) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  std::string bytes = slurp(d / "model.safetensors");
  // Cut inside the data section, then inside the header.
  put(d / "model.safetensors", bytes.substr(0, bytes.size() / 2));
  expect_one_error_line(generate_on(d, tmp.path), {(d / "model.safetensors").string(), "beyond the end"});
  put(d / "model.safetensors", bytes.substr(0, 100));
  expect_one_error_line(generate_on(d, tmp.path), {(d / "model.safetensors").string(), "truncated"});
  put(d / "model.safetensors", bytes.substr(0, 5));
  expect_one_error_line(generate_on(d, tmp.path), {(d / "model.safetensors").string(), "truncated"});
}

TEST(CliErrors, CorruptSafetensorsHeader) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  std::string bytes = slurp(d / "model.safetensors");
  ASSERT_EQ(bytes[8], '{');
  bytes[8] = 'X';  // same length, no longer JSON
  put(d / "model.safetensors", bytes);
  expect_one_error_line(generate_on(d, tmp.path), {(d / "model.safetensors").string(), "header"});
}

TEST(CliErrors, DataOffsetsOutOfRange) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  auto [header, data] = split_safetensors(slurp(d / "model.safetensors"));
  const std::string victim = "gpt_neox.final_layer_norm.weight";
  ASSERT_TRUE(header.contains(victim));
  header[victim]["data_offsets"][1] = data.size() + 4096;
  put(d / "model.safetensors", join_safetensors(header, data));
  expect_one_error_line(generate_on(d, tmp.path), {(d / "model.safetensors").string(), victim, "data_offsets"});
}

TEST(CliErrors, MissingTensor) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  const std::string victim = "gpt_neox.layers.1.mlp.dense_4h_to_h.weight";
  {
    SafetensorsFile f = open_safetensors(kGolden + "neox_parallel/model.safetensors");
    std::vector<std::pair<std::string, Tensor>> kept;
    for (auto& name : f.names())
      if (name != victim) kept.push_back({name, f.get(name).clone()});
    ASSERT_EQ(kept.size() + 1, f.names().size());
    write_safetensors((d / "model.safetensors").string(), kept);
  }
  expect_one_error_line(generate_on(d, tmp.path), {d.string(), victim, "missing"});
}

TEST(CliErrors, WrongTensorShape) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "llama_gqa_untied");
  const std::string victim = "model.layers.0.self_attn.k_proj.weight";
  {
    SafetensorsFile f = open_safetensors(kGolden + "llama_gqa_untied/model.safetensors");
    std::vector<std::pair<std::string, Tensor>> kept;
    for (auto& name : f.names()) {
      Tensor t = f.get(name).clone();
      if (name == victim) t = Tensor::zeros({t.shape[0] + 8, t.shape[1]}, t.dtype);  // one extra kv head
      kept.push_back({name, t});
    }
    write_safetensors((d / "model.safetensors").string(), kept);
  }
  expect_one_error_line(generate_on(d, tmp.path), {d.string(), victim, "shape"});
}

TEST(CliErrors, NoWeightsAtAll) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "gpt2");
  fs::remove(d / "model.safetensors");
  expect_one_error_line(generate_on(d, tmp.path), {d.string(), "model.safetensors"});
}

// ---------------------------------------------------------------- bad config.json / tokenizer.json

TEST(CliErrors, ConfigMissingField) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  json cfg = json::parse(slurp(d / "config.json"));
  cfg.erase("hidden_size");
  put(d / "config.json", cfg.dump(2));
  for (const char* cmd : {"generate", "info"}) {
    SCOPED_TRACE(cmd);
    CliRun r = std::string(cmd) == "info" ? run_llmtune({"info", "--model", d.string()}, tmp.path)
                                          : generate_on(d, tmp.path);
    expect_one_error_line(r, {(d / "config.json").string(), "hidden_size", "missing"});
  }
}

TEST(CliErrors, ConfigNotJson) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "qwen2_bias");
  put(d / "config.json", "{\"model_type\": \"qwen2\", \"hidden_size\": 64,,\n");
  expect_one_error_line(generate_on(d, tmp.path), {(d / "config.json").string(), "JSON"});
  put(d / "config.json", "");
  expect_one_error_line(run_llmtune({"info", "--model", d.string()}, tmp.path), {(d / "config.json").string(), "JSON"});
}

TEST(CliErrors, UnsupportedModelType) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  json cfg = json::parse(slurp(d / "config.json"));
  cfg["model_type"] = "mamba";
  cfg["architectures"] = {"MambaForCausalLM"};
  put(d / "config.json", cfg.dump(2));
  CliRun r = generate_on(d, tmp.path);
  expect_one_error_line(r, {(d / "config.json").string(), "mamba", "not supported", "gpt_neox", "llama", "qwen2", "gpt2"});
}

TEST(CliErrors, MalformedTokenizerJson) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  std::string good = slurp(d / "tokenizer.json");
  put(d / "tokenizer.json", good.substr(0, good.size() / 2));  // cut mid-way: not JSON
  expect_one_error_line(generate_on(d, tmp.path), {(d / "tokenizer.json").string(), "JSON"});
  expect_one_error_line(run_llmtune({"tokenize", "--model", d.string(), "--text", "hi"}, tmp.path),
                     {(d / "tokenizer.json").string(), "JSON"});
  json t = json::parse(good);
  t["model"]["merges"].push_back("notatoken alsonot");  // valid JSON, invalid content
  put(d / "tokenizer.json", t.dump());
  expect_one_error_line(generate_on(d, tmp.path), {(d / "tokenizer.json").string(), "merges"});
}

// ---------------------------------------------------------------- bad use

TEST(CliErrors, PromptLongerThanContext) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "gpt2");  // 96-token vocab: one token per character
  std::string prompt(100, 'a');
  for (size_t i = 0; i < prompt.size(); i++) prompt[i] = char('a' + i % 26);
  expect_one_error_line(generate_on(d, tmp.path, prompt), {"prompt", "100 tokens", "context is 64"});
}

TEST(CliErrors, UnknownOptionSuggestsNearest) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "gpt2");
  CliRun r = run_llmtune({"generate", "--model", d.string(), "--prompt", "hi", "--max_new_token", "3"}, tmp.path);
  expect_one_error_line(r, {"max_new_token", "did you mean", "max_new_tokens"});
}

TEST(CliErrors, UnknownCommandSuggestsNearest) {
  REQUIRE_BINARY();
  Scratch tmp;
  expect_one_error_line(run_llmtune({"generat", "--model", "x"}, tmp.path), {"unknown command 'generat'", "generate"});
  expect_one_error_line(run_llmtune({"fly"}, tmp.path), {"unknown command 'fly'", "--help"});
}

TEST(CliErrors, MissingModelFolder) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = tmp.path / "does_not_exist";
  expect_one_error_line(generate_on(d, tmp.path), {d.string()});
  expect_one_error_line(run_llmtune({"info", "--model", d.string()}, tmp.path), {d.string()});
}

// ---------------------------------------------------------------- good paths vs in-process

TEST(CliOutputs, TokenizeMatchesEncodeAndDecodeRoundTrips) {
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "neox_parallel");
  Tokenizer tok = Tokenizer::load(d.string());
  const std::string text = "the weather in Tn is hot;  rain=0, wind=7!";
  CliRun r = run_llmtune({"tokenize", "--model", d.string(), "--text", text}, tmp.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<int32_t> ids = json::parse(r.out).get<std::vector<int32_t>>();
  EXPECT_EQ(ids, tok.encode(text, false));
  EXPECT_LT(ids.size(), text.size()) << "the merges should have joined some pairs";

  CliRun back = run_llmtune({"tokenize", "--model", d.string(), "--decode", "--text", json(ids).dump()}, tmp.path);
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(back.out, text + "\n");

  // --file gives the same ids as --text.
  put(tmp.path / "in.txt", text);
  CliRun f = run_llmtune({"tokenize", "--model", d.string(), "--file", (tmp.path / "in.txt").string()}, tmp.path);
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(f.out, r.out);

  expect_one_error_line(run_llmtune({"tokenize", "--model", d.string(), "--decode", "--text", "[1, 9999]"}, tmp.path),
                     {"9999", "vocabulary"});
}

TEST(CliOutputs, GenerateJsonEqualsInProcessGreedy) {
  OneThread one_thread;
  REQUIRE_BINARY();
  Scratch tmp;
  for (const char* name : {"neox_parallel", "llama_gqa_untied"}) {
    SCOPED_TRACE(name);
    fs::path d = make_model_dir(tmp.path / name, name);
    const std::string prompt = "the rain in spain";
    CliRun r = run_llmtune({"generate", "--model", d.string(), "--prompt", prompt, "--max_new_tokens", "12", "--json",
                            "--num_threads", "1"},
                           tmp.path);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out);
    ASSERT_TRUE(j.contains("ids") && j.contains("text")) << r.out;

    Model m = load_model(d.string());
    Tokenizer tok = Tokenizer::load(d.string());
    GenerateOptions g;
    g.max_new_tokens = 12;
    g.eos_ids = m.cfg.eos_token_ids;
    if (tok.eos_id() >= 0) g.eos_ids.push_back(tok.eos_id());
    std::vector<int32_t> expect = generate(m, {tok.encode(prompt, true)}, g)[0];
    EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), expect);
    EXPECT_EQ(j["text"].get<std::string>(), tok.decode(expect, true));

    // Streaming mode prints the same text (plus a newline).
    CliRun s = run_llmtune(
        {"generate", "--model", d.string(), "--prompt", prompt, "--max_new_tokens", "12", "--num_threads", "1"}, tmp.path);
    ASSERT_EQ(s.exit_code, 0) << s.err;
    EXPECT_EQ(s.out, tok.decode(expect, true) + "\n");
  }
}

TEST(CliOutputs, EvalLossEqualsInProcessCrossEntropy) {
  OneThread one_thread;
  REQUIRE_BINARY();
  Scratch tmp;
  fs::path d = make_model_dir(tmp.path / "m", "llama_tied_llama3rope");
  const std::vector<std::string> texts = {"the cat sat on the mat", "a", "what is the weather in tn? hot.",
                                          "one two three"};
  std::string jsonl;
  for (auto& t : texts) jsonl += json({{"text", t}}).dump() + "\n";
  put(tmp.path / "data.jsonl", jsonl);
  CliRun r = run_llmtune({"eval", "--model", d.string(), "--data", (tmp.path / "data.jsonl").string(), "--batch_size",
                          "3", "--num_threads", "1"},
                         tmp.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_TRUE(j.contains("eval_loss") && j.contains("perplexity") && j.contains("tokens")) << r.out;

  // Reference: each text alone, full logits, log-softmax in double.
  Model m = load_model(d.string());
  Tokenizer tok = Tokenizer::load(d.string());
  const int64_t V = m.cfg.vocab_size, E = m.cfg.hidden_size;
  double nll = 0;
  int64_t count = 0;
  for (auto& t : texts) {
    std::vector<int32_t> ids = tok.encode(t, true);
    if (ids.size() < 2) continue;
    const int64_t T = int64_t(ids.size());
    Workspace ws;
    DecoderInput in;
    in.B = 1;
    in.T = T;
    in.ids = ids.data();
    decoder_forward(m, ws, in);
    std::vector<float> logits(size_t(T * V));
    linear_forward(logits.data(), ws.h_final.f32(), m.lm_head.view(), nullptr, T, E, V);
    for (int64_t p = 0; p + 1 < T; p++) {
      const float* row = logits.data() + p * V;
      double mx = *std::max_element(row, row + V), s = 0;
      for (int64_t v = 0; v < V; v++) s += std::exp(double(row[v]) - mx);
      nll += mx + std::log(s) - double(row[ids[size_t(p + 1)]]);
      count++;
    }
  }
  EXPECT_EQ(j["tokens"].get<int64_t>(), count);
  const double loss = nll / double(count);
  EXPECT_NEAR(j["eval_loss"].get<double>(), loss, 1e-5 * loss);
  EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(loss), 1e-5 * std::exp(loss));
}

TEST(CliOutputs, InfoParameterCountEqualsModel) {
  REQUIRE_BINARY();
  Scratch tmp;
  for (const char* name : {"neox_parallel", "llama_tied_llama3rope", "gpt2"}) {
    SCOPED_TRACE(name);
    CliRun r = run_llmtune({"info", "--model", kGolden + name}, tmp.path);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string line;
    std::istringstream is(r.out);
    std::string count;
    while (std::getline(is, line))
      if (line.rfind("parameters:", 0) == 0) count = line.substr(line.find_first_not_of(' ', 11));
    ASSERT_FALSE(count.empty()) << r.out;
    count.erase(std::remove(count.begin(), count.end(), ','), count.end());
    Model m = load_model(kGolden + name);
    EXPECT_EQ(std::stoll(count), m.num_params());
  }
}
