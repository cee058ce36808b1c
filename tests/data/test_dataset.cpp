// JSONL / .txt loading: kind detection, file:line errors, prompt masking, EOS options, truncation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "core/error.h"
#include "data/dataset.h"

using namespace llmtune;

namespace {

// Toy tokenizer: one id per byte (byte + 3); ids 0/1/2 are pad/bos/eos; add_special prepends BOS.
constexpr TokenIds kIds{/*bos=*/1, /*eos=*/2, /*pad=*/0};
std::vector<int32_t> byte_encode(std::string_view text, bool add_special) {
  std::vector<int32_t> out;
  if (add_special) out.push_back(kIds.bos);
  for (unsigned char c : text) out.push_back(int32_t(c) + 3);
  return out;
}
const EncodeFn kEncode = byte_encode;

std::vector<int32_t> bytes(std::string_view s) { return byte_encode(s, false); }

// A file in a fresh temp folder; removed with the folder at the end of the test.
struct TempDir {
  std::filesystem::path dir;
  TempDir() {
    dir = std::filesystem::temp_directory_path() /
          ("llmtune_data_test_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir);
  }
  ~TempDir() { std::filesystem::remove_all(dir); }
  std::string write(const std::string& name, const std::string& content) const {
    std::string path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }
};

// Runs f, expects an Error whose message contains every string in `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
        << "message: " << e.what() << "\nmissing: " << p;
  }
}

}  // namespace

TEST(DataDataset, TextRowsGetLabelsEqualToIds) {
  TempDir tmp;
  auto path = tmp.write("train.jsonl", "{\"text\": \"ab\", \"label\": 1}\n\n{\"text\": \"xyz\"}\n");
  Dataset d = load_dataset(path, kEncode, kIds, DatasetOptions{});
  EXPECT_EQ(d.kind, DatasetKind::Text);
  ASSERT_EQ(d.samples.size(), 2u);
  EXPECT_EQ(d.samples[0].ids, (std::vector<int32_t>{1, 'a' + 3, 'b' + 3}));  // BOS, no EOS by default
  EXPECT_EQ(d.samples[0].labels, d.samples[0].ids);
  EXPECT_EQ(d.samples[1].ids.size(), 4u);
  EXPECT_EQ(d.num_rows, 2);
  EXPECT_EQ(d.num_tokens, 7);
}

TEST(DataDataset, PromptCompletionMasksThePromptAndAppendsEos) {
  Sample s = tokenize_prompt_completion("Q:", "ab", kEncode, kIds, DatasetOptions{});
  std::vector<int32_t> want_ids = {1};
  for (int32_t t : bytes("Q:ab")) want_ids.push_back(t);
  want_ids.push_back(kIds.eos);
  EXPECT_EQ(s.ids, want_ids);
  // BOS + "Q:" masked; the completion and its EOS are trained.
  EXPECT_EQ(s.labels, (std::vector<int32_t>{-100, -100, -100, 'a' + 3, 'b' + 3, 2}));
}

TEST(DataDataset, PromptCompletionFullLossWhenCompletionOnlyIsOff) {
  DatasetOptions opt;
  opt.completion_only_loss = false;
  opt.append_eos_to_completion = false;
  opt.add_special_tokens = false;
  Sample s = tokenize_prompt_completion("Q:", "ab", kEncode, kIds, opt);
  EXPECT_EQ(s.ids, bytes("Q:ab"));
  EXPECT_EQ(s.labels, s.ids);
}

TEST(DataDataset, PromptCompletionFileDetectedFromFirstRow) {
  TempDir tmp;
  auto path = tmp.write("sft.jsonl",
                        "{\"prompt\": \"P\", \"completion\": \"C\"}\r\n"
                        "{\"prompt\": \"PP\", \"completion\": \"CC\", \"text\": \"ignored\"}\r\n");
  Dataset d = load_dataset(path, kEncode, kIds, DatasetOptions{});
  EXPECT_EQ(d.kind, DatasetKind::PromptCompletion);
  ASSERT_EQ(d.samples.size(), 2u);
  EXPECT_EQ(d.samples[1].ids.size(), 1u + 2 + 2 + 1);
  EXPECT_EQ(d.samples[1].labels[2], -100);
  EXPECT_EQ(d.samples[1].labels[3], 'C' + 3);
}

