// Classification and preference JSONL: label ids / names, label mapping, file:line errors, EOS, truncation.
#include <gtest/gtest.h>

#include "core/error.h"
#include "data/classification.h"

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

template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "message: " << e.what() << "\nmissing: " << p;
  }
}

ClassificationDataset cls(const std::string& s, const ClassificationOptions& opt = {}) {
  return parse_classification_jsonl(s, "d.jsonl", kEncode, kIds, opt);
}
PreferenceDataset pref(const std::string& s, const PreferenceOptions& opt = {}) {
  return parse_preference_jsonl(s, "p.jsonl", kEncode, kIds, opt);
}

}  // namespace

TEST(DataClassification, IntegerLabels) {
  auto ds = cls("{\"text\":\"ab\",\"label\":1,\"source\":\"x\"}\n\n{\"text\":\"c\",\"label\":0}\n");
  ASSERT_EQ(ds.samples.size(), 2u);
  EXPECT_EQ(ds.samples[0].ids, (std::vector<int32_t>{1, 'a' + 3, 'b' + 3}));  // BOS, no EOS by default
  EXPECT_EQ(ds.samples[0].label, 1);
  EXPECT_EQ(ds.samples[1].line, 3);
  EXPECT_EQ(ds.num_labels, 2);
  EXPECT_FALSE(ds.named_labels);
  EXPECT_EQ(ds.id2label, (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(ds.label_counts, (std::vector<int64_t>{1, 1}));
}

TEST(DataClassification, NamesMapInOrderOfFirstAppearance) {
  auto ds = cls("{\"text\":\"a\",\"label\":\"pos\"}\n{\"text\":\"b\",\"label\":\"neg\"}\n"
                "{\"text\":\"c\",\"label\":\"pos\"}\n{\"text\":\"d\",\"label\":\"mixed\"}\n");
  EXPECT_TRUE(ds.named_labels);
  EXPECT_EQ(ds.id2label, (std::vector<std::string>{"pos", "neg", "mixed"}));
  EXPECT_EQ(ds.samples[2].label, 0);
  EXPECT_EQ(ds.samples[3].label, 2);
  EXPECT_EQ(ds.num_labels, 3);
}

TEST(DataClassification, GivenLabelListFixesIds) {
  ClassificationOptions opt;
  opt.label_names = {"neg", "pos", "mixed"};
  auto ds = cls("{\"text\":\"a\",\"label\":\"pos\"}\n{\"text\":\"b\",\"label\":\"neg\"}\n", opt);
  EXPECT_EQ(ds.samples[0].label, 1);
  EXPECT_EQ(ds.samples[1].label, 0);
  EXPECT_EQ(ds.num_labels, 3);
  EXPECT_EQ(ds.id2label, opt.label_names);
  expect_error([&] { cls("{\"text\":\"a\",\"label\":\"pos\"}\n{\"text\":\"b\",\"label\":\"meh\"}\n", opt); },
               {"d.jsonl:2", "\"meh\" is not one of the given labels", "\"neg\", \"pos\", \"mixed\""});
  // Integer labels with a list: ids index the list.
  expect_error([&] { cls("{\"text\":\"a\",\"label\":3}\n", opt); }, {"d.jsonl:1", "label 3 is outside the 3 labels"});
}

TEST(DataClassification, MixingIdsAndNamesIsAnError) {
  expect_error([] { cls("{\"text\":\"a\",\"label\":0}\n{\"text\":\"b\",\"label\":1}\n{\"text\":\"c\",\"label\":\"pos\"}\n"); },
               {"d.jsonl:3", "is a string but line 1 had an integer", "not both"});
  expect_error([] { cls("{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":1}\n"); },
               {"d.jsonl:2", "is an integer but line 1 had a string"});
}

TEST(DataClassification, LabelErrorsNameTheLine) {
  ClassificationOptions opt;
  opt.num_labels = 2;
  expect_error([&] { cls("{\"text\":\"a\",\"label\":0}\n{\"text\":\"b\",\"label\":2}\n", opt); },
               {"d.jsonl:2", "label 2 is outside the 2 labels (0..1)"});
  expect_error([&] { cls("{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"y\"}\n{\"text\":\"c\",\"label\":\"z\"}\n", opt); },
               {"d.jsonl:3", "\"z\"", "num_labels is 2"});
  expect_error([] { cls("{\"text\":\"a\",\"label\":-1}\n"); }, {"d.jsonl:1", "negative"});
  expect_error([] { cls("{\"text\":\"a\",\"label\":0}\n{\"text\":\"b\",\"label\":0.5}\n"); },
               {"d.jsonl:2", "label 0.5 must be an integer class id", "regression head: num_labels 1"});
  expect_error([] { cls("{\"text\":\"a\",\"label\":1.0}\n"); }, {"d.jsonl:1", "integer class id"});
  expect_error([] { cls("{\"text\":\"a\",\"label\":false}\n"); }, {"d.jsonl:1", "label false must be"});
  expect_error([] { cls("{\"text\":\"a\"}\n"); }, {"d.jsonl:1", "no \"label\" field"});
  expect_error([] { cls("{\"label\":1}\n"); }, {"d.jsonl:1", "no \"text\" field"});
  expect_error([] { cls("{\"text\":\"a\",\"label\":1}\nnot json\n"); }, {"d.jsonl:2", "not valid JSON"});
  expect_error([] { cls("{\"text\":\"a\",\"label\":0}\n{\"text\":\"b\",\"label\":0}\n"); }, {"at least 2 classes"});
  expect_error([] { cls("\n\n"); }, {"empty"});
}

TEST(DataClassification, EosTruncationAndRegression) {
  ClassificationOptions opt;
  opt.append_eos = true;
  opt.max_length = 3;
  opt.add_special_tokens = false;
  auto ds = cls("{\"text\":\"a\",\"label\":0}\n{\"text\":\"abcd\",\"label\":1}\n", opt);
  EXPECT_EQ(ds.samples[0].ids, (std::vector<int32_t>{'a' + 3, kIds.eos}));
  EXPECT_EQ(ds.samples[1].ids, (std::vector<int32_t>{'a' + 3, 'b' + 3, 'c' + 3}));  // EOS lost to truncation
  EXPECT_EQ(ds.num_truncated, 1);

  ClassificationOptions reg;
  reg.regression = true;
  auto r = cls("{\"text\":\"a\",\"label\":0.25}\n{\"text\":\"b\",\"label\":3}\n", reg);
  EXPECT_TRUE(r.regression);
  EXPECT_EQ(r.num_labels, 1);
  EXPECT_FLOAT_EQ(r.samples[0].target, 0.25f);
  EXPECT_FLOAT_EQ(r.samples[1].target, 3.f);
  expect_error([&] { cls("{\"text\":\"a\",\"label\":\"pos\"}\n", reg); },
               {"d.jsonl:1", "must be a number", "class names need a classification head"});
  expect_error([&] { cls("{\"text\":\"a\",\"label\":1}\n{\"text\":\"b\",\"label\":true}\n", reg); },
               {"d.jsonl:2", "label true must be a number"});
  expect_error([&] { cls("{\"text\":\"a\",\"label\":1e39}\n", reg); }, {"d.jsonl:1", "not a finite number"});
  reg.num_labels = 2;
  expect_error([&] { cls("{\"text\":\"a\",\"label\":1}\n", reg); }, {"num_labels 1"});
}

TEST(DataClassification, SentimentDataLoads) {
  auto ds = load_classification_dataset(std::string(LLMTUNE_SOURCE_DIR) + "/data/sentiment/test.jsonl", kEncode, kIds,
                                        ClassificationOptions{});
  EXPECT_EQ(ds.samples.size(), 600u);
  EXPECT_EQ(ds.num_labels, 2);
  EXPECT_EQ(ds.label_counts, (std::vector<int64_t>{309, 291}));  // counted with python
}

TEST(DataPreference, PromptIsPrependedAndEosAppended) {
  auto ds = pref("{\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"bc\"}\n{\"chosen\":\"x\",\"rejected\":\"y\",\"margin\":1.5}\n");
  ASSERT_EQ(ds.samples.size(), 2u);
  EXPECT_EQ(ds.samples[0].chosen, (std::vector<int32_t>{1, 'q' + 3, 'a' + 3, 2}));
  EXPECT_EQ(ds.samples[0].rejected, (std::vector<int32_t>{1, 'q' + 3, 'b' + 3, 'c' + 3, 2}));
  // no prompt: the response gets the special tokens
  EXPECT_EQ(ds.samples[1].chosen, (std::vector<int32_t>{1, 'x' + 3, 2}));
  EXPECT_TRUE(ds.has_margin);
  EXPECT_FLOAT_EQ(ds.samples[1].margin, 1.5f);
  EXPECT_EQ(ds.samples[1].line, 2);
}

TEST(DataPreference, EosNotDuplicatedTruncateOrDrop) {
  // A response already ending in EOS gets none appended (TRL: "if not already there").
  EncodeFn with_eos = [](std::string_view t, bool) {
    std::vector<int32_t> v;
    for (unsigned char c : t) v.push_back(c == '$' ? kIds.eos : int32_t(c) + 3);
    return v;
  };
  auto ds = parse_preference_jsonl("{\"chosen\":\"a$\",\"rejected\":\"b\"}\n", "p.jsonl", with_eos, kIds, {});
  EXPECT_EQ(ds.samples[0].chosen, (std::vector<int32_t>{'a' + 3, 2}));
  EXPECT_EQ(ds.samples[0].rejected, (std::vector<int32_t>{'b' + 3, 2}));

  PreferenceOptions opt;
  opt.max_length = 3;
  const std::string rows = "{\"chosen\":\"abcd\",\"rejected\":\"a\"}\n{\"chosen\":\"a\",\"rejected\":\"b\"}\n";
  auto t = pref(rows, opt);
  EXPECT_EQ(t.samples.size(), 2u);
  EXPECT_EQ(t.num_truncated, 1);
  EXPECT_EQ(t.samples[0].chosen.size(), 3u);
  opt.drop_too_long = true;
  auto d = pref(rows, opt);
  EXPECT_EQ(d.samples.size(), 1u);
  EXPECT_EQ(d.num_dropped, 1);
  EXPECT_EQ(d.samples[0].line, 2);
}

TEST(DataPreference, MissingFieldsNameTheLine) {
  expect_error([] { pref("{\"chosen\":\"a\",\"rejected\":\"b\"}\n{\"prompt\":\"p\",\"chosen\":\"a\"}\n"); },
               {"p.jsonl:2", "no \"rejected\" field"});
  expect_error([] { pref("{\"rejected\":\"b\"}\n"); }, {"p.jsonl:1", "no \"chosen\" field"});
  expect_error([] { pref("{\"chosen\":1,\"rejected\":\"b\"}\n"); }, {"p.jsonl:1", "\"chosen\" must be a string"});
  expect_error([] { pref("{\"chosen\":\"a\",\"rejected\":\"b\",\"margin\":\"big\"}\n"); }, {"p.jsonl:1", "margin"});
  TokenIds no_eos{1, -1, 0};
  expect_error([&] { parse_preference_jsonl("{\"chosen\":\"a\",\"rejected\":\"b\"}\n", "p", kEncode, no_eos, {}); },
               {"no EOS token"});
}
