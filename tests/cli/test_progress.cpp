// Tests of the progress reporter: no '\r'/ANSI when not a terminal, '\r' redraws when forced, ETA text.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/progress.h"

using namespace llmtune::cli;

namespace {
std::string read_all(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  return s;
}

// A fake clock advancing 2 s per call to update(): the ETA becomes predictable.
struct FakeClock {
  double t = 0;
  double operator()() const { return t; }
};
}  // namespace

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(192), "03:12");
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(59.6), "01:00");
  EXPECT_EQ(format_duration(360000), "100:00:00");
  EXPECT_EQ(format_duration(-1), "--:--");
  EXPECT_EQ(format_duration(std::nan("")), "--:--");
}

TEST(Progress, FormatMetric) {
  EXPECT_EQ(format_metric("loss", 2.34123), "loss 2.3412");
  EXPECT_EQ(format_metric("lr", 1.9e-4), "lr 1.9e-04");
  EXPECT_EQ(format_metric("tok/s", 1234.4), "1234 tok/s");
  EXPECT_EQ(format_metric("grad_norm", 1e-5), "grad_norm 1.000e-05");
}

TEST(Progress, PlainOutputHasNoCarriageReturnOrAnsi) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p(50, f);  // Auto on a file: plain
    EXPECT_FALSE(p.terminal());
    for (int s = 1; s <= 50; ++s) {
      p.update(s, {{"loss", 3.0 - s * 0.01}, {"lr", 2e-4}});
      if (s % 10 == 0) p.log_line("{'loss': 2.9, 'step': " + std::to_string(s) + "}");
    }
    p.finish();
  }
  std::string out = read_all(f);
  std::fclose(f);
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  // 5 log lines + one summary, each a whole line.
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 6);
  EXPECT_NE(out.find("done 50/50 100%"), std::string::npos);
  EXPECT_EQ(out.back(), '\n');
}

TEST(Progress, PlainOnAPipe) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  FILE* w = fdopen(fds[1], "w");
  {
    Progress p(10, w);
    EXPECT_FALSE(p.terminal());
    for (int s = 1; s <= 10; ++s) p.update(s, {{"loss", 1.0}});
    p.log_line("hello");
    p.finish();
  }
  std::fclose(w);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, size_t(n));
  close(fds[0]);
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_EQ(out.find('\x1b'), std::string::npos);
  EXPECT_EQ(out.rfind("hello\n", 0), 0u);
}

TEST(Progress, ForcedTerminalRedrawsWithCarriageReturn) {
  FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  FakeClock clock;
  {
    Progress p(500, f, ProgressMode::Terminal);
    p.clock = [&] { return clock.t; };
    p.min_redraw_seconds = 0;
    p.columns = 200;
    for (int s = 1; s <= 5; ++s) {
      clock.t += 2;
      p.update(s * 24, {{"loss", 2.3412}, {"lr", 1.9e-4}, {"tok/s", 1234}});
    }
    p.log_line("evaluation done");
  }
  std::string out = read_all(f);
  std::fclose(f);
  EXPECT_GE(std::count(out.begin(), out.end(), '\r'), 5);
  EXPECT_NE(out.find("evaluation done\n"), std::string::npos);
  // The bar drawn after the log line carries the last state.
  EXPECT_NE(out.find("] 120/500 24% | loss 2.3412 | lr 1.9e-04 | 1234 tok/s | ETA "), std::string::npos);
}

TEST(Progress, EtaFromSmoothedRate) {
  FakeClock clock;
  Progress p(100, nullptr, ProgressMode::Plain);
  p.clock = [&] { return clock.t; };
  for (int s = 1; s <= 10; ++s) {
    clock.t += 0.5;  // constant 0.5 s per step
    p.update(s);
  }
  EXPECT_NEAR(p.eta_seconds(), 90 * 0.5, 1e-9);
  // One slow step moves the estimate only part of the way (smoothing).
  clock.t += 5.0;
  p.update(11);
  EXPECT_GT(p.eta_seconds(), 89 * 0.5);
  EXPECT_LT(p.eta_seconds(), 89 * 5.0 * 0.5);
  EXPECT_NE(p.status_text().find("11/100 11% | ETA "), std::string::npos);
}

TEST(Progress, BarLineIsWidthLimited) {
  FakeClock clock;
  Progress p(500, nullptr, ProgressMode::Terminal);
  p.clock = [&] { return clock.t; };
  clock.t = 10;
  p.update(120, {{"loss", 2.3412}, {"lr", 1.9e-4}, {"tok/s", 1234}});
  std::string wide = p.bar_line(200);
  EXPECT_EQ(wide.rfind("[####----------------] 120/500 24% | loss 2.3412", 0), 0u);
  EXPECT_EQ(p.bar_line(40).size(), 39u);
}
