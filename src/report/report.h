// The training run report: reads what a run wrote into its output_dir and renders one
// self-contained report.html (inline CSS and hand-written SVG plots; no JavaScript, no network).
//
// ---- The contract between the Trainer (writer) and this report (reader) ----
// output_dir/metrics.jsonl — one JSON object per line, appended while the run goes on:
//   {"type":"train","step":int,"epoch":float,"loss":float,"learning_rate":float,"grad_norm":float,
//    "tokens_per_second":float,"peak_rss_bytes":int,"elapsed_seconds":float}
//   {"type":"eval","step":int,"epoch":float,"eval_loss":float,"perplexity":float, ...}
//   {"type":"summary","train_runtime":float,"train_loss":float, ...}   (once, at the end)
//   Reader rules: every field except "type" and "step" may be missing (a plot just has no point
//   there); null counts as missing (nlohmann writes NaN/Inf as null); unknown fields and unknown
//   types are ignored; lines that are not a JSON object (the last line of a run still writing, or a
//   partial line left by a crash that a resumed run appended to) are skipped and counted; blank
//   lines are ignored. A step logged twice (a resumed run re-logs steps after its checkpoint) keeps
//   the LAST line, so the plots show what the finished run did.
// output_dir/run_config.json — the resolved configuration, a flat JSON object (nested values are
//   shown as compact JSON). The title uses the first present key of: model (model,
//   model_name_or_path, base_model), method (method, finetuning_type, peft_type, training_type; else
//   "LoRA" when lora_r/use_lora is set, else "full fine-tune") and dataset (data, dataset,
//   train_file, dataset_path, data_path). Optional: a missing file gives an untitled report.
// output_dir/samples.json — optional: {"prompts":[...],"before":[...],"after":[...]}, strings;
//   "after" (or "before") may be absent or shorter while the run is still going.
// Output: output_dir/report.html, written atomically.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmtune {

struct TrainLogLine {
  int64_t step = 0;
  std::optional<double> epoch, loss, learning_rate, grad_norm, tokens_per_second, peak_rss_bytes,
      elapsed_seconds;
};

struct EvalLogLine {
  int64_t step = 0;
  std::optional<double> epoch, eval_loss, perplexity;
};

struct RunSamples {
  std::vector<std::string> prompts, before, after;
};

struct ReportData {
  std::vector<TrainLogLine> train;  // sorted by step, one line per step
  std::vector<EvalLogLine> eval;    // sorted by step, one line per step
  nlohmann::json summary;           // the summary line's object; null while the run goes on
  nlohmann::json config;            // run_config.json (an object), or null when absent
  std::optional<RunSamples> samples;
  int64_t skipped_lines = 0;        // metrics lines that could not be read (see the contract)
  std::string source_dir;           // shown in the footer; may be empty
};

// Parses metrics.jsonl text into `data` (train/eval/summary/skipped_lines), following the reader
// rules above. Never fails on content: a bad line is skipped and counted.
void parse_metrics_jsonl(std::string_view text, ReportData& data);

// Reads output_dir's metrics.jsonl (required), run_config.json and samples.json (optional).
// Errors (llmtune::Error): the folder or metrics.jsonl is missing; run_config.json / samples.json
// exist but are not valid JSON of the documented shape.
ReportData read_run_folder(const std::string& output_dir);

// The whole report as one HTML document. Each plot is <svg id="plot-ID"> with one
// <circle class="pt"> per logged point; ids: plot-loss, plot-eval-loss, plot-lr, plot-throughput,
// plot-memory. A plot without points shows a "no ... logged" note instead of axes.
std::string render_report_html(const ReportData& data);

// read_run_folder + render_report_html → output_dir/report.html (atomic).
void write_report(const std::string& output_dir);

// --- helpers, public for tests ---
// Round axis ticks covering [lo, hi]: about `target` values k*step, step = {1,2,2.5,5}*10^e,
// from the largest multiple ≤ lo to the smallest ≥ hi. lo == hi is widened around the value.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);
// A tick label with no more decimals than `step` needs ("0.25", "1.5k", "2e-4").
std::string format_tick(double value, double step);
// Escapes & < > " ' for HTML text and attribute values.
std::string html_escape(std::string_view text);

}  // namespace llmtune
