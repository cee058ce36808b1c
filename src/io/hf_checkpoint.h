// The weights of a Hugging Face model folder: model.safetensors, or a sharded set described by
// model.safetensors.index.json. One uniform name -> tensor lookup over all shards.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace llmtune {

struct CheckpointFiles {
  std::string dir;
  std::vector<SafetensorsFile> shards;     // each weights file opened (and validated) once
  std::map<std::string, size_t> shard_of;  // tensor name -> index into `shards`
  nlohmann::json index_metadata;           // "metadata" of the index file (null if not sharded)

  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const;
  // Fails with "<dir>: tensor 'X' is missing" when absent.
  const SafetensorsTensorInfo& info(const std::string& name) const;
  Tensor get(const std::string& name) const;      // zero-copy view, see SafetensorsFile::get
  Tensor get_f32(const std::string& name) const;  // owned F32 copy

  // Checks that `name` exists with exactly `expected_shape`, else fails with
  // "<dir>: tensor 'X' is missing (needed by <needed_by>)..." or
  // "<dir>: tensor 'X' has shape [a, b] but the config implies [c, d]".
  // `needed_by` names the consumer, e.g. "the GPT-NeoX model".
  void require(const std::string& name, const Shape& expected_shape, const std::string& needed_by = "") const;
};

// Opens the weights of the model folder `dir`: model.safetensors if present (what transformers
// prefers), else model.safetensors.index.json with its shards. Everything is validated up front:
// every weight_map entry must exist in its shard. pytorch_model.bin is not supported.
CheckpointFiles open_checkpoint(const std::string& dir);

}  // namespace llmtune
