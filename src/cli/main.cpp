// llmtune entry point: dispatches to the subcommands; every user error ends here as one message.
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <exception>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/train_options.h"
#include "core/error.h"

using namespace llmtune;
using namespace llmtune::cli;

namespace {

std::vector<Command> all_commands() {
  return {train_command(),   generate_command(), eval_command(),   tokenize_command(),
          merge_command(),   info_command(),     convert_command(), report_command(),
          quantize_command(), dpo_command(),   grpo_command(),    ppo_command(),
          classify_command()};
}

void print_overview(FILE* out) {
  std::fprintf(out, "llmtune — fine-tune and run language models on the CPU\n\nusage: llmtune <command> [--key value ...]\n\ncommands:\n");
  for (auto& c : all_commands()) std::fprintf(out, "  %-10s %s\n", c.spec.name.c_str(), c.spec.summary.c_str());
  std::fprintf(out, "\n`llmtune <command> --help` lists a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
      print_overview(argc < 2 ? stderr : stdout);
      return argc < 2 ? 2 : 0;
    }
    std::string name = argv[1];
    auto cmds = all_commands();
    for (auto& c : cmds) {
      if (c.spec.name != name) continue;
      std::vector<std::string> args(argv + 2, argv + argc);
      // `llmtune train` with no arguments runs the main job (README); with options but neither --model nor
      // --config (`llmtune train --max_steps 20`), the main job with those options on top.
      if (name == "train") {
        auto names_one_of = [](const std::string& a, std::initializer_list<const char*> keys) {
          for (const char* k : keys)
            if (a == k || a.rfind(std::string(k) + "=", 0) == 0) return true;
          return false;
        };
        bool chooses = false;
        for (const std::string& a : args) chooses |= names_one_of(a, {"--model", "--config", "--help", "-h"});
        if (!chooses) {
          std::printf("%s: running the main job from %s\n", args.empty() ? "no arguments" : "no --model or --config",
                      default_config_path().c_str());
          args.insert(args.begin(), {"--config", default_config_path()});
        }
      }
      ResolvedOptions o = parse_options(c.spec, args);
      if (o.help_requested) {
        std::printf("%s", usage(c.spec).c_str());
        return 0;
      }
      return c.run(o);
    }
    std::vector<std::string> names;
    for (auto& c : cmds) names.push_back(c.spec.name);
    std::string near = nearest_name(name, names);
    fail("unknown command '", name, "'", near.empty() ? "" : " (did you mean '" + near + "'?)",
         "; run `llmtune --help` for the list");
  } catch (const llmtune::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory (try a smaller batch_size or max_seq_length)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 3;
  }
}