TEST(DataDataset, EosOptions) {
  DatasetOptions opt;
  EXPECT_EQ(tokenize_text("a", kEncode, kIds, opt).ids.back(), 'a' + 3);  // default: no EOS on text
  opt.append_eos_to_text = true;
  Sample s = tokenize_text("a", kEncode, kIds, opt);
  EXPECT_EQ(s.ids.back(), kIds.eos);
  EXPECT_EQ(s.labels.back(), kIds.eos);
  TokenIds no_eos{1, -1, -1};
  expect_error([&] { tokenize_text("a", kEncode, no_eos, opt); }, {"append_eos_to_text", "EOS"});
  expect_error([&] { tokenize_prompt_completion("a", "b", kEncode, no_eos, DatasetOptions{}); },
               {"append_eos_to_completion"});
}

TEST(DataDataset, TruncationKeepsTheStart) {
  TempDir tmp;
  auto path = tmp.write("t.jsonl",
                        "{\"prompt\": \"abc\", \"completion\": \"defgh\"}\n"
                        "{\"prompt\": \"abcdefgh\", \"completion\": \"z\"}\n"
                        "{\"prompt\": \"a\", \"completion\": \"b\"}\n");
  DatasetOptions opt;
  opt.max_seq_length = 6;
  Dataset d = load_dataset(path, kEncode, kIds, opt);
  ASSERT_EQ(d.samples.size(), 3u);
  std::vector<int32_t> want = {1};
  for (int32_t t : bytes("abcde")) want.push_back(t);
  EXPECT_EQ(d.samples[0].ids, want);  // BOS abc de | fgh EOS cut off
  EXPECT_EQ(d.samples[0].labels, (std::vector<int32_t>{-100, -100, -100, -100, 'd' + 3, 'e' + 3}));
  EXPECT_EQ(d.samples[1].ids.size(), 6u);
  EXPECT_EQ(d.num_truncated, 2);
  EXPECT_EQ(d.num_without_labels, 1);  // the prompt filled the whole sample
  EXPECT_EQ(d.samples[2].ids.size(), 4u);
}

TEST(DataDataset, InvalidJsonNamesFileAndLine) {
  TempDir tmp;
  std::string content;
  for (int i = 1; i <= 16; ++i) content += i == 5 ? "\n" : "{\"text\": \"row\"}\n";
  content += "{\"text\": \"broken\n";
  auto path = tmp.write("train.jsonl", content);
  expect_error([&] { load_dataset(path, kEncode, kIds, DatasetOptions{}); },
               {"train.jsonl:17: not valid JSON ("});
}

TEST(DataDataset, JsonArrayFileGetsAHint) {
  TempDir tmp;
  auto path = tmp.write("train.jsonl", "[{\"text\": \"a\"},\n{\"text\": \"b\"}]\n");
  expect_error([&] { load_dataset(path, kEncode, kIds, DatasetOptions{}); },
               {"train.jsonl:1: not valid JSON", "one object per line"});
}

TEST(DataDataset, MissingFieldNamesFileAndLine) {
  TempDir tmp;
  auto path = tmp.write("train.jsonl", "{\"text\": \"a\"}\n\n{\"txt\": \"b\"}\n");
  expect_error([&] { load_dataset(path, kEncode, kIds, DatasetOptions{}); },
               {"train.jsonl:3: row has no \"text\" field (expected {\"text\": ...} or "
                "{\"prompt\": ..., \"completion\": ...}"});
  auto first = tmp.write("first.jsonl", "{\"input\": \"a\"}\n");
  expect_error([&] { load_dataset(first, kEncode, kIds, DatasetOptions{}); },
               {"first.jsonl:1: row has no \"text\" field"});
  auto half = tmp.write("half.jsonl", "{\"prompt\": \"a\"}\n");
  expect_error([&] { load_dataset(half, kEncode, kIds, DatasetOptions{}); },
               {"half.jsonl:1: row has \"prompt\" but no \"completion\" field"});
  auto pref = tmp.write("dpo.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n");
  expect_error([&] { load_dataset(pref, kEncode, kIds, DatasetOptions{}); },
               {"dpo.jsonl:1: this is a preference row", "DPO"});
}

TEST(DataDataset, MixingKindsIsAnError) {
  TempDir tmp;
  auto pc_then_text =
      tmp.write("a.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"text\": \"t\"}\n");
  expect_error([&] { load_dataset(pc_then_text, kEncode, kIds, DatasetOptions{}); },
               {"a.jsonl:2: row has no \"prompt\" field", "cannot change"});
  auto text_then_pc =
      tmp.write("b.jsonl", "{\"text\": \"t\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n");
  expect_error([&] { load_dataset(text_then_pc, kEncode, kIds, DatasetOptions{}); },
               {"b.jsonl:2: row has no \"text\" field"});
}

