// The BPE model of HF tokenizers: word -> ids by repeatedly merging the lowest-ranked adjacent pair
// (leftmost on ties), with byte_fallback / unk handling and a per-word cache.
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace llmtune {

struct BpeMerge {
  int32_t rank;
  int32_t merged_id;
};

struct BpeModel {
  std::unordered_map<std::string, int32_t> vocab;
  std::unordered_map<uint64_t, BpeMerge> merges;  // key: (left_id << 32) | right_id
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  std::array<int32_t, 256> byte_token_ids{};  // ids of <0x00>..<0xFF>, -1 where missing

  // Adds merge (left, right) with the next rank; returns an error text (empty on success).
  std::string add_merge(std::string_view left, std::string_view right);
  void finish_setup();  // call after vocab is filled (byte tokens)

  // Appends the ids of one pre-tokenized word (UTF-8) to out.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace llmtune
