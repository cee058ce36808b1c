// BPE merge loop as in HF tokenizers (models/bpe/word.rs): a min-heap of candidate pairs ordered by
// (rank, position), so long words cost O(n log n); results for short words are cached.
#include "tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include "tokenizer/unicode.h"

namespace llmtune {
namespace {
uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 100000;
}  // namespace

std::string BpeModel::add_merge(std::string_view left, std::string_view right) {
  auto l = vocab.find(std::string(left));
  auto r = vocab.find(std::string(right));
  std::string joined = std::string(left) + std::string(right);
  auto m = vocab.find(joined);
  if (l == vocab.end()) return "token '" + std::string(left) + "' is not in the vocab";
  if (r == vocab.end()) return "token '" + std::string(right) + "' is not in the vocab";
  // With a continuing_subword_prefix, the merged token drops the right side's prefix.
  if (m == vocab.end() && !continuing_subword_prefix.empty() && right.starts_with(continuing_subword_prefix))
    m = vocab.find(std::string(left) + std::string(right.substr(continuing_subword_prefix.size())));
  if (m == vocab.end()) return "merged token '" + joined + "' is not in the vocab";
  uint64_t key = pair_key(l->second, r->second);
  if (!merges.count(key)) merges[key] = BpeMerge{int32_t(merges.size()), m->second};
  return {};
}

void BpeModel::finish_setup() {
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = vocab.find(name);
    byte_token_ids[b] = it == vocab.end() ? -1 : it->second;
  }
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    auto it = vocab.find(std::string(word));
    if (it != vocab.end()) { out.push_back(it->second); return; }
  }
  bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(word));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol { int32_t id; int32_t prev; int32_t next; };
  std::vector<Symbol> symbols;
  std::vector<size_t> offsets;
  std::vector<uint32_t> cps = utf8_decode(word, &offsets);
  bool pending_unk = false;  // last symbol pushed is an unk that a following unknown char may fuse into
  auto push = [&](int32_t id) {
    int32_t index = int32_t(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0) symbols[index - 1].next = index;
  };
  std::string piece;
  for (size_t c = 0; c < cps.size(); ++c) {
    std::string_view ch = word.substr(offsets[c], offsets[c + 1] - offsets[c]);
    piece.clear();
    if (c > 0) piece += continuing_subword_prefix;
    piece += ch;
    if (c + 1 == cps.size()) piece += end_of_word_suffix;
    auto it = vocab.find(piece);
    if (it != vocab.end()) {
      push(it->second);
      pending_unk = false;
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (unsigned char b : ch) all = all && byte_token_ids[b] >= 0;
      if (all) {
        for (unsigned char b : ch) push(byte_token_ids[b]);
        pending_unk = false;
        continue;
      }
    }
    if (unk_id >= 0) {
      if (!(fuse_unk && pending_unk)) push(unk_id);
      pending_unk = true;
    }
  }
  if (symbols.empty()) return;

  struct Candidate {
    int32_t rank, pos, left_id, right_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it != merges.end()) heap.push({it->second.rank, pos, symbols[pos].id, symbols[next].id});
  };
  for (int32_t i = 0; i + 1 < int32_t(symbols.size()); ++i) consider(i);
  std::vector<char> alive(symbols.size(), 1);
  while (!heap.empty()) {
    Candidate top = heap.top();
    heap.pop();
    Symbol& left = symbols[top.pos];
    if (!alive[top.pos] || left.id != top.left_id || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (right.id != top.right_id) continue;
    // Merge right into left.
    left.id = merges.at(pair_key(top.left_id, top.right_id)).merged_id;
    alive[left.next] = 0;
    int32_t after = right.next;
    left.next = after;
    if (after >= 0) symbols[after].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace llmtune