TEST(DataDataset, NonStringFieldAndNonObjectRow) {
  TempDir tmp;
  auto num = tmp.write("n.jsonl", "{\"text\": \"a\"}\n{\"text\": 5}\n");
  expect_error([&] { load_dataset(num, kEncode, kIds, DatasetOptions{}); },
               {"n.jsonl:2: field \"text\" is a number, expected a string"});
  auto nul = tmp.write("z.jsonl", "{\"prompt\": \"a\", \"completion\": null}\n");
  expect_error([&] { load_dataset(nul, kEncode, kIds, DatasetOptions{}); },
               {"z.jsonl:1: field \"completion\" is null"});
  auto arr = tmp.write("r.jsonl", "{\"text\": \"a\"}\n\"just a string\"\n");
  expect_error([&] { load_dataset(arr, kEncode, kIds, DatasetOptions{}); },
               {"r.jsonl:2: row is a string, expected a JSON object"});
}

TEST(DataDataset, EmptyDatasetIsAnError) {
  TempDir tmp;
  auto empty = tmp.write("empty.jsonl", "");
  expect_error([&] { load_dataset(empty, kEncode, kIds, DatasetOptions{}); },
               {"empty.jsonl: the dataset is empty"});
  auto blank = tmp.write("blank.jsonl", "\n  \n\r\n");
  expect_error([&] { load_dataset(blank, kEncode, kIds, DatasetOptions{}); },
               {"blank.jsonl: the dataset is empty"});
  auto empty_txt = tmp.write("empty.txt", "\n\n");
  expect_error([&] { load_dataset(empty_txt, kEncode, kIds, DatasetOptions{}); },
               {"empty.txt: the text file is empty"});
  // Every row tokenises to nothing (no BOS added, empty texts).
  DatasetOptions opt;
  opt.add_special_tokens = false;
  auto nothing = tmp.write("nothing.jsonl", "{\"text\": \"\"}\n{\"text\": \"\"}\n");
  expect_error([&] { load_dataset(nothing, kEncode, kIds, opt); },
               {"nothing.jsonl: all 2 rows tokenised to zero tokens"});
}

TEST(DataDataset, EmptyRowsAreSkippedAndCounted) {
  RawRows rows = parse_jsonl("{\"text\": \"\"}\n{\"text\": \"ab\"}\n", "mem.jsonl");
  DatasetOptions opt;
  opt.add_special_tokens = false;
  Dataset d = tokenize_rows(rows, kEncode, kIds, opt, "mem.jsonl");
  EXPECT_EQ(d.samples.size(), 1u);
  EXPECT_EQ(d.num_empty_skipped, 1);
  EXPECT_EQ(rows.rows[1].line, 2);
}

TEST(DataDataset, PlainTextIsChunkedByMaxSeqLength) {
  TempDir tmp;
  auto path = tmp.write("book.txt", "abcdefghij\n\nklm");  // 15 bytes + BOS = 16 ids
  DatasetOptions opt;
  opt.max_seq_length = 5;
  Dataset d = load_dataset(path, kEncode, kIds, opt);
  EXPECT_EQ(d.kind, DatasetKind::PlainText);
  ASSERT_EQ(d.samples.size(), 4u);  // 5 + 5 + 5 + 1
  EXPECT_EQ(d.samples[0].ids, (std::vector<int32_t>{1, 'a' + 3, 'b' + 3, 'c' + 3, 'd' + 3}));
  EXPECT_EQ(d.samples[1].ids[0], 'e' + 3);  // only the first chunk starts with BOS
  EXPECT_EQ(d.samples[3].ids, (std::vector<int32_t>{'m' + 3}));
  EXPECT_EQ(d.num_truncated, 3);
  std::vector<int32_t> joined;
  for (const auto& s : d.samples) {
    EXPECT_EQ(s.labels, s.ids);
    joined.insert(joined.end(), s.ids.begin(), s.ids.end());
  }
  EXPECT_EQ(joined, byte_encode("abcdefghij\n\nklm", true));
  EXPECT_EQ(d.num_tokens, 16);
}

TEST(DataDataset, BadPathsAndOptions) {
  TempDir tmp;
  expect_error([&] { load_dataset((tmp.dir / "missing.jsonl").string(), kEncode, kIds, {}); },
               {"missing.jsonl: cannot open"});
  auto csv = tmp.write("data.csv", "a,b\n");
  expect_error([&] { load_dataset(csv, kEncode, kIds, {}); },
               {"data.csv: unsupported dataset file", ".jsonl", ".txt"});
  auto ok = tmp.write("ok.jsonl", "{\"text\": \"a\"}\n");
  DatasetOptions opt;
  opt.max_seq_length = 0;
  expect_error([&] { load_dataset(ok, kEncode, kIds, opt); }, {"max_seq_length"});
}
