// `llmtune report OUTPUT_DIR`: rebuilds OUTPUT_DIR/report.html from the run's metrics.jsonl,
// run_config.json and samples.json — also while the run is still going.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "report/report.h"

namespace llmtune::cli {

namespace {

int run(const ResolvedOptions& o) {
  std::optional<std::string> dir = o.positional("output_dir");
  if (!dir) dir = o.get_optional_string("output_dir");
  if (!dir || dir->empty())
    fail("missing OUTPUT_DIR: pass the output_dir of a training run, e.g. `llmtune report runs/my-run`");
  write_report(*dir);
  std::printf("wrote %s\n", (std::filesystem::path(*dir) / "report.html").string().c_str());
  return 0;
}

}  // namespace

Command report_command() {
  CommandSpec s;
  s.name = "report";
  s.summary = "Rebuild report.html (curves, samples, config) in a training output_dir";
  s.add_positional("output_dir", "the output_dir of a training run (holds metrics.jsonl)", /*required=*/false);
  s.add_string("output_dir", std::nullopt, "the same folder, given as an option instead of positionally");
  return {s, run};
}

}  // namespace llmtune::cli
