// Progress bar / log lines for long loops. The terminal bar is redrawn in place with '\r'; anything
// that is not a terminal gets only whole lines, so CI logs and redirected output stay readable.
#include "cli/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

namespace llmtune::cli {

namespace {
double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string printf_string(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

Progress::Progress(int64_t total_steps, FILE* out, ProgressMode mode)
    : clock(steady_seconds), total_(total_steps), out_(out) {
  if (mode == ProgressMode::Auto) terminal_ = out_ && isatty(fileno(out_));
  else terminal_ = mode == ProgressMode::Terminal;
  start_time_ = last_time_ = clock();
}

Progress::~Progress() {
  if (terminal_ && drawn_length_ > 0 && out_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

void Progress::update(int64_t step, const Metrics& metrics) {
  double now = clock();
  if (step > last_step_) {
    // Exponential moving average of seconds per step; weight grows with the steps covered so a
    // caller that updates every k steps smooths over the same time horizon.
    double sample = (now - last_time_) / double(step - last_step_);
    if (seconds_per_step_ < 0) {
      seconds_per_step_ = sample;
    } else {
      double alpha = 1.0 - std::pow(0.9, double(step - last_step_));
      seconds_per_step_ += alpha * (sample - seconds_per_step_);
    }
    last_step_ = step;
    last_time_ = now;
  }
  step_ = step;
  if (!metrics.empty()) metrics_ = metrics;
  if (!terminal_ || finished_ || !out_) return;
  bool last = total_ > 0 && step >= total_;
  if (last || now - last_draw_time_ >= min_redraw_seconds) {
    last_draw_time_ = now;
    draw();
  }
}

void Progress::log_line(std::string_view text) {
  if (!out_) return;
  std::string line(text);
  if (!line.empty() && line.back() == '\n') line.pop_back();
  if (terminal_) clear_bar();
  std::fputs(line.c_str(), out_);
  std::fputc('\n', out_);
  if (terminal_ && !finished_ && (step_ > 0 || !metrics_.empty())) draw();
  std::fflush(out_);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!out_) return;
  if (terminal_) {
    draw();
    std::fputc('\n', out_);
    drawn_length_ = 0;
  } else {
    std::string line = "done " + status_text() + "\n";
    std::fputs(line.c_str(), out_);
  }
  std::fflush(out_);
}

double Progress::eta_seconds() const {
  if (total_ <= 0 || seconds_per_step_ < 0) return -1;
  return double(std::max<int64_t>(0, total_ - step_)) * seconds_per_step_;
}

std::string Progress::status_text() const {
  std::string s;
  if (total_ > 0) {
    int pct = int(std::clamp<int64_t>(step_, 0, total_) * 100 / total_);
    s = cat(step_, "/", total_, " ", pct, "%");
  } else {
    s = cat("step ", step_);
  }
  for (const auto& [name, value] : metrics_) s += " | " + format_metric(name, value);
  if (finished_ || (total_ > 0 && step_ >= total_)) s += " | " + format_duration(clock() - start_time_) + " elapsed";
  else if (total_ > 0) s += " | ETA " + format_duration(eta_seconds());
  return s;
}

std::string Progress::bar_line(size_t width) const {
  std::string line;
  if (total_ > 0) {
    int filled = int(std::clamp<int64_t>(step_, 0, total_) * bar_width / total_);
    // Built with append: GCC 12 gives a false -Wrestrict for "literal" + std::string here.
    line.push_back('[');
    line.append(size_t(filled), '#');
    line.append(size_t(bar_width - filled), '-');
    line.append("] ");
  }
  line += status_text();
  // Stay one column short of the edge: writing the last column makes some terminals wrap, and a
  // wrapped line can no longer be redrawn with '\r'.
  if (width > 1 && line.size() > width - 1) line.resize(width - 1);
  return line;
}

void Progress::draw() {
  std::string line = bar_line(columns ? columns : terminal_width(out_));
  std::string text(1, '\r');
  text += line;
  if (line.size() < drawn_length_) text += std::string(drawn_length_ - line.size(), ' ');
  std::fputs(text.c_str(), out_);
  std::fflush(out_);
  drawn_length_ = line.size();
}

void Progress::clear_bar() {
  if (drawn_length_ == 0) return;
  std::string text(1, '\r');
  text.append(drawn_length_, ' ');
  text.push_back('\r');
  std::fputs(text.c_str(), out_);
  drawn_length_ = 0;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "--:--";
  auto total = int64_t(std::llround(seconds));
  int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  char buf[48];
  if (h > 0) std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", (long long)h, (long long)m, (long long)s);
  else std::snprintf(buf, sizeof(buf), "%02lld:%02lld", (long long)m, (long long)s);
  return buf;
}

std::string format_metric(const std::string& name, double value) {
  if (name == "lr" || name == "learning_rate") return name + " " + printf_string("%.1e", value);
  if (ends_with(name, "/s")) return printf_string("%.0f", value) + " " + name;
  if (name == "epoch") return name + " " + printf_string("%.2f", value);
  double a = std::fabs(value);
  if (a != 0 && (a < 1e-3 || a >= 1e5)) return name + " " + printf_string("%.3e", value);
  return name + " " + printf_string("%.4f", value);
}

size_t terminal_width(FILE* out) {
  winsize ws{};
  if (out && ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* cols = std::getenv("COLUMNS")) {
    long c = std::strtol(cols, nullptr, 10);
    if (c > 0) return size_t(c);
  }
  return 80;
}

}  // namespace llmtune::cli
