// The run report: metrics parsing rules, plot point counts, escaping, tick generation, and the
// page as headless Chromium renders it (screenshot + DOM).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "io/atomic_file.h"
#include "report/report.h"

using namespace llmtune;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp dir, removed afterwards.
struct TempDir {
  std::string path;
  TempDir() {
    static int counter = 0;
    path = (fs::temp_directory_path() /
            ("llmtune_report_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
               .string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

size_t count_of(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + needle.size())) n++;
  return n;
}

// The markup of <svg id="ID" ...> ... </svg>, or "" when there is no such plot.
std::string svg_of(const std::string& html, const std::string& id) {
  size_t start = html.find("id=\"" + id + "\"");
  if (start == std::string::npos) return "";
  size_t end = html.find("</svg>", start);
  return html.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

size_t points_in(const std::string& html, const std::string& id) { return count_of(svg_of(html, id), "class=\"pt\""); }

// 40 train steps (learning_rate missing every 5th step, tokens/s missing on step 1, memory only
// every other step), eval every 10 steps with losses 2.0, 1.8, 1.6, 1.7, a summary, and — when
// `truncated` — a half-written last line.
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string synthetic_metrics(bool truncated, bool with_summary = true) {
  std::string text;
  for (int step = 1; step <= 40; ++step) {
    std::string line = "{\"type\":\"train\",\"step\":" + std::to_string(step) + ",\"epoch\":" + std::to_string(step / 20.0) +
                       ",\"loss\":" + std::to_string(3.0 * std::exp(-step / 15.0) + 0.8 + 0.05 * std::sin(step)) +
                       ",\"grad_norm\":" + std::to_string(1.0 + 0.1 * (step % 3));
    if (step % 5) line += ",\"learning_rate\":" + num(2e-4 * std::min(1.0, step / 8.0) * (1 - step / 41.0));
    if (step > 1) line += ",\"tokens_per_second\":" + std::to_string(2400 + 60 * std::sin(step * 0.7) + step);
    if (step % 2 == 0) line += ",\"peak_rss_bytes\":" + std::to_string((int64_t)(600 + step * 3) * 1024 * 1024);
    line += ",\"elapsed_seconds\":" + std::to_string(step * 2.5) + ",\"some_future_field\":[1,2]}\n";
    text += line;
    if (step % 10 == 0) {
      const double losses[] = {2.0, 1.8, 1.6, 1.7};
      text += "{\"type\":\"eval\",\"step\":" + std::to_string(step) + ",\"epoch\":" + std::to_string(step / 20.0) +
              ",\"eval_loss\":" + std::to_string(losses[step / 10 - 1]) + ",\"eval_runtime\":0.5}\n";
    }
  }
  if (with_summary) text += "{\"type\":\"summary\",\"train_runtime\":101.5,\"train_loss\":1.4321,\"global_step\":40}\n";
  if (truncated) text += "{\"type\":\"train\",\"step\":41,\"loss\":0.9";
  return text;
}

const char* kConfig = R"({"model":"/work/shared/models/pythia-70m","method":"lora","data":"/data/tiny <stories>.jsonl",
  "learning_rate":0.0002,"max_steps":40,"lora_r":8,"lora_target_modules":["query_key_value"],"seed":42,"warmup_steps":null,
  "output_dir":"runs/pythia-lora","per_device_train_batch_size":4,"bf16":true})";

const char* kSamples = R"({"prompts":["Once upon a time","Write <script>alert('x')</script> & more"],
  "before":["Once upon a time the the the the", "<script>alert(1)</script>"],
  "after":["Once upon a time, a little fox found a key.\nIt opened a door."]})";

void write_run(const std::string& dir, const std::string& metrics, bool with_samples = true) {
  write_file_atomic(dir + "/metrics.jsonl", metrics);
  write_file_atomic(dir + "/run_config.json", kConfig);
  if (with_samples) write_file_atomic(dir + "/samples.json", kSamples);
}

ReportData synthetic_data(bool truncated = false) {
  ReportData d;
  parse_metrics_jsonl(synthetic_metrics(truncated), d);
  d.config = nlohmann::json::parse(kConfig);
  d.samples = RunSamples{{"Once upon a time", "Write <script>alert('x')</script> & more"},
                         {"Once upon a time the the the the", "<script>alert(1)</script>"},
                         {"Once upon a time, a little fox found a key.\nIt opened a door."}};
  return d;
}

bool is_round_step(double step) {
  double mantissa = step / std::pow(10.0, std::floor(std::log10(step)));
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (std::fabs(mantissa - m) < 1e-9) return true;
  return false;
}

}  // namespace

