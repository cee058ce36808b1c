// The bundled models/stories260K (llama2.c's stories260K converted by `llmtune convert --from llama2c`):
// greedy generation and first logits against an independent float64 reference, the tokenizer, and
// the conversion reproducing the committed folder byte for byte.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/llama2c.h"
#include "model/generate.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

using namespace llmtune;

namespace {

const std::string kModelDir = LLMTUNE_SOURCE_DIR "/models/stories260K";
const std::string kReference = LLMTUNE_TEST_DATA "/stories260K/reference_greedy_200.json";
// The original llama2.c files live in the shared data folder, outside the repo (see models/stories260K/README.md).
// The original llama2.c files live in the project's shared/ folder, beside the checkout (CI) or at
// /work/shared (development machines); they are not copied into the repo.
std::string shared_stories_dir() {
  for (std::string d : {std::string(LLMTUNE_SOURCE_DIR) + "/../shared/data/models/stories260K",
                        std::string("/work/shared/data/models/stories260K")})
    if (std::filesystem::exists(d + "/stories260K.bin")) return d;
  return "/work/shared/data/models/stories260K";
}
const std::string kSharedDir = shared_stories_dir();

nlohmann::json load_reference() { return nlohmann::json::parse(read_file(kReference)); }

}  // namespace

TEST(Stories260K, GreedyGenerationMatchesReference) {
  Model m = load_model(kModelDir);
  nlohmann::json ref = load_reference();
  std::vector<int32_t> expected = ref["generated_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(expected.size(), 200u);
  GenerateOptions opt;
  opt.max_new_tokens = 200;  // no eos_ids: the reference runs 200 steps unconditionally
  std::vector<int32_t> got = generate(m, {{1}}, opt)[0];
  ASSERT_EQ(got.size(), expected.size());
  size_t same = 0;
  while (same < got.size() && got[same] == expected[same]) same++;
  EXPECT_EQ(same, expected.size()) << "first difference at step " << same;

  Tokenizer tok = Tokenizer::load(kModelDir);
  std::string text = tok.decode(got, true);
  EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << text;
  EXPECT_EQ(text, ref["generated_text"].get<std::string>());
}

TEST(Stories260K, FirstLogitsMatchReference) {
  Model m = load_model(kModelDir);
  nlohmann::json ref = load_reference();
  auto steps = ref["logits_first_steps"]["values"];
  auto greedy = ref["generated_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(steps.size(), 4u);
  std::vector<int32_t> ids = {1};
  double worst = 0;
  for (size_t s = 0; s < steps.size(); s++) {
    std::vector<float> ours = last_logits_no_cache(m, ids);
    std::vector<double> want = steps[s].get<std::vector<double>>();
    ASSERT_EQ(ours.size(), want.size());
    for (size_t v = 0; v < want.size(); v++) worst = std::max(worst, std::abs(double(ours[v]) - want[v]));
    ids.push_back(greedy[s]);  // teacher forcing along the greedy path, as the reference did
  }
  EXPECT_LE(worst, 1e-4) << "max |logit error| over 4 steps";
  std::printf("[ stories260K ] max |logit - reference| over 4 steps: %.3g\n", worst);
}

TEST(Stories260K, TokenizerMatchesLlama2cEncoding) {
  Tokenizer tok = Tokenizer::load(kModelDir);
  nlohmann::json ex = load_reference()["encode_example"];
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.encode(ex["text"].get<std::string>(), false), ex["ids_without_bos"].get<std::vector<int32_t>>());
  std::vector<int32_t> with_bos = tok.encode(ex["text"].get<std::string>(), true);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 1);  // add_bos_token from tokenizer_config.json
}

TEST(Stories260K, ConvertReproducesCommittedFolder) {
  const std::string bin = kSharedDir + "/stories260K.bin", tok = kSharedDir + "/tok512.model";
  if (!std::filesystem::exists(bin) || !std::filesystem::exists(tok))
    GTEST_SKIP() << "the original llama2.c files are not available at " << kSharedDir;
  const std::string out =
      (std::filesystem::temp_directory_path() / ("llmtune_stories260k_" + std::to_string(::getpid()))).string();
  convert_llama2c_to_hf(bin, tok, out);
  for (const char* f : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.model",
                        "tokenizer_config.json", "special_tokens_map.json"}) {
    SCOPED_TRACE(f);
    std::string ours = read_file(out + "/" + f), committed = read_file(kModelDir + "/" + f);
    EXPECT_EQ(ours.size(), committed.size());
    EXPECT_TRUE(ours == committed) << "bytes differ from the committed models/stories260K/" << f;
  }
  std::filesystem::remove_all(out);
}
