// HF model folder weights: single-file or sharded safetensors behind one lookup.
#include "io/hf_checkpoint.h"

#include <filesystem>

#include "core/error.h"
#include "io/json_file.h"

namespace llmtune {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// A weight_map value must name a file inside the folder: no absolute paths, no "..".
bool is_plain_relative(const std::string& file) {
  if (file.empty() || file.front() == '/') return false;
  for (const auto& part : fs::path(file))
    if (part == "..") return false;
  return true;
}

[[noreturn]] void fail_no_weights(const std::string& dir) {
  std::string found;
  for (const char* other : {"pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "consolidated.00.pth"})
    if (is_file(fs::path(dir) / other)) found = other;
  if (!found.empty())
    fail(dir, ": found ", found,
         ", but PyTorch pickle checkpoints are not supported (they can run code when loaded): "
         "convert the model to safetensors, e.g. in Python: AutoModelForCausalLM.from_pretrained(dir)"
         ".save_pretrained(out_dir, safe_serialization=True)");
  fail(dir, ": no model weights found: looked for ", kSingleFile, " and ", kIndexFile,
       " (pytorch_model.bin is not supported: convert it to safetensors)");
}

}  // namespace

CheckpointFiles open_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) fail(dir, ": no such model folder");
  if (!fs::is_directory(dir, ec)) fail(dir, ": not a folder (expected a Hugging Face model folder)");

  CheckpointFiles ck;
  ck.dir = dir;
  const fs::path single = fs::path(dir) / kSingleFile;
  const fs::path index = fs::path(dir) / kIndexFile;

  if (is_file(single)) {
    ck.shards.push_back(open_safetensors(single.string()));
    for (const auto& kv : ck.shards[0].tensors) ck.shard_of.emplace(kv.first, 0);
    return ck;
  }
  if (!is_file(index)) fail_no_weights(dir);

  const std::string index_path = index.string();
  nlohmann::json j = read_json_file(index_path);
  if (!j.is_object()) fail(index_path, ": expected a JSON object with \"weight_map\"");
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object())
    fail(index_path, ": field 'weight_map' is missing or not an object of tensor name -> shard file");
  if (auto md = j.find("metadata"); md != j.end()) ck.index_metadata = *md;

  std::map<std::string, size_t> shard_index;  // file name -> index into ck.shards
  for (const auto& [name, file_json] : wm->items()) {
    if (!file_json.is_string())
      fail(index_path, ": weight_map entry for tensor '", name, "' is not a file name string");
    const std::string file = file_json.get<std::string>();
    if (!is_plain_relative(file))
      fail(index_path, ": weight_map entry for tensor '", name, "' names '", file,
           "', which is outside the model folder");
    auto [it, inserted] = shard_index.emplace(file, ck.shards.size());
    if (inserted) {
      const fs::path shard_path = fs::path(dir) / file;
      if (!is_file(shard_path))
        fail(index_path, ": shard '", file, "' (holding tensor '", name, "') does not exist in ", dir);
      ck.shards.push_back(open_safetensors(shard_path.string()));
    }
    const SafetensorsFile& shard = ck.shards[it->second];
    if (!shard.has(name))
      fail(index_path, ": weight_map says tensor '", name, "' is in ", file, ", but that file has no such tensor");
    ck.shard_of.emplace(name, it->second);
  }
  if (ck.shard_of.empty()) fail(index_path, ": weight_map is empty");
  return ck;
}

std::vector<std::string> CheckpointFiles::names() const {
  std::vector<std::string> out;
  out.reserve(shard_of.size());
  for (const auto& kv : shard_of) out.push_back(kv.first);
  return out;
}

bool CheckpointFiles::has(const std::string& name) const { return shard_of.count(name) != 0; }

const SafetensorsTensorInfo& CheckpointFiles::info(const std::string& name) const {
  auto it = shard_of.find(name);
  if (it == shard_of.end()) fail(dir, ": tensor '", name, "' is missing");
  return shards[it->second].info(name);
}

Tensor CheckpointFiles::get(const std::string& name) const {
  auto it = shard_of.find(name);
  if (it == shard_of.end()) fail(dir, ": tensor '", name, "' is missing");
  return shards[it->second].get(name);
}

Tensor CheckpointFiles::get_f32(const std::string& name) const {
  auto it = shard_of.find(name);
  if (it == shard_of.end()) fail(dir, ": tensor '", name, "' is missing");
  return shards[it->second].get_f32(name);
}

void CheckpointFiles::require(const std::string& name, const Shape& expected_shape,
                              const std::string& needed_by) const {
  auto it = shard_of.find(name);
  if (it == shard_of.end()) {
    // The usual cause is a prefix mismatch ("gpt_neox.layers.0..." vs "layers.0..."): point at a
    // tensor whose name ends with, or is the end of, the missing one.
    std::string hint;
    for (const auto& [have, idx] : shard_of) {
      bool suffix_of_have =
          have.size() > name.size() && have.compare(have.size() - name.size(), name.size(), name) == 0;
      bool suffix_of_name =
          name.size() > have.size() && name.compare(name.size() - have.size(), have.size(), have) == 0;
      if (suffix_of_have || suffix_of_name) {
        hint = cat("; the checkpoint has '", have, "' (a different name prefix: wrong model_type or base model?)");
        break;
      }
    }
    if (hint.empty()) {
      hint = cat("; the checkpoint has ", shard_of.size(), " tensors");
      size_t shown = 0;
      for (const auto& kv : shard_of) {
        if (shown == 3) break;
        hint += cat(shown ? ", " : ", e.g. ", "'", kv.first, "'");
        shown++;
      }
      hint += " (is this the right model folder?)";
    }
    fail(dir, ": tensor '", name, "' is missing", needed_by.empty() ? std::string() : " (needed by " + needed_by + ")",
         hint);
  }
  const SafetensorsTensorInfo& ti = shards[it->second].info(name);
  if (ti.shape != expected_shape)
    fail(dir, ": tensor '", name, "' has shape ", shape_str(ti.shape), " but the config implies ",
         shape_str(expected_shape), " (does config.json belong to these weights?)");
}

}  // namespace llmtune
