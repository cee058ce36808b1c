// HF model folders: single file, sharded index, and the errors a user meets (missing files,
// missing tensors, wrong shapes).
#include <gtest/gtest.h>

#include <filesystem>

#include "io/atomic_file.h"
#include "io/hf_checkpoint.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io_test_util.h"

using namespace llmtune;
using llmtune::testing::error_of;
using llmtune::testing::TempDir;

namespace {

Tensor filled(const Shape& shape, float start) {
  Tensor t = Tensor::zeros(shape, DType::F32);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = start + float(i);
  return t;
}

Tensor filled_bf16(const Shape& shape, float start) {
  Tensor t = Tensor::zeros(shape, DType::BF16);
  for (int64_t i = 0; i < t.numel(); i++) t.as<uint16_t>()[i] = f32_to_bf16(start + float(i));
  return t;
}

// Two shards + index, the way transformers' save_pretrained(max_shard_size=...) lays them out.
void write_sharded(const TempDir& dir, bool index_mentions_missing_tensor = false) {
  write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                    {{"gpt_neox.embed_in.weight", filled({4, 2}, 0)}, {"gpt_neox.layers.0.w", filled({2, 2}, 100)}},
                    {{"format", "pt"}});
  write_safetensors(
      dir.file("model-00002-of-00002.safetensors"),
      {{"gpt_neox.final_layer_norm.weight", filled_bf16({2}, 7)}, {"embed_out.weight", filled({4, 2}, 50)}},
      {{"format", "pt"}});
  nlohmann::json index = {{"metadata", {{"total_size", 32 + 16 + 4 + 32}}},
                          {"weight_map",
                           {{"gpt_neox.embed_in.weight", "model-00001-of-00002.safetensors"},
                            {"gpt_neox.layers.0.w", "model-00001-of-00002.safetensors"},
                            {"gpt_neox.final_layer_norm.weight", "model-00002-of-00002.safetensors"},
                            {"embed_out.weight", "model-00002-of-00002.safetensors"}}}};
  if (index_mentions_missing_tensor) index["weight_map"]["gpt_neox.layers.1.w"] = "model-00002-of-00002.safetensors";
  write_json_file(dir.file("model.safetensors.index.json"), index);
}

}  // namespace

TEST(HfCheckpoint, SingleFile) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {{"a", filled({2, 3}, 1)}, {"b", filled_bf16({3}, 2)}});
  CheckpointFiles ck = open_checkpoint(dir.path);
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(ck.has("a"));
  EXPECT_FALSE(ck.has("c"));
  EXPECT_EQ(ck.get("a").f32()[5], 6.0f);
  EXPECT_EQ(ck.get("b").dtype, DType::BF16);
  EXPECT_EQ(ck.get_f32("b").f32()[2], 4.0f);
  EXPECT_EQ(ck.info("b").shape, Shape{3});
  ck.require("a", {2, 3}, "the GPT-NeoX model");  // no throw
  EXPECT_TRUE(ck.index_metadata.is_null());
}

TEST(HfCheckpoint, ShardedRoundTrip) {
  TempDir dir;
  write_sharded(dir);
  CheckpointFiles ck = open_checkpoint(dir.path);
  EXPECT_EQ(ck.shards.size(), 2u);  // each shard opened once
  EXPECT_EQ(ck.names().size(), 4u);
  EXPECT_EQ(ck.get("gpt_neox.layers.0.w").f32()[3], 103.0f);
  EXPECT_EQ(ck.get("embed_out.weight").f32()[7], 57.0f);
  EXPECT_EQ(ck.get_f32("gpt_neox.final_layer_norm.weight").f32()[1], 8.0f);
  EXPECT_EQ(ck.index_metadata["total_size"], 84);
  ck.require("embed_out.weight", {4, 2});
}