// ------------------------------------------------------------------ parsing

TEST(ReportParse, ReadsTrainEvalSummaryAndIgnoresUnknownFields) {
  ReportData d;
  parse_metrics_jsonl(synthetic_metrics(false), d);
  ASSERT_EQ(d.train.size(), 40u);
  ASSERT_EQ(d.eval.size(), 4u);
  EXPECT_EQ(d.skipped_lines, 0);
  EXPECT_EQ(d.train[0].step, 1);
  EXPECT_FALSE(d.train[0].tokens_per_second.has_value());
  EXPECT_FALSE(d.train[4].learning_rate.has_value());  // step 5
  EXPECT_TRUE(d.train[5].learning_rate.has_value());
  EXPECT_NEAR(*d.eval[2].eval_loss, 1.6, 1e-9);
  EXPECT_NEAR(*d.eval[2].perplexity, std::exp(1.6), 1e-9);  // derived when not logged
  ASSERT_TRUE(d.summary.is_object());
  EXPECT_DOUBLE_EQ(d.summary["train_runtime"].get<double>(), 101.5);
}

TEST(ReportParse, TruncatedLastLineIsSkippedAndCounted) {
  ReportData d;
  parse_metrics_jsonl(synthetic_metrics(true), d);
  EXPECT_EQ(d.train.size(), 40u);  // step 41 is half-written
  EXPECT_EQ(d.skipped_lines, 1);
  // A crash left a partial line that a resumed run appended to: also skipped, the rest is read.
  ReportData r;
  parse_metrics_jsonl("{\"type\":\"train\",\"step\":1,\"loss\":2}\n{\"type\":\"train\",\"st"
                      "{\"type\":\"train\",\"step\":2,\"loss\":1.5}\r\n\n   \n[1,2]\n",
                      r);
  EXPECT_EQ(r.train.size(), 1u);
  EXPECT_EQ(r.skipped_lines, 2);  // the joined line and the non-object
}

TEST(ReportParse, MissingFieldsNullsDuplicatesAndUntypedLines) {
  ReportData d;
  parse_metrics_jsonl(R"({"type":"train","step":3,"loss":2.5}
{"type":"train","step":1,"loss":null,"learning_rate":1e-4}
{"type":"train","loss":9}
{"type":"train","step":3,"loss":2.0}
{"type":"checkpoint","step":3,"path":"x"}
{"loss":1.25,"step":4}
{"eval_loss":1.1,"step":4}
)",
                      d);
  ASSERT_EQ(d.train.size(), 3u);  // steps 1, 3, 4; sorted; the stepless line is unusable
  EXPECT_EQ(d.train[0].step, 1);
  EXPECT_FALSE(d.train[0].loss.has_value());  // null = missing
  EXPECT_DOUBLE_EQ(*d.train[1].loss, 2.0);    // a re-logged step keeps the last line
  EXPECT_DOUBLE_EQ(*d.train[2].loss, 1.25);   // untyped line with "loss" = train
  ASSERT_EQ(d.eval.size(), 1u);
  EXPECT_EQ(d.skipped_lines, 1);
  EXPECT_TRUE(d.summary.is_null());
}

// ------------------------------------------------------------------ ticks

TEST(ReportTicks, NiceTicksAreRoundAndCoverTheRange) {
  EXPECT_EQ(nice_ticks(0, 100, 5), (std::vector<double>{0, 20, 40, 60, 80, 100}));
  EXPECT_EQ(nice_ticks(0.13, 2.87, 5), (std::vector<double>{0, 0.5, 1, 1.5, 2, 2.5, 3}));
  const std::vector<std::pair<double, double>> ranges = {
      {0.13, 2.87}, {1.2e-5, 2e-4}, {0, 12345}, {7, 7}, {-3.3, 4.1}, {1, 40}, {612, 731}, {0.8123, 0.8125}, {0, 0}};
  for (auto [lo, hi] : ranges) {
    std::vector<double> t = nice_ticks(lo, hi, 5);
    SCOPED_TRACE(testing::Message() << "range " << lo << ".." << hi);
    ASSERT_GE(t.size(), 3u);
    EXPECT_LE(t.size(), 9u);
    EXPECT_LE(t.front(), lo);
    EXPECT_GE(t.back(), hi);
    const double step = t[1] - t[0];
    EXPECT_TRUE(is_round_step(step)) << step;
    for (size_t i = 0; i < t.size(); ++i) {
      EXPECT_NEAR(t[i], t[0] + i * step, step * 1e-9);
      EXPECT_NEAR(t[i] / step, std::round(t[i] / step), 1e-6);  // multiples of the step
    }
  }
  // No binary noise in the values themselves: 0.1 + 0.2 style sums are rounded away.
  for (double v : nice_ticks(0.1, 0.7, 6)) EXPECT_EQ(format_tick(v, 0.1).size() <= 3, true) << v;
}

