// Progress reporting for training and generation loops: one redrawn bar line on a terminal,
// plain newline-terminated log lines (no \r, no ANSI codes) when the output is a file or pipe.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmtune::cli {

enum class ProgressMode { Auto, Terminal, Plain };  // Auto: Terminal iff isatty(fileno(out))

// Metrics shown after the counter, in the given order. Formatting by name: "lr"/"learning_rate" in
// 1.9e-04 style, names ending in "/s" as "1234 tok/s", "epoch" with 2 decimals, others with 4.
using Metrics = std::vector<std::pair<std::string, double>>;

struct Progress {
  Progress(int64_t total_steps, FILE* out = stderr, ProgressMode mode = ProgressMode::Auto);
  ~Progress();  // ends a drawn bar line (no summary: the loop may have stopped on an error)
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Records that `step` of total_steps are done. Terminal: redraws the bar (at most every
  // min_redraw_seconds, always on the last step). Plain: prints nothing; loops log via log_line().
  void update(int64_t step, const Metrics& metrics = {});
  // Prints one full line (a log event) without corrupting the bar: the bar is cleared, the line
  // printed and the bar drawn again below it.
  void log_line(std::string_view text);
  // Final state: Terminal ends the bar line; Plain prints one summary line. Idempotent.
  void finish();

  // "120/500 24% | loss 2.3412 | lr 1.9e-04 | 1234 tok/s | ETA 03:12" — the bar without the
  // [####----] part; usable in the caller's own log lines.
  std::string status_text() const;
  // The full terminal line, cut to `width` columns.
  std::string bar_line(size_t width) const;
  // Estimated seconds to finish from the smoothed time per step; negative when unknown.
  double eta_seconds() const;
  bool terminal() const { return terminal_; }

  double min_redraw_seconds = 0.1;  // throttle for terminal redraws (0 = redraw on every update)
  int bar_width = 20;
  size_t columns = 0;               // line width limit; 0 = ask the terminal (terminal_width)
  std::function<double()> clock;    // seconds, monotonic; replaceable for tests

 private:
  void draw();
  void clear_bar();

  int64_t total_ = 0;
  FILE* out_ = nullptr;
  bool terminal_ = false;
  bool finished_ = false;
  int64_t step_ = 0;
  Metrics metrics_;
  double start_time_ = 0, last_time_ = 0, last_draw_time_ = -1e300;
  int64_t last_step_ = 0;
  double seconds_per_step_ = -1;  // exponential moving average; < 0 until the first measured step
  size_t drawn_length_ = 0;       // characters of the bar currently on screen (0 = none)
};

// Durations: "03:12" below an hour, "1:02:05" from an hour; "--:--" when unknown (negative/NaN).
std::string format_duration(double seconds);
// One metric as shown in the bar and summary ("loss 2.3412", "lr 1.9e-04", "1234 tok/s").
std::string format_metric(const std::string& name, double value);
// Columns of the terminal behind `out` (TIOCGWINSZ, then $COLUMNS, then 80).
size_t terminal_width(FILE* out);

}  // namespace llmtune::cli
