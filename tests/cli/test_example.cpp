// Runs the built examples/peft_style.cpp program (a PEFT user's Python steps in C++: load, LoraConfig,
// get_peft_model, TrainingArguments, Trainer.train, generate, save_pretrained, reload) and checks its
// exit code, its output lines and the PEFT adapter folder it wrote.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

TEST(Examples, PeftStyleRunsTrainsSavesAndReloadsIdentically) {
  if (!fs::exists(LLMTUNE_BINARY)) GTEST_SKIP() << "CLI not built (LLMTUNE_ONLY build?)";
  const fs::path exe = fs::path(LLMTUNE_BINARY).parent_path() / "example_peft_style";
  ASSERT_TRUE(fs::exists(exe)) << exe << " is not built (cmake --build builds every examples/*.cpp)";
  const fs::path out = fs::temp_directory_path() / ("llmtune_example_" + std::to_string(::getpid()));
  fs::remove_all(out);
  const std::string cmd = "'" + exe.string() + "' '" + std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K' '" +
                          out.string() + "' 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = ::pclose(p);
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 0) << text;

  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  auto index_of = [&](const std::string& prefix) {
    for (size_t i = 0; i < lines.size(); i++)
      if (lines[i].rfind(prefix, 0) == 0) return int(i);
    return -1;
  };
  // The steps, in the order a PEFT user runs them.
  const std::vector<std::string> steps = {"trainable params: ", "before: The little robot", "{\"epoch\"",
                                          "train_loss: ",       "after: The little robot",  "saved adapter to ",
                                          "reloaded adapter: identical output"};
  int last = -1;
  for (const auto& s : steps) {
    const int i = index_of(s);
    EXPECT_GT(i, last) << "'" << s << "' missing or out of order in:\n" << text;
    last = std::max(last, i);
  }
  // stories260K: q_proj [64→64] and v_proj [64→32] in 5 layers, r 8: 5·(8·64 + 64·8 + 8·64 + 32·8) = 8,960.
  EXPECT_NE(text.find("trainable params: 8,960 || all params: "), std::string::npos) << text;
  EXPECT_NE(lines[size_t(index_of("before: "))].substr(8), lines[size_t(index_of("after: "))].substr(7))
      << "training changed the greedy continuation";
  // The adapter folder is PEFT's.
  const nlohmann::json cfg = nlohmann::json::parse(llmtune::read_file((out / "adapter/adapter_config.json").string()));
  EXPECT_EQ(cfg["r"], 8);
  EXPECT_EQ(cfg["target_modules"], nlohmann::json({"q_proj", "v_proj"}));
  llmtune::SafetensorsFile st = llmtune::open_safetensors((out / "adapter/adapter_model.safetensors").string());
  EXPECT_TRUE(st.has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_EQ(st.names().size(), 20u);
  EXPECT_TRUE(fs::exists(out / "trainer/checkpoint-20"));
  fs::remove_all(out);
}