TEST(ReportTicks, TickLabelsAreShort) {
  EXPECT_EQ(format_tick(0, 5), "0");
  EXPECT_EQ(format_tick(0.25, 0.25), "0.25");
  EXPECT_EQ(format_tick(1.5, 0.5), "1.5");
  EXPECT_EQ(format_tick(2, 0.5), "2");
  EXPECT_EQ(format_tick(120, 20), "120");
  EXPECT_EQ(format_tick(2500, 500), "2.5k");
  EXPECT_EQ(format_tick(3000, 500), "3k");
  EXPECT_EQ(format_tick(4e6, 1e6), "4M");
  EXPECT_EQ(format_tick(5e-5, 5e-5), "5e-5");
  EXPECT_EQ(format_tick(1.5e-4, 5e-5), "1.5e-4");
  EXPECT_EQ(format_tick(2e-4, 5e-5), "2e-4");
  EXPECT_EQ(format_tick(-1, 0.5), "-1");
}

// ------------------------------------------------------------------ rendering

TEST(ReportRender, EachPlotHasOnePointPerLoggedStep) {
  const std::string html = render_report_html(synthetic_data());
  EXPECT_EQ(points_in(html, "plot-loss"), 40u);
  EXPECT_EQ(points_in(html, "plot-eval-loss"), 4u);
  EXPECT_EQ(points_in(html, "plot-lr"), 32u);          // every 5th step has none
  EXPECT_EQ(points_in(html, "plot-throughput"), 39u);  // step 1 has none
  EXPECT_EQ(points_in(html, "plot-memory"), 20u);      // even steps only
  EXPECT_EQ(count_of(html, "class=\"pt\""), 40u + 4 + 32 + 39 + 20);  // no stray points elsewhere
  EXPECT_EQ(count_of(html, "<svg"), 5u);
  EXPECT_EQ(count_of(html, "<polyline"), 5u);

  // A long run: the training loss gets a smoothed line on top, yet every raw point is still drawn.
  std::string long_run;
  for (int step = 1; step <= 300; ++step)
    long_run += "{\"type\":\"train\",\"step\":" + std::to_string(step) + ",\"loss\":" + num(2 + std::sin(step)) + "}\n";
  ReportData d;
  parse_metrics_jsonl(long_run, d);
  const std::string long_html = render_report_html(d);
  EXPECT_EQ(points_in(long_html, "plot-loss"), 300u);
  EXPECT_EQ(count_of(svg_of(long_html, "plot-loss"), "<polyline"), 2u);
  EXPECT_NE(long_html.find("smoothed (EMA)"), std::string::npos);
}

TEST(ReportRender, HeadlineNumbersAndTitle) {
  const std::string html = render_report_html(synthetic_data());
  EXPECT_NE(html.find("<h1>pythia-70m</h1>"), std::string::npos);
  EXPECT_NE(html.find(">LoRA<"), std::string::npos);
  EXPECT_NE(html.find("dataset: tiny &lt;stories&gt;.jsonl"), std::string::npos);
  EXPECT_NE(html.find("2.0000 <span class=\"arrow\">→</span> 1.7000"), std::string::npos);  // first → last eval
  EXPECT_NE(html.find("−0.3000 (−15.0%)"), std::string::npos);
  EXPECT_NE(html.find(">1.6000<"), std::string::npos);  // best eval loss
  EXPECT_NE(html.find("step 30 · perplexity 4.953"), std::string::npos);
  EXPECT_NE(html.find("1m 42s"), std::string::npos);  // summary train_runtime 101.5 s
  EXPECT_NE(html.find("720 MiB"), std::string::npos);  // (600 + 40*3) MiB at step 40
  EXPECT_NE(html.find("of 40 · epoch 2.00"), std::string::npos);
  EXPECT_NE(html.find("finished"), std::string::npos);
}