TEST(HfCheckpoint, ShardMissingATensorOfTheWeightMap) {
  TempDir dir;
  write_sharded(dir, /*index_mentions_missing_tensor=*/true);
  std::string e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("model.safetensors.index.json: weight_map says tensor 'gpt_neox.layers.1.w' is in "
                   "model-00002-of-00002.safetensors, but that file has no such tensor"),
            std::string::npos)
      << e;
}

TEST(HfCheckpoint, MissingShardFileAndBadIndex) {
  TempDir dir;
  write_sharded(dir);
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  std::string e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("shard 'model-00002-of-00002.safetensors'"), std::string::npos) << e;
  EXPECT_NE(e.find("does not exist"), std::string::npos) << e;

  write_json_file(dir.file("model.safetensors.index.json"), {{"weight_map", {{"a", "../../etc/passwd"}}}});
  e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("outside the model folder"), std::string::npos) << e;

  write_json_file(dir.file("model.safetensors.index.json"), {{"metadata", {}}});
  e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("field 'weight_map' is missing"), std::string::npos) << e;

  write_file_atomic(dir.file("model.safetensors.index.json"), "{\"weight_map\": {");
  e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("model.safetensors.index.json: invalid JSON at line 1"), std::string::npos) << e;
}

TEST(HfCheckpoint, SingleFileIsPreferredOverIndex) {
  TempDir dir;
  write_sharded(dir);
  write_safetensors(dir.file("model.safetensors"), {{"only", filled({1}, 5)}});
  CheckpointFiles ck = open_checkpoint(dir.path);
  EXPECT_EQ(ck.names(), std::vector<std::string>{"only"});
}

TEST(HfCheckpoint, RequireMissingTensor) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {{"gpt_neox.embed_in.weight", filled({4, 2}, 0)}});
  CheckpointFiles ck = open_checkpoint(dir.path);
  std::string e = error_of([&] {
    ck.require("gpt_neox.layers.0.attention.dense.weight", {2, 2}, "the GPT-NeoX model");
  });
  EXPECT_NE(e.find(dir.path + ": tensor 'gpt_neox.layers.0.attention.dense.weight' is missing (needed by the GPT-NeoX "
                              "model); the checkpoint has 1 tensors, e.g. 'gpt_neox.embed_in.weight'"),
            std::string::npos)
      << e;
  // A prefix mismatch is pointed out.
  e = error_of([&] { ck.require("embed_in.weight", {4, 2}, "the GPT-NeoX model"); });
  EXPECT_NE(e.find("the checkpoint has 'gpt_neox.embed_in.weight' (a different name prefix"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { ck.get("nope"); }).find("tensor 'nope' is missing"), std::string::npos);
}

TEST(HfCheckpoint, RequireWrongShape) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {{"w", filled({2, 3}, 0)}});
  CheckpointFiles ck = open_checkpoint(dir.path);
  std::string e = error_of([&] { ck.require("w", {3, 2}); });
  EXPECT_NE(e.find(dir.path + ": tensor 'w' has shape [2, 3] but the config implies [3, 2]"), std::string::npos) << e;
}

TEST(HfCheckpoint, MissingFolderOrWeights) {
  TempDir dir;
  std::string e = error_of([&] { open_checkpoint(dir.file("nope")); });
  EXPECT_NE(e.find("nope: no such model folder"), std::string::npos) << e;

  e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("no model weights found: looked for model.safetensors and model.safetensors.index.json"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("pytorch_model.bin is not supported"), std::string::npos) << e;

  write_file_atomic(dir.file("pytorch_model.bin"), "PK");
  e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("found pytorch_model.bin, but PyTorch pickle checkpoints are not supported"), std::string::npos)
      << e;
  EXPECT_NE(e.find("safe_serialization=True"), std::string::npos) << e;

  write_file_atomic(dir.file("model.safetensors"), "garbage!");  // a corrupt weights file is reported as such
  e = error_of([&] { open_checkpoint(dir.path); });
  EXPECT_NE(e.find("model.safetensors: "), std::string::npos) << e;
}
