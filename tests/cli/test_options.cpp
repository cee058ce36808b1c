// Tests of the option system: HF key spelling, flag forms, config files, typed errors and suggestions.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli/options.h"
#include "core/error.h"

using namespace llmtune;
using namespace llmtune::cli;

namespace {

CommandSpec train_spec() {
  CommandSpec c{"train", "Fine-tune a model with LoRA."};
  c.add_float("learning_rate", 5e-5, "initial learning rate").min = 0;
  c.add_int("per_device_train_batch_size", 8, "batch size per device").min = 1;
  c.add_int("max_steps", -1, "total optimizer steps; -1 = from epochs");
  c.add_float("num_train_epochs", 3.0, "epochs");
  c.add_bool("bf16", false, "bf16 matrix products");
  c.add_bool("do_sample", false, "sample instead of greedy");
  auto& sched = c.add_string("lr_scheduler_type", "linear", "scheduler");
  sched.choices = {"linear", "cosine", "constant", "constant_with_warmup"};
  c.add_string("output_dir", std::nullopt, "where results go").required = true;
  c.add_int("r", 8, "LoRA rank").min = 1;
  c.add_int("lora_alpha", 8, "LoRA alpha");
  c.add_string_list("target_modules", std::nullopt, "modules to adapt");
  c.add_int_list("layers_to_transform", std::nullopt, "layer indices").min = 0;
  auto& top_p = c.add_float("top_p", 1.0, "nucleus");
  top_p.min = 0;
  top_p.max = 1;
  c.add_int("max_new_tokens", 20, "tokens to generate");
  c.add_int("save_total_limit", std::nullopt, "checkpoints to keep");
  return c;
}

ResolvedOptions parse(const CommandSpec& c, std::vector<std::string> args) { return parse_options(c, args); }

std::string error_of(const CommandSpec& c, std::vector<std::string> args) {
  try {
    parse_options(c, args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("llmtune_opts_" + std::to_string(::getpid()) + "_" +
                                                     std::to_string(reinterpret_cast<uintptr_t>(this)));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

}  // namespace

TEST(Options, DefaultsAndTypedGetters) {
  auto o = parse(train_spec(), {"--output_dir", "out"});
  EXPECT_DOUBLE_EQ(o.get_float("learning_rate"), 5e-5);
  EXPECT_EQ(o.get_int("per_device_train_batch_size"), 8);
  EXPECT_EQ(o.get_int("max_steps"), -1);
  EXPECT_FALSE(o.get_bool("bf16"));
  EXPECT_EQ(o.get_string("lr_scheduler_type"), "linear");
  EXPECT_EQ(o.get_string("output_dir"), "out");
  EXPECT_FALSE(o.has("target_modules"));
  EXPECT_FALSE(o.get_optional_int("save_total_limit"));
  EXPECT_TRUE(o.was_set("output_dir"));
  EXPECT_FALSE(o.was_set("learning_rate"));
  EXPECT_DOUBLE_EQ(o.get_float("r"), 8.0);  // ints read as floats too
  EXPECT_THROW(o.get_string_list("target_modules"), Error);  // None: tells the user to pass it
  EXPECT_THROW(o.get_int("learning_rate"), std::logic_error);  // wrong type: programming error
  EXPECT_THROW(o.get_int("nope"), std::logic_error);
}

TEST(Options, FlagFormsAndDashes) {
  auto o = parse(train_spec(), {"--learning-rate=2e-4", "--max_new_tokens", "64", "--max-steps", "-1",
                                "--output-dir=o", "--per_device_train_batch_size=4", "--lr_scheduler_type", "cosine"});
  EXPECT_DOUBLE_EQ(o.get_float("learning_rate"), 2e-4);
  EXPECT_EQ(o.get_int("max_new_tokens"), 64);
  EXPECT_EQ(o.get_int("max_steps"), -1);
  EXPECT_EQ(o.get_int("per_device_train_batch_size"), 4);
  EXPECT_EQ(o.get_string("lr_scheduler_type"), "cosine");
  EXPECT_EQ(o.source("learning_rate"), OptionSource::CommandLine);
  // The last occurrence wins, as with argparse.
  auto o2 = parse(train_spec(), {"--output_dir", "a", "--r", "4", "--r", "16"});
  EXPECT_EQ(o2.get_int("r"), 16);
}

TEST(Options, BoolFlags) {
  auto c = train_spec();
  EXPECT_TRUE(parse(c, {"--output_dir", "o", "--do_sample"}).get_bool("do_sample"));
  EXPECT_TRUE(parse(c, {"--do_sample", "--output_dir", "o"}).get_bool("do_sample"));
  EXPECT_FALSE(parse(c, {"--output_dir", "o", "--do_sample", "false"}).get_bool("do_sample"));
  EXPECT_TRUE(parse(c, {"--output_dir", "o", "--do-sample", "True"}).get_bool("do_sample"));
  EXPECT_FALSE(parse(c, {"--output_dir", "o", "--bf16=0"}).get_bool("bf16"));
  EXPECT_NE(error_of(c, {"--output_dir", "o", "--bf16=maybe"}).find("expected true or false, got 'maybe'"),
            std::string::npos);
  // A stray word after a bare bool flag is a positional argument: rejected with a hint.
  std::string err = error_of(c, {"--output_dir", "o", "--bf16", "maybe"});
  EXPECT_NE(err.find("unexpected argument 'maybe'"), std::string::npos) << err;
  EXPECT_NE(err.find("--bf16"), std::string::npos) << err;
}

TEST(Options, Lists) {
  auto c = train_spec();
  auto o = parse(c, {"--output_dir", "o", "--target_modules", "q_proj, v_proj,k_proj", "--layers_to_transform",
                     "[0, 2, 5]"});
  EXPECT_EQ(o.get_string_list("target_modules"), (std::vector<std::string>{"q_proj", "v_proj", "k_proj"}));
  EXPECT_EQ(o.get_int_list("layers_to_transform"), (std::vector<int64_t>{0, 2, 5}));
  o = parse(c, {"--output_dir", "o", "--target_modules", R"(["c_attn", "c_proj"])", "--layers_to_transform=1,3"});
  EXPECT_EQ(o.get_string_list("target_modules"), (std::vector<std::string>{"c_attn", "c_proj"}));
  EXPECT_EQ(o.get_int_list("layers_to_transform"), (std::vector<int64_t>{1, 3}));
  EXPECT_NE(error_of(c, {"--output_dir", "o", "--layers_to_transform", "1,x"}).find("expected an integer, got 'x'"),
            std::string::npos);
  EXPECT_NE(error_of(c, {"--output_dir", "o", "--layers_to_transform", "1,-2"}).find("out of range >= 0"),
            std::string::npos);
  EXPECT_NE(error_of(c, {"--output_dir", "o", "--target_modules", "[\"a\","}).find("JSON"), std::string::npos);
}

TEST(Options, RepeatedListFlagsAppend) {
  auto c = train_spec();
  auto o = parse(c, {"--output_dir", "o", "--target_modules", "q_proj", "--target_modules", "v_proj,k_proj",
                     "--layers_to_transform", "1", "--layers_to_transform", "[4]"});
  EXPECT_EQ(o.get_string_list("target_modules"), (std::vector<std::string>{"q_proj", "v_proj", "k_proj"}));
  EXPECT_EQ(o.get_int_list("layers_to_transform"), (std::vector<int64_t>{1, 4}));
  // A scalar option given twice: the last one wins, as before.
  o = parse(c, {"--output_dir", "a", "--output_dir", "b"});
  EXPECT_EQ(o.get_string("output_dir"), "b");
}

TEST(Options, UnknownKeySuggestsNearest) {
  auto c = train_spec();
  EXPECT_EQ(error_of(c, {"--lerning_rate", "1e-4"}),
            "unknown option 'lerning_rate' for 'llmtune train' (did you mean 'learning_rate'?)");
  // transposition counts as one edit (Damerau)
  EXPECT_NE(error_of(c, {"--lora_aplha", "16"}).find("did you mean 'lora_alpha'?"), std::string::npos);
  EXPECT_NE(error_of(c, {"--max-new-token", "5"}).find("did you mean 'max_new_tokens'?"), std::string::npos);
  EXPECT_NE(error_of(c, {"--confg", "x.yaml"}).find("did you mean 'config'?"), std::string::npos);
  // Nothing plausible: point to --help instead of a wild guess.
  std::string err = error_of(c, {"--zzzzzzzz", "1"});
  EXPECT_NE(err.find("unknown option 'zzzzzzzz'"), std::string::npos);
  EXPECT_EQ(err.find("did you mean"), std::string::npos);
  EXPECT_NE(err.find("--help"), std::string::npos);
}

TEST(Options, EditDistance) {
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("ab", "ba"), 1u);  // transposition
  EXPECT_EQ(edit_distance("lerning_rate", "learning_rate"), 1u);
  EXPECT_EQ(nearest_name("lr", {"r", "learning_rate"}), "");
  EXPECT_EQ(nearest_name("max_new", {"max_new_tokens", "max_steps"}), "max_new_tokens");
}

TEST(Options, BadValuesNameKeyValueAndRange) {
  auto c = train_spec();
  EXPECT_EQ(error_of(c, {"--output_dir", "o", "--top_p", "1.5"}), "option 'top_p': value 1.5 is out of range [0, 1]");
  EXPECT_EQ(error_of(c, {"--output_dir", "o", "--learning_rate", "fast"}),
            "option 'learning_rate': expected a number, got 'fast'");
  EXPECT_EQ(error_of(c, {"--output_dir", "o", "--r", "2.5"}), "option 'r': expected an integer, got '2.5'");
  EXPECT_EQ(error_of(c, {"--output_dir", "o", "--r", "0"}), "option 'r': value 0 is out of range >= 1");
  EXPECT_EQ(error_of(c, {"--output_dir", "o", "--lr_scheduler_type", "cosin"}),
            "option 'lr_scheduler_type': 'cosin' is not one of: linear, cosine, constant, constant_with_warmup "
            "(did you mean 'cosine'?)");
  EXPECT_NE(error_of(c, {"--output_dir", "o", "--learning_rate"}).find("needs a value"), std::string::npos);
  EXPECT_NE(error_of(c, {"--output_dir", "--bf16"}).find("option 'output_dir' needs a value"), std::string::npos);
  EXPECT_NE(error_of(c, {}).find("option 'output_dir' is required"), std::string::npos);
  EXPECT_NE(error_of(c, {"-o", "x"}).find("unknown short option '-o'"), std::string::npos);
}

TEST(Options, Positionals) {
  auto c = train_spec();
  EXPECT_NE(error_of(c, {"--output_dir", "o", "model_dir"}).find("takes no positional arguments"), std::string::npos);

  CommandSpec g{"generate", "Generate text."};
  g.add_positional("model", "model directory");
  g.add_positional("prompt", "prompt text", false);
  g.add_int("max_new_tokens", 20, "tokens");
  auto o = parse(g, {"models/pythia", "--max_new_tokens", "5"});
  EXPECT_EQ(o.positional("model"), "models/pythia");
  EXPECT_FALSE(o.positional("prompt"));
  o = parse(g, {"m", "--", "--not-a-flag"});
  EXPECT_EQ(o.positional("prompt"), "--not-a-flag");
  EXPECT_NE(error_of(g, {"m", "p", "extra"}).find("unexpected extra argument 'extra'"), std::string::npos);
  EXPECT_NE(error_of(g, {"--max_new_tokens", "5"}).find("missing argument MODEL"), std::string::npos);
  EXPECT_EQ(o.to_json()["model"], "m");
}

TEST(Options, YamlConfigOverriddenByFlags) {
  TempDir dir;
  std::string cfg = dir.write("train.yaml",
                              "learning_rate: 2.0e-4\n"
                              "lr-scheduler-type: cosine\n"
                              "target_modules: [q_proj, v_proj]\n"
                              "layers_to_transform: 0,1\n"
                              "bf16: true\n"
                              "output_dir: from_file\n"
                              "save_total_limit: ~\n"
                              "r: 16\n");
  auto o = parse(train_spec(), {"--config", cfg, "--r", "4"});
  EXPECT_DOUBLE_EQ(o.get_float("learning_rate"), 2e-4);
  EXPECT_EQ(o.get_string("lr_scheduler_type"), "cosine");
  EXPECT_EQ(o.get_string_list("target_modules"), (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(o.get_int_list("layers_to_transform"), (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(o.get_bool("bf16"));
  EXPECT_EQ(o.get_string("output_dir"), "from_file");
  EXPECT_EQ(o.get_int("r"), 4);  // the flag wins even though --config came first
  EXPECT_EQ(o.source("learning_rate"), OptionSource::ConfigFile);
  EXPECT_EQ(o.source("r"), OptionSource::CommandLine);
  EXPECT_TRUE(o.was_set("save_total_limit"));
  EXPECT_FALSE(o.has("save_total_limit"));
  // flag before --config still wins
  auto o2 = parse(train_spec(), {"--r=2", "--config=" + cfg});
  EXPECT_EQ(o2.get_int("r"), 2);
}

TEST(Options, JsonConfigAndFileErrors) {
  TempDir dir;
  std::string cfg = dir.write("c.json",
                              R"({"learning_rate": 1e-3, "max_new_tokens": 7, "do_sample": true,
                                  "target_modules": ["c_attn"], "output_dir": "x"})");
  auto o = parse(train_spec(), {"--config", cfg});
  EXPECT_DOUBLE_EQ(o.get_float("learning_rate"), 1e-3);
  EXPECT_EQ(o.get_int("max_new_tokens"), 7);
  EXPECT_TRUE(o.get_bool("do_sample"));
  EXPECT_EQ(o.get_string_list("target_modules"), (std::vector<std::string>{"c_attn"}));

  std::string typo = dir.write("typo.yaml", "output_dir: x\nnum_train_epoch: 2\n");
  EXPECT_EQ(error_of(train_spec(), {"--config", typo}),
            typo + ": unknown option 'num_train_epoch' for 'llmtune train' (did you mean 'num_train_epochs'?)");
  std::string bad = dir.write("bad.yaml", "output_dir: x\ntop_p: 2\n");
  EXPECT_EQ(error_of(train_spec(), {"--config", bad}), bad + ": option 'top_p': value 2 is out of range [0, 1]");
  std::string nested = dir.write("nested.yaml", "lora:\n  r: 8\n");
  EXPECT_NE(error_of(train_spec(), {"--config", nested}).find("nested sections are not supported"), std::string::npos);
  std::string broken = dir.write("broken.json", "{\"r\": ");
  EXPECT_NE(error_of(train_spec(), {"--config", broken}).find("not valid JSON"), std::string::npos);
  std::string txt = dir.write("c.txt", "r: 1");
  EXPECT_NE(error_of(train_spec(), {"--config", txt}).find("unsupported extension"), std::string::npos);
  EXPECT_NE(error_of(train_spec(), {"--config", (dir.path / "missing.yaml").string()}).find("does not exist"),
            std::string::npos);
}

TEST(Options, ToJsonHasEveryResolvedValue) {
  auto o = parse(train_spec(), {"--output_dir", "o", "--target_modules", "a,b", "--bf16"});
  nlohmann::json j = o.to_json();
  EXPECT_EQ(j["output_dir"], "o");
  EXPECT_DOUBLE_EQ(j["learning_rate"].get<double>(), 5e-5);
  EXPECT_EQ(j["max_steps"], -1);
  EXPECT_EQ(j["bf16"], true);
  EXPECT_EQ(j["target_modules"], nlohmann::json::array({"a", "b"}));
  EXPECT_TRUE(j["save_total_limit"].is_null());
  EXPECT_EQ(j.size(), train_spec().options.size());
}

TEST(Options, HelpAndUsage) {
  auto o = parse(train_spec(), {"--help"});
  EXPECT_TRUE(o.help_requested);  // 'required' is not enforced when only help was asked for
  std::string u = usage(train_spec());
  EXPECT_EQ(u.rfind("usage: llmtune train [options]\n", 0), 0u);
  EXPECT_NE(u.find("--learning_rate FLOAT"), std::string::npos);
  EXPECT_NE(u.find("initial learning rate (default: 5e-05; range: >= 0)"), std::string::npos);
  EXPECT_NE(u.find("(default: linear; one of: linear, cosine, constant, constant_with_warmup)"), std::string::npos);
  EXPECT_NE(u.find("where results go (required)"), std::string::npos);
  EXPECT_NE(u.find("--config FILE"), std::string::npos);
}

TEST(Options, RegistrySuggestsCommand) {
  CommandRegistry reg;
  reg.add(train_spec());
  reg.add(CommandSpec{"generate", "Generate text."});
  EXPECT_EQ(reg.get("generate").name, "generate");
  try {
    reg.get("trian");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown command 'trian' (did you mean 'train'?)");
  }
  CommandSpec dup{"x", ""};
  dup.add_int("a", 1, "");
  EXPECT_THROW(dup.add_int("a", 2, ""), std::logic_error);
}