TEST(ReportRender, SamplesAndConfigAreEscaped) {
  const std::string html = render_report_html(synthetic_data());
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<SCRIPT"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("Write &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"), std::string::npos);
  EXPECT_NE(html.find("/data/tiny &lt;stories&gt;.jsonl"), std::string::npos);  // config table
  EXPECT_NE(html.find("[&quot;query_key_value&quot;]"), std::string::npos);
  EXPECT_NE(html.find("a key.\nIt opened"), std::string::npos);  // newlines kept for pre-wrap
  EXPECT_NE(html.find("not generated"), std::string::npos);     // the second prompt has no "after"
  EXPECT_EQ(html_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
}

TEST(ReportRender, SelfContainedWithoutNetworkOrScript) {
  const std::string html = render_report_html(synthetic_data());
  EXPECT_EQ(html.find("http"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("@font-face"), std::string::npos);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
}

TEST(ReportRender, EmptyDataSaysWhatIsMissing) {
  ReportData d;
  parse_metrics_jsonl("{\"type\":\"train\",\"step\":1,\"loss\":2.5}\n", d);
  std::string html = render_report_html(d);
  EXPECT_EQ(points_in(html, "plot-loss"), 1u);
  EXPECT_EQ(points_in(html, "plot-eval-loss"), 0u);
  EXPECT_NE(svg_of(html, "plot-eval-loss").find("no evaluation logged"), std::string::npos);
  EXPECT_NE(svg_of(html, "plot-lr").find("no learning rate logged"), std::string::npos);
  EXPECT_NE(html.find("in progress"), std::string::npos);  // no summary line yet
  EXPECT_NE(html.find("No samples.json"), std::string::npos);
  EXPECT_NE(html.find("No run_config.json"), std::string::npos);

  ReportData nothing;  // an empty metrics file renders too
  html = render_report_html(nothing);
  for (const char* id : {"plot-loss", "plot-eval-loss", "plot-lr", "plot-throughput", "plot-memory"}) {
    EXPECT_FALSE(svg_of(html, id).empty()) << id;
    EXPECT_EQ(points_in(html, id), 0u) << id;
  }
  EXPECT_NE(html.find("Training run"), std::string::npos);
  for (const std::string& s : {std::string("nan"), std::string("inf")}) EXPECT_EQ(html.find(">" + s), std::string::npos);
}

// ------------------------------------------------------------------ the run folder

TEST(ReportFolder, WritesReportHtmlAndNamesMissingFiles) {
  TempDir dir;
  write_run(dir.path, synthetic_metrics(true));
  write_report(dir.path);
  const std::string html = read_file(dir.file("report.html"));
  EXPECT_EQ(points_in(html, "plot-loss"), 40u);
  EXPECT_NE(html.find("1 line of metrics.jsonl could not be read"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;"), std::string::npos);
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);  // atomic write left no temp file

  EXPECT_NE(error_of([&] { write_report(dir.file("nope")); }).find("does not exist"), std::string::npos);
  TempDir empty;
  std::string e = error_of([&] { write_report(empty.path); });
  EXPECT_NE(e.find("metrics.jsonl: not found"), std::string::npos) << e;

  write_file_atomic(dir.file("samples.json"), R"({"prompts":["a"],"after":[1]})");
  e = error_of([&] { write_report(dir.path); });
  EXPECT_NE(e.find("samples.json: field 'after'[0] must be a string"), std::string::npos) << e;
  write_file_atomic(dir.file("samples.json"), R"({"prompts":["a"]})");
  write_file_atomic(dir.file("run_config.json"), "{\"model\": ");
  e = error_of([&] { write_report(dir.path); });
  EXPECT_NE(e.find("run_config.json: invalid JSON"), std::string::npos) << e;
}

// ------------------------------------------------------------------ headless Chromium

namespace {

std::string find_chromium() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

std::string chromium_command(const std::string& chromium, const std::string& headless, const std::string& profile) {
  return "timeout 60 " + chromium + " " + headless +
         " --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
         " --disable-component-update --disable-sync --hide-scrollbars --user-data-dir='" + profile + "'";
}

// Screenshot of `page` (an absolute path) at 1280x2000; tries --headless, then --headless=new.
void screenshot(const std::string& chromium, const std::string& page, const std::string& png, const std::string& tmp) {
  std::string logs;
  for (const char* headless : {"--headless", "--headless=new"}) {
    std::string cmd = chromium_command(chromium, headless, tmp + "/profile-shot-" + fs::path(png).stem().string()) +
                      " --screenshot='" + png + "' --window-size=1280,2000 'file://" + page + "' >'" + tmp +
                      "/chromium.log' 2>&1";
    int rc = std::system(cmd.c_str());
    if (fs::exists(png) && fs::file_size(png) > 0) return;
    logs += std::string("chromium ") + headless + " exited " + std::to_string(rc) + " without a screenshot; log:\n" +
            read_file(tmp + "/chromium.log") + "\n";
  }
  ADD_FAILURE() << logs;
}

uint32_t big_endian32(const std::string& b, size_t at) {
  return (uint32_t)(uint8_t)b[at] << 24 | (uint32_t)(uint8_t)b[at + 1] << 16 | (uint32_t)(uint8_t)b[at + 2] << 8 |
         (uint32_t)(uint8_t)b[at + 3];
}

struct PngFacts {
  bool signature_ok = false;
  uint32_t width = 0, height = 0;
  uint64_t idat_bytes = 0;
};

// Walks the PNG chunk list: signature, IHDR size and the total compressed image data.
PngFacts png_facts(const std::string& b) {
  PngFacts f;
  f.signature_ok = b.size() > 33 && b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
  if (!f.signature_ok) return f;
  f.width = big_endian32(b, 16);
  f.height = big_endian32(b, 20);
  for (size_t at = 8; at + 8 <= b.size();) {
    uint32_t len = big_endian32(b, at);
    if (b.compare(at + 4, 4, "IDAT") == 0) f.idat_bytes += len;
    at += 12 + (size_t)len;
  }
  return f;
}

}  // namespace

TEST(ReportChromium, RendersInHeadlessChromium) {
  const std::string chromium = find_chromium();
  ASSERT_FALSE(chromium.empty()) << "chromium is not installed (looked for /usr/bin/chromium): run "
                                    "scripts/install-deps.sh, which installs the Debian package 'chromium'";
  const auto t0 = std::chrono::steady_clock::now();
  TempDir dir;
  write_run(dir.path, synthetic_metrics(false));
  write_report(dir.path);
  const std::string report = fs::absolute(dir.file("report.html")).string();

  // 1. The DOM as Chromium parsed it: every plot has its points, the escaped <script> stayed text.
  const std::string dump_cmd = chromium_command(chromium, "--headless", dir.path + "/profile-dom") +
                               " --dump-dom 'file://" + report + "' 2>'" + dir.path + "/dom.log'";
  std::string dom;
  if (FILE* p = ::popen(dump_cmd.c_str(), "r")) {
    char buf[65536];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) dom.append(buf, n);
    int rc = ::pclose(p);
    EXPECT_EQ(rc, 0) << read_file(dir.path + "/dom.log");
  }
  ASSERT_FALSE(dom.empty()) << "chromium --dump-dom printed nothing; log:\n" << read_file(dir.path + "/dom.log");
  EXPECT_EQ(points_in(dom, "plot-loss"), 40u);
  EXPECT_EQ(points_in(dom, "plot-eval-loss"), 4u);
  EXPECT_EQ(points_in(dom, "plot-lr"), 32u);
  EXPECT_EQ(points_in(dom, "plot-throughput"), 39u);
  EXPECT_EQ(points_in(dom, "plot-memory"), 20u);
  EXPECT_EQ(dom.find("<script"), std::string::npos);
  EXPECT_NE(dom.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);

  // 2. A screenshot that is clearly not a blank page: compare with a blank page's screenshot.
  const std::string blank = dir.file("blank.html");
  write_file_atomic(blank, "<!DOCTYPE html><html><body></body></html>\n");
  screenshot(chromium, report, dir.file("shot.png"), dir.path);
  screenshot(chromium, fs::absolute(blank).string(), dir.file("blank.png"), dir.path);
  ASSERT_TRUE(fs::exists(dir.file("shot.png")));
  ASSERT_TRUE(fs::exists(dir.file("blank.png")));
  const PngFacts shot = png_facts(read_file(dir.file("shot.png"))), empty = png_facts(read_file(dir.file("blank.png")));
  ASSERT_TRUE(shot.signature_ok);
  ASSERT_TRUE(empty.signature_ok);
  EXPECT_EQ(shot.width, 1280u);
  EXPECT_EQ(shot.height, 2000u);
  EXPECT_GT(shot.idat_bytes, 40000u);
  EXPECT_GT(shot.idat_bytes, 8 * empty.idat_bytes) << "report " << shot.idat_bytes << " bytes vs blank " << empty.idat_bytes;
  if (const char* keep = std::getenv("LLMTUNE_REPORT_SHOT")) fs::copy_file(dir.file("shot.png"), keep, fs::copy_options::overwrite_existing);
  if (const char* keep = std::getenv("LLMTUNE_REPORT_HTML")) fs::copy_file(report, keep, fs::copy_options::overwrite_existing);

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 60) << "three Chromium starts should take well under a minute";
}
