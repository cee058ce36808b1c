// Renders a training run's metrics, config and samples as one self-contained HTML page with
// hand-written SVG plots (see report.h for the file contract it reads).
#include "report/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace llmtune {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------- number formatting

std::string printf_string(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string printf_string(const char* format, int decimals, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, decimals, v);
  return buf;
}

// "2.500" → "2.5", "3.000" → "3"; leaves integers and exponents alone.
std::string strip_trailing_zeros(std::string s) {
  size_t e = s.find_first_of("eE");
  std::string exponent = e == std::string::npos ? "" : s.substr(e);
  std::string mantissa = e == std::string::npos ? s : s.substr(0, e);
  if (mantissa.find('.') != std::string::npos) {
    while (!mantissa.empty() && mantissa.back() == '0') mantissa.pop_back();
    if (!mantissa.empty() && mantissa.back() == '.') mantissa.pop_back();
  }
  return mantissa + exponent;
}

// "1.50e-04" → "1.5e-4": the exponent without its padding zeros and '+'.
std::string compact_scientific(double v, int decimals) {
  std::string s = strip_trailing_zeros(printf_string("%.*e", decimals, v));
  size_t e = s.find('e');
  if (e == std::string::npos) return s;
  std::string mantissa = s.substr(0, e), exponent = s.substr(e + 1);
  bool negative = !exponent.empty() && exponent[0] == '-';
  size_t digits = exponent.find_first_not_of("+-0");
  exponent = digits == std::string::npos ? "0" : exponent.substr(digits);
  return mantissa + "e" + (negative ? "-" : "") + exponent;
}

// Decimals needed to write multiples of `step` exactly (0.25 → 2, 5 → 0).
int decimals_for(double step) {
  step = std::fabs(step);
  for (int d = 0; d < 12; ++d) {
    double scaled = step * std::pow(10.0, d);
    if (std::fabs(scaled - std::round(scaled)) < 1e-6 * std::max(1.0, scaled)) return d;
  }
  return 12;
}

std::string with_thousands(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

// A value for prose and the stat cards: 4 significant digits, scientific only for tiny numbers.
std::string format_value(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "NaN" : (v > 0 ? "inf" : "-inf");
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a < 1e-3) return compact_scientific(v, 2);
  if (a >= 1e4) return with_thousands((int64_t)std::llround(v));
  return strip_trailing_zeros(printf_string("%.4g", v));
}

std::string format_loss(double v) {
  if (std::isfinite(v) && std::fabs(v) < 1000) return printf_string("%.4f", v);
  return format_value(v);
}

std::string format_bytes(double bytes) {
  const double mib = bytes / (1024.0 * 1024.0);
  if (mib >= 1024) return printf_string("%.2f GiB", mib / 1024);
  if (mib >= 100) return printf_string("%.0f MiB", mib);
  return printf_string("%.1f MiB", mib);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "—";
  if (seconds < 60) return printf_string("%.1f s", seconds);
  int64_t s = (int64_t)std::llround(seconds);
  char buf[64];
  if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm %02llds", (long long)(s / 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lldh %02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  return buf;
}

std::string format_throughput(double v) {
  if (v >= 100) return with_thousands((int64_t)std::llround(v));
  return printf_string("%.1f", v);
}

// ---------------------------------------------------------------- metrics parsing

std::optional<double> number_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  double v = it->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

// The line's kind: its "type", or — for logs without one (HF log_history style) — guessed
// from the fields it carries.
std::string line_type(const json& j) {
  auto it = j.find("type");
  if (it != j.end()) return it->is_string() ? it->get<std::string>() : "";
  if (j.contains("train_runtime")) return "summary";
  if (j.contains("eval_loss")) return "eval";
  if (j.contains("loss")) return "train";
  return "";
}

std::optional<int64_t> step_field(const json& j) {
  auto it = j.find("step");
  if (it == j.end() || !it->is_number()) return std::nullopt;
  double v = it->get<double>();
  if (!std::isfinite(v) || v != std::floor(v)) return std::nullopt;
  return (int64_t)v;
}

// ---------------------------------------------------------------- run folder

std::string config_string(const json& config, const std::vector<const char*>& keys) {
  if (!config.is_object()) return "";
  for (const char* k : keys) {
    auto it = config.find(k);
    if (it == config.end() || it->is_null()) continue;
    if (it->is_string()) {
      if (!it->get<std::string>().empty()) return it->get<std::string>();
    } else {
      return it->dump();
    }
  }
  return "";
}

bool config_truthy(const json& config, const char* key) {
  if (!config.is_object()) return false;
  auto it = config.find(key);
  if (it == config.end()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_number()) return it->get<double>() > 0;
  if (it->is_string()) return !it->get<std::string>().empty();
  return false;
}

// "runs/models/pythia-70m/" → "pythia-70m": the part of a path people recognise.
std::string last_path_part(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct RunTitle {
  std::string model, method, dataset;
  std::string model_path, dataset_path;
};

RunTitle run_title(const json& config) {
  RunTitle t;
  t.model_path = config_string(config, {"model", "model_name_or_path", "base_model"});
  t.dataset_path = config_string(config, {"data", "dataset", "train_file", "dataset_path", "data_path"});
  t.model = last_path_part(t.model_path);
  t.dataset = last_path_part(t.dataset_path);
  t.method = config_string(config, {"method", "finetuning_type", "peft_type", "training_type"});
  static const std::map<std::string, std::string> display = {
      {"lora", "LoRA"}, {"qlora", "QLoRA"}, {"dora", "DoRA"}, {"full", "full fine-tune"}, {"freeze", "freeze-tuning"},
      {"dpo", "DPO"}, {"ppo", "PPO"}, {"grpo", "GRPO"}, {"sft", "SFT"}};
  if (auto it = display.find(t.method); it != display.end()) t.method = it->second;
  if (t.method.empty() && config.is_object())
    t.method = config_truthy(config, "use_lora") || config_truthy(config, "lora_r") ? "LoRA" : "full fine-tune";
  return t;
}

std::vector<std::string> string_array(const json& samples, const char* key, const std::string& path) {
  std::vector<std::string> out;
  auto it = samples.find(key);
  if (it == samples.end() || it->is_null()) return out;
  if (!it->is_array()) fail(path, ": field '", key, "' must be a list of strings");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& v = (*it)[i];
    if (!v.is_string()) fail(path, ": field '", key, "'[", i, "] must be a string, got ", v.type_name());
    out.push_back(v.get<std::string>());
  }
  return out;
}

// ---------------------------------------------------------------- SVG plots

const char* kLossColor = "#2563eb";
const char* kEvalColor = "#ea580c";
const char* kLrColor = "#7c3aed";
const char* kThroughputColor = "#059669";
const char* kMemoryColor = "#db2777";

struct Series {
  std::vector<double> x, y;
};

struct PlotSpec {
  std::string id;          // svg id, "plot-loss"
  std::string empty_note;  // shown when the series has no points
  const char* color;
  bool y_from_zero = false;             // throughput, memory, lr: the size matters, not the wiggle
  std::function<std::string(double)> point_label;  // the tooltip value of a point
  int width = 520, height = 240;
  std::optional<size_t> highlight;  // index of a point to ring (best eval loss)
  std::optional<std::pair<double, double>> x_domain;  // shared step range, so the plots line up
  bool smooth = false;  // many noisy points: draw a smoothed line over faded raw points
};

std::string coord(double v) { return printf_string("%.1f", v); }

// Debiased exponential moving average (TensorBoard's smoothing) with a window of ~1/30 of the run.
std::vector<double> smooth_ema(const std::vector<double>& y) {
  const double weight = std::clamp(1.0 - 30.0 / (double)y.size(), 0.6, 0.98);
  std::vector<double> out(y.size());
  double acc = 0, norm = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    acc = acc * weight + (1 - weight) * y[i];
    norm = norm * weight + (1 - weight);
    out[i] = acc / norm;
  }
  return out;
}

std::string render_plot_svg(const PlotSpec& p, const Series& s) {
  const double W = p.width, H = p.height;
  const double left = 58, right = 18, top = 14, bottom = 38;
  std::string o = cat("<svg id=\"", p.id, "\" class=\"plot\" viewBox=\"0 0 ", p.width, " ", p.height,
                      "\" role=\"img\" preserveAspectRatio=\"xMidYMid meet\">");
  if (s.x.empty()) {
    o += cat("<rect x=\"", left, "\" y=\"", top, "\" width=\"", W - left - right, "\" height=\"",
             H - top - bottom, "\" rx=\"8\" class=\"empty-box\"/>");
    o += cat("<text x=\"", coord(W / 2 + (left - right) / 2), "\" y=\"", coord(H / 2), "\" class=\"empty-note\">",
             html_escape(p.empty_note), "</text></svg>");
    return o;
  }
  auto [xmin_it, xmax_it] = std::minmax_element(s.x.begin(), s.x.end());
  auto [ymin_it, ymax_it] = std::minmax_element(s.y.begin(), s.y.end());
  double ylo = *ymin_it, yhi = *ymax_it;
  if (p.y_from_zero) ylo = std::min(0.0, ylo);
  std::vector<double> yt = nice_ticks(ylo, yhi, 5);
  double xlo = *xmin_it, xhi = *xmax_it;
  if (p.x_domain) {
    xlo = std::min(xlo, p.x_domain->first);
    xhi = std::max(xhi, p.x_domain->second);
  }
  std::vector<double> xt = nice_ticks(xlo, xhi, std::max(3, p.width / 110));
  if (xt.size() >= 2 && xt[1] - xt[0] < 1) {  // steps are integers: never tick at 1.5
    xt.clear();
    for (double v = std::floor(xlo); v <= std::ceil(xhi) + 1e-9; v += 1) xt.push_back(v);
    if (xt.size() == 1) xt.push_back(xt[0] + 1);
  }
  // The step axis ends at the last step, not at the next round number (no empty strip on the right).
  const double xstep = xt.size() >= 2 ? xt[1] - xt[0] : 1;
  while (xt.size() > 2 && xt.back() > xhi + xstep * 1e-9) xt.pop_back();
  const double x0 = xt.front(), x1 = std::max(xhi, xt.back()), y0 = yt.front(), y1 = yt.back();
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };
  const double ystep = yt.size() >= 2 ? yt[1] - yt[0] : 1;

  // Grid and tick labels.
  o += "<g class=\"grid\">";
  for (double v : yt) o += cat("<line x1=\"", left, "\" x2=\"", W - right, "\" y1=\"", coord(py(v)), "\" y2=\"", coord(py(v)), "\"/>");
  for (double v : xt) o += cat("<line x1=\"", coord(px(v)), "\" x2=\"", coord(px(v)), "\" y1=\"", top, "\" y2=\"", top + ph, "\"/>");
  o += "</g><g class=\"ticks\">";
  for (double v : yt)
    o += cat("<text x=\"", left - 8, "\" y=\"", coord(py(v) + 3.5), "\" text-anchor=\"end\">", format_tick(v, ystep), "</text>");
  for (double v : xt)
    o += cat("<text x=\"", coord(px(v)), "\" y=\"", coord(top + ph + 16), "\" text-anchor=\"middle\">", format_tick(v, xstep), "</text>");
  o += cat("</g><text class=\"axis-title\" x=\"", coord(left + pw), "\" y=\"", coord(H - 4), "\" text-anchor=\"end\">step</text>");
  o += cat("<line class=\"axis\" x1=\"", left, "\" x2=\"", W - right, "\" y1=\"", coord(top + ph), "\" y2=\"", coord(top + ph), "\"/>");
  o += cat("<line class=\"axis\" x1=\"", left, "\" x2=\"", left, "\" y1=\"", top, "\" y2=\"", coord(top + ph), "\"/>");

  // Area, line, points.
  std::string pts;
  for (size_t i = 0; i < s.x.size(); ++i) pts += cat(i ? " " : "", coord(px(s.x[i])), ",", coord(py(s.y[i])));
  if (s.x.size() >= 2) {
    std::string area = cat(coord(px(s.x.front())), ",", coord(top + ph), " ", pts, " ", coord(px(s.x.back())), ",", coord(top + ph));
    o += cat("<polygon class=\"area\" fill=\"", p.color, "\" points=\"", area, "\"/>");
  }
  const size_t n = s.x.size();
  // A noisy series with many points (the training loss) gets a smoothed line on top and its raw
  // points fade behind it, as TensorBoard does; every raw point is still drawn.
  const bool smoothed = p.smooth && n >= 60;
  o += cat("<g", smoothed ? " opacity=\"0.3\"" : "", "><polyline class=\"line", smoothed ? " thin" : "", "\" stroke=\"", p.color,
           "\" points=\"", pts, "\"/>");
  const double r = n <= 40 ? 3.2 : n <= 150 ? 2.2 : n <= 600 ? 1.5 : 1.0;
  const bool hollow = n <= 40;
  o += cat("<g class=\"points\" fill=\"", hollow ? "#ffffff" : p.color, "\" stroke=\"", p.color, "\" stroke-width=\"",
           hollow ? "1.6" : "0", "\">");
  for (size_t i = 0; i < n; ++i)
    o += cat("<circle class=\"pt\" cx=\"", coord(px(s.x[i])), "\" cy=\"", coord(py(s.y[i])), "\" r=\"", r,
             "\"><title>step ", (int64_t)s.x[i], ": ", p.point_label(s.y[i]), "</title></circle>");
  o += "</g></g>";
  if (smoothed) {
    std::vector<double> ema = smooth_ema(s.y);
    std::string spts;
    for (size_t i = 0; i < n; ++i) spts += cat(i ? " " : "", coord(px(s.x[i])), ",", coord(py(ema[i])));
    o += cat("<polyline class=\"line\" stroke=\"", p.color, "\" points=\"", spts, "\"/>");
  }
  if (p.highlight && *p.highlight < n) {
    size_t i = *p.highlight;
    double cx = px(s.x[i]), cy = py(s.y[i]);
    o += cat("<circle class=\"best\" cx=\"", coord(cx), "\" cy=\"", coord(cy), "\" r=\"7\" stroke=\"", p.color, "\"/>");
  }
  o += "</svg>";
  return o;
}

std::string plot_card(const std::string& title, const std::string& subtitle, const std::string& svg,
                      const char* color, bool wide) {
  return cat("<section class=\"card plot-card", wide ? " wide" : "", "\"><div class=\"card-head\"><h3><span class=\"swatch\" style=\"background:",
             color, "\"></span>", html_escape(title), "</h3><span class=\"muted\">", subtitle, "</span></div>", svg, "</section>");
}

// ---------------------------------------------------------------- page pieces

struct Stat {
  std::string label, value, detail, tone;  // tone: "", "good", "bad" (colours the detail)
};

std::string stat_card(const Stat& s) {
  return cat("<div class=\"stat\"><div class=\"stat-label\">", html_escape(s.label), "</div><div class=\"stat-value\">",
             s.value, "</div><div class=\"stat-detail ", s.tone, "\">", s.detail, "</div></div>");
}

const char* kStyle = R"CSS(
:root{--bg:#f4f6f9;--card:#ffffff;--ink:#111827;--ink2:#374151;--muted:#6b7280;--line:#e5e7eb;--soft:#f9fafb;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif;-webkit-font-smoothing:antialiased}
.page{max-width:1120px;margin:0 auto;padding:32px 28px 48px}
.mono,code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace}
header.hero{background:linear-gradient(135deg,#1e3a8a 0%,#2563eb 55%,#7c3aed 100%);color:#fff;border-radius:16px;padding:26px 30px 24px;box-shadow:0 6px 24px rgba(37,99,235,.18)}
.eyebrow{font-size:12px;letter-spacing:.12em;text-transform:uppercase;opacity:.8;font-weight:600}
h1{margin:6px 0 10px;font-size:30px;line-height:1.2;font-weight:700;letter-spacing:-.01em;word-break:break-word}
.chips{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.chip{display:inline-block;padding:3px 11px;border-radius:999px;background:rgba(255,255,255,.16);border:1px solid rgba(255,255,255,.28);font-size:13px;font-weight:500}
.chip.status-done{background:#dcfce7;color:#166534;border-color:#bbf7d0}
.chip.status-running{background:#fef3c7;color:#92400e;border-color:#fde68a}
.hero .paths{margin-top:12px;font-size:12.5px;opacity:.8;word-break:break-all}
.stats{display:grid;grid-template-columns:repeat(4,1fr);gap:14px;margin:20px 0 8px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.stat-label{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.06em;font-weight:600}
.stat-value{font-size:24px;font-weight:650;margin-top:4px;font-variant-numeric:tabular-nums;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.stat-detail{font-size:13px;color:var(--muted);margin-top:2px;font-variant-numeric:tabular-nums}
.stat-value .arrow{color:#9ca3af;font-weight:400;margin:0 2px}.stat-value .unit{font-size:14px;color:var(--muted);font-weight:500}
.stat-detail.good{color:#047857;font-weight:600}.stat-detail.bad{color:#b91c1c;font-weight:600}
h2{font-size:18px;margin:30px 0 12px;font-weight:650;color:var(--ink2)}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.plot-card{padding:14px 16px 8px}.plot-card.wide{grid-column:1/-1}
.card-head{display:flex;justify-content:space-between;align-items:baseline;gap:12px;margin-bottom:4px}
.card-head h3{margin:0;font-size:15px;font-weight:600;display:flex;align-items:center;gap:8px}
.swatch{width:10px;height:10px;border-radius:3px;display:inline-block}
.muted{color:var(--muted);font-size:13px}
svg.plot{width:100%;height:auto;display:block;overflow:visible}
svg.plot .grid line{stroke:#eef0f4;stroke-width:1}
svg.plot .axis{stroke:#9ca3af;stroke-width:1}
svg.plot .ticks text{font-size:11px;fill:#6b7280;font-variant-numeric:tabular-nums}
svg.plot .axis-title{font-size:11px;fill:#9ca3af}
svg.plot .area{opacity:.07;stroke:none}
svg.plot .line{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg.plot .line.thin{stroke-width:1}
svg.plot .best{fill:none;stroke-width:2}
svg.plot .empty-box{fill:#f9fafb;stroke:#d1d5db;stroke-dasharray:5 4}
svg.plot .empty-note{font-size:14px;fill:#9ca3af;text-anchor:middle}
.sample{padding:16px 18px;margin-bottom:14px}
.sample-prompt{font-size:13px;color:var(--muted);margin-bottom:10px}
.sample-prompt pre{color:var(--ink);background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:8px 10px;margin:6px 0 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.pair h4{margin:0 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);font-weight:600}
.pair .before h4::before{content:"";display:inline-block;width:8px;height:8px;border-radius:50%;background:#9ca3af;margin-right:6px}
.pair .after h4::before{content:"";display:inline-block;width:8px;height:8px;border-radius:50%;background:#059669;margin-right:6px}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:13px;line-height:1.55}
.pair pre{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:10px 12px;min-height:3em}
.pair .after pre{background:#f0fdf4;border-color:#bbf7d0}
.pending{color:var(--muted);font-style:italic}
.config{display:grid;grid-template-columns:1fr 1fr;gap:16px}
table{width:100%;border-collapse:collapse;font-size:13.5px}
.config .card{padding:4px 0;overflow:hidden}
td{padding:6px 16px;border-top:1px solid var(--line);vertical-align:top}
tr:first-child td{border-top:none}
td.key{color:var(--ink2);width:45%;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
td.val{word-break:break-all;font-variant-numeric:tabular-nums}
td.val.none{color:#9ca3af}
.note{background:#fffbeb;border:1px solid #fde68a;color:#92400e;border-radius:10px;padding:10px 14px;font-size:13.5px;margin-top:14px}
.empty{padding:18px;color:var(--muted)}
footer{margin-top:32px;color:#9ca3af;font-size:12.5px;text-align:center}
@media (max-width:820px){.stats{grid-template-columns:1fr 1fr}.grid,.pair,.config{grid-template-columns:1fr}}
)CSS";

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

template <typename Line>
Series series_of(const std::vector<Line>& lines, std::optional<double> Line::*field, double scale = 1) {
  Series s;
  for (const Line& l : lines) {
    if (!(l.*field)) continue;
    s.x.push_back((double)l.step);
    s.y.push_back(*(l.*field) * scale);
  }
  return s;
}

std::string config_value_cell(const json& v) {
  if (v.is_null()) return "<td class=\"val none\">None</td>";
  if (v.is_string()) return cat("<td class=\"val\">", html_escape(v.get<std::string>()), "</td>");
  if (v.is_number_float()) return cat("<td class=\"val\">", html_escape(format_value(v.get<double>())), "</td>");
  return cat("<td class=\"val\">", html_escape(v.dump()), "</td>");
}

std::string render_config(const json& config) {
  if (!config.is_object() || config.empty())
    return "<div class=\"card empty\">No run_config.json in this folder.</div>";
  std::vector<std::pair<std::string, const json*>> rows;
  for (auto it = config.begin(); it != config.end(); ++it) rows.emplace_back(it.key(), &it.value());
  const size_t half = (rows.size() + 1) / 2;
  std::string o = "<div class=\"config\">";
  for (size_t part = 0; part < 2; ++part) {
    size_t begin = part ? half : 0, end = part ? rows.size() : half;
    if (begin >= end) break;
    o += "<div class=\"card\"><table>";
    for (size_t i = begin; i < end; ++i)
      o += cat("<tr><td class=\"key\">", html_escape(rows[i].first), "</td>", config_value_cell(*rows[i].second), "</tr>");
    o += "</table></div>";
  }
  return o + "</div>";
}

std::string render_samples(const std::optional<RunSamples>& samples, bool run_finished) {
  if (!samples) return "<div class=\"card empty\">No samples.json: this run generated no before/after samples.</div>";
  const RunSamples& s = *samples;
  const size_t n = std::max({s.prompts.size(), s.before.size(), s.after.size()});
  if (n == 0) return "<div class=\"card empty\">samples.json lists no prompts.</div>";
  std::string o;
  const std::string missing_after = run_finished ? "not generated" : "not generated yet — the run is still going";
  for (size_t i = 0; i < n; ++i) {
    o += "<div class=\"card sample\">";
    o += cat("<div class=\"sample-prompt\">Prompt ", i + 1, "<pre>",
             i < s.prompts.size() ? html_escape(s.prompts[i]) : "<span class=\"pending\">(no prompt)</span>", "</pre></div>");
    o += "<div class=\"pair\"><div class=\"before\"><h4>Before training</h4><pre>";
    o += i < s.before.size() ? html_escape(s.before[i]) : "<span class=\"pending\">not generated</span>";
    o += "</pre></div><div class=\"after\"><h4>After training</h4><pre>";
    o += i < s.after.size() ? html_escape(s.after[i]) : cat("<span class=\"pending\">", missing_after, "</span>");
    o += "</pre></div></div></div>";
  }
  return o;
}

}  // namespace

// ---------------------------------------------------------------- public helpers

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {  // one value: a small window around it
    double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  target = std::max(target, 2);
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  // The round multiplier nearest to the raw step on a log scale, so the tick count stays near target.
  double step = magnitude;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (std::fabs(std::log(m * magnitude / raw)) < std::fabs(std::log(step / raw))) step = m * magnitude;
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double k = first; k <= last; k += 1) {
    double v = k * step;
    // k*step can be 0.30000000000000004; round to the step's decimals so labels and tests see 0.3.
    double scale = std::pow(10.0, std::min(decimals_for(step), 15));
    v = std::round(v * scale) / scale;
    ticks.push_back(v == 0 ? 0.0 : v);
  }
  if (ticks.size() < 2) ticks.push_back(ticks.empty() ? lo : ticks.back() + step);
  return ticks;
}

std::string format_tick(double value, double step) {
  step = std::fabs(step);
  if (std::fabs(value) < step * 1e-9) return "0";
  if (step < 1e-3) return compact_scientific(value, std::max(0, decimals_for(step / std::pow(10.0, std::floor(std::log10(std::fabs(value))))) ));
  struct Unit { double size; const char* suffix; };
  for (Unit u : {Unit{1e9, "G"}, Unit{1e6, "M"}, Unit{1e3, "k"}}) {
    if (step >= u.size / 10 && std::fabs(value) >= u.size) {
      double scaled_step = step / u.size;
      return strip_trailing_zeros(printf_string("%.*f", decimals_for(scaled_step), value / u.size)) + u.suffix;
    }
  }
  return strip_trailing_zeros(printf_string("%.*f", decimals_for(step), value));
}

// ---------------------------------------------------------------- reading

void parse_metrics_jsonl(std::string_view text, ReportData& data) {
  std::map<int64_t, TrainLogLine> train;
  std::map<int64_t, EvalLogLine> eval;
  for (const TrainLogLine& l : data.train) train[l.step] = l;
  for (const EvalLogLine& l : data.eval) eval[l.step] = l;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line.empty()) continue;
    json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      data.skipped_lines++;
      continue;
    }
    const std::string type = line_type(j);
    if (type == "summary") {
      data.summary = j;
      continue;
    }
    if (type != "train" && type != "eval") continue;  // a kind of line this report does not know
    std::optional<int64_t> step = step_field(j);
    if (!step) {
      data.skipped_lines++;
      continue;
    }
    if (type == "train") {
      TrainLogLine l;
      l.step = *step;
      l.epoch = number_field(j, "epoch");
      l.loss = number_field(j, "loss");
      l.learning_rate = number_field(j, "learning_rate");
      l.grad_norm = number_field(j, "grad_norm");
      l.tokens_per_second = number_field(j, "tokens_per_second");
      l.peak_rss_bytes = number_field(j, "peak_rss_bytes");
      l.elapsed_seconds = number_field(j, "elapsed_seconds");
      train[l.step] = l;
    } else {
      EvalLogLine l;
      l.step = *step;
      l.epoch = number_field(j, "epoch");
      l.eval_loss = number_field(j, "eval_loss");
      l.perplexity = number_field(j, "perplexity");
      if (!l.perplexity && l.eval_loss && *l.eval_loss < 700) l.perplexity = std::exp(*l.eval_loss);
      eval[l.step] = l;
    }
  }
  data.train.clear();
  data.eval.clear();
  for (auto& [step, l] : train) data.train.push_back(l);
  for (auto& [step, l] : eval) data.eval.push_back(l);
}

ReportData read_run_folder(const std::string& output_dir) {
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec))
    fail("report: folder '", output_dir, "' does not exist; pass the output_dir of a training run");
  const std::string metrics = (fs::path(output_dir) / "metrics.jsonl").string();
  if (!fs::exists(metrics, ec))
    fail(metrics, ": not found; '", output_dir,
         "' is not the output_dir of a training run (the trainer writes metrics.jsonl there at its first log step)");
  ReportData data;
  data.source_dir = output_dir;
  parse_metrics_jsonl(read_file(metrics), data);

  const std::string config_path = (fs::path(output_dir) / "run_config.json").string();
  if (fs::exists(config_path, ec)) {
    data.config = read_json_file(config_path);
    if (!data.config.is_object()) fail(config_path, ": must be a JSON object of option names to values");
  }
  const std::string samples_path = (fs::path(output_dir) / "samples.json").string();
  if (fs::exists(samples_path, ec)) {
    json s = read_json_file(samples_path);
    if (!s.is_object()) fail(samples_path, ": must be a JSON object {\"prompts\": [...], \"before\": [...], \"after\": [...]}");
    RunSamples samples;
    samples.prompts = string_array(s, "prompts", samples_path);
    samples.before = string_array(s, "before", samples_path);
    samples.after = string_array(s, "after", samples_path);
    data.samples = std::move(samples);
  }
  return data;
}

// ---------------------------------------------------------------- rendering

std::string render_report_html(const ReportData& d) {
  const RunTitle title = run_title(d.config);
  const bool finished = d.summary.is_object();
  const std::string heading = title.model.empty() ? "Training run" : title.model;

  // Headline numbers.
  std::vector<Stat> stats;
  {
    Stat s{"Final train loss", "—", "no loss logged", ""};
    for (auto it = d.train.rbegin(); it != d.train.rend(); ++it) {
      if (!it->loss) continue;
      s.value = format_loss(*it->loss);
      s.detail = cat("at step ", with_thousands(it->step));
      break;
    }
    if (auto mean = finished ? number_field(d.summary, "train_loss") : std::nullopt)
      s.detail += cat(" · run mean ", format_loss(*mean));
    stats.push_back(s);
  }
  std::optional<size_t> best_eval;
  {
    Series ev = series_of(d.eval, &EvalLogLine::eval_loss);
    Stat change{"Eval loss", "—", "no evaluation logged", ""};
    Stat best{"Best eval loss", "—", "no evaluation logged", ""};
    if (!ev.y.empty()) {
      const double first = ev.y.front(), last = ev.y.back();
      if (ev.y.size() == 1) {
        change.value = format_loss(last);
        change.detail = cat("one evaluation, step ", with_thousands((int64_t)ev.x.back()));
      } else {
        change.value = cat(format_loss(first), " <span class=\"arrow\">→</span> ", format_loss(last));
        const double delta = last - first;
        change.detail = cat(delta <= 0 ? "−" : "+", format_loss(std::fabs(delta)));
        if (first != 0) change.detail += cat(" (", delta <= 0 ? "−" : "+", printf_string("%.1f", std::fabs(delta / first) * 100), "%)");
        change.tone = delta < 0 ? "good" : delta > 0 ? "bad" : "";
      }
      best_eval = (size_t)(std::min_element(ev.y.begin(), ev.y.end()) - ev.y.begin());
      best.value = format_loss(ev.y[*best_eval]);
      best.detail = cat("step ", with_thousands((int64_t)ev.x[*best_eval]));
      for (const EvalLogLine& l : d.eval)
        if (l.step == (int64_t)ev.x[*best_eval] && l.perplexity) best.detail += cat(" · perplexity ", format_value(*l.perplexity));
    }
    stats.push_back(change);
    stats.push_back(best);
  }
  {
    Stat s{"Steps", "—", "last logged step", ""};
    int64_t last_step = 0;
    std::optional<double> last_epoch;
    for (const TrainLogLine& l : d.train) {
      last_step = std::max(last_step, l.step);
      if (l.epoch) last_epoch = l.epoch;
    }
    for (const EvalLogLine& l : d.eval) last_step = std::max(last_step, l.step);
    if (!d.train.empty() || !d.eval.empty()) s.value = with_thousands(last_step);
    std::vector<std::string> parts;
    if (d.config.is_object()) {
      auto it = d.config.find("max_steps");
      if (it != d.config.end() && it->is_number() && it->get<double>() > 0)
        parts.push_back(cat("of ", with_thousands(it->get<int64_t>())));
    }
    if (last_epoch) parts.push_back(cat("epoch ", printf_string("%.2f", *last_epoch)));
    if (!parts.empty()) s.detail.clear();
    for (size_t i = 0; i < parts.size(); ++i) s.detail += (i ? " · " : "") + parts[i];
    stats.push_back(s);
  }
  {
    Stat s{"Throughput", "—", "no tokens/s logged", ""};
    Series tp = series_of(d.train, &TrainLogLine::tokens_per_second);
    if (!tp.y.empty()) {
      s.value = cat(format_throughput(median(tp.y)), " <span class=\"unit\">tok/s</span>");
      s.detail = cat("median of ", tp.y.size(), " log", tp.y.size() == 1 ? "" : "s");
    }
    stats.push_back(s);
  }
  {
    Stat s{"Peak memory", "—", "no memory logged", ""};
    Series mem = series_of(d.train, &TrainLogLine::peak_rss_bytes);
    if (!mem.y.empty()) {
      s.value = format_bytes(*std::max_element(mem.y.begin(), mem.y.end()));
      s.detail = "peak resident set (RSS)";
    }
    stats.push_back(s);
  }
  {
    Stat s{"Runtime", "—", finished ? "finished" : "still running", ""};
    std::optional<double> runtime = finished ? number_field(d.summary, "train_runtime") : std::nullopt;
    if (!runtime)
      for (auto it = d.train.rbegin(); it != d.train.rend() && !runtime; ++it) runtime = it->elapsed_seconds;
    if (runtime) s.value = format_duration(*runtime);
    if (!finished && runtime) s.detail = "so far — still running";
    stats.push_back(s);
  }
  {
    Stat s{"Final grad norm", "—", "no gradient norm logged", ""};
    for (auto it = d.train.rbegin(); it != d.train.rend(); ++it) {
      if (!it->grad_norm) continue;
      s.value = format_value(*it->grad_norm);
      s.detail = cat("at step ", with_thousands(it->step));
      break;
    }
    stats.push_back(s);
  }

  // Plots.
  auto loss_label = [](double v) { return format_loss(v); };
  auto lr_label = [](double v) { return format_value(v); };
  auto tp_label = [](double v) { return cat(format_throughput(v), " tok/s"); };
  auto mem_label = [](double v) { return cat(with_thousands((int64_t)std::llround(v)), " MiB"); };
  Series loss = series_of(d.train, &TrainLogLine::loss);
  Series eval = series_of(d.eval, &EvalLogLine::eval_loss);
  Series lr = series_of(d.train, &TrainLogLine::learning_rate);
  Series tp = series_of(d.train, &TrainLogLine::tokens_per_second);
  Series mem = series_of(d.train, &TrainLogLine::peak_rss_bytes, 1.0 / (1024.0 * 1024.0));
  auto last_note = [](const Series& s, const std::function<std::string(double)>& f) {
    return s.y.empty() ? std::string() : cat(s.y.size(), " point", s.y.size() == 1 ? "" : "s", " · last ", f(s.y.back()));
  };

  // Every plot spans the same steps, so a bump in one lines up with the others.
  std::optional<std::pair<double, double>> steps;
  for (const Series* s : {&loss, &eval, &lr, &tp, &mem})
    for (double x : s->x) steps = steps ? std::pair(std::min(steps->first, x), std::max(steps->second, x)) : std::pair(x, x);
  std::string eval_note = last_note(eval, loss_label);
  if (best_eval && eval.y.size() > 1)
    eval_note = cat(eval.y.size(), " points · best ", format_loss(eval.y[*best_eval]), " at step ",
                    with_thousands((int64_t)eval.x[*best_eval]), " (ringed)");

  auto plot = [&](const char* id, const char* title, const char* empty_note, const char* color, bool from_zero,
                  const std::function<std::string(double)>& label, const Series& s, bool wide, const std::string& note,
                  std::optional<size_t> highlight = std::nullopt) {
    PlotSpec ps{id, empty_note, color, from_zero, label, wide ? 1060 : 520, wide ? 300 : 240, highlight, steps, wide};
    return plot_card(title, note, render_plot_svg(ps, s), color, wide);
  };
  std::string plots;
  plots += plot("plot-loss", "Training loss", "no training loss logged", kLossColor, false, loss_label, loss, true,
                last_note(loss, loss_label) + (loss.y.size() >= 60 ? " · bold line: smoothed (EMA)" : ""));
  plots += plot("plot-eval-loss", "Eval loss", "no evaluation logged", kEvalColor, false, loss_label, eval, false,
                eval_note, best_eval);
  plots += plot("plot-lr", "Learning rate", "no learning rate logged", kLrColor, true, lr_label, lr, false,
                last_note(lr, lr_label));
  plots += plot("plot-throughput", "Throughput (tokens/s)", "no throughput logged", kThroughputColor, true, tp_label, tp,
                false, last_note(tp, tp_label));
  plots += plot("plot-memory", "Peak memory (MiB)", "no memory logged", kMemoryColor, true, mem_label, mem, false,
                last_note(mem, mem_label));

  // Page.
  std::string page_title = heading;
  if (!title.method.empty()) page_title += " · " + title.method;
  if (!title.dataset.empty()) page_title += " · " + title.dataset;
  std::string o;
  o.reserve(64 * 1024);
  o += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">";
  o += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">";
  o += cat("<title>", html_escape(page_title), " — llmtune report</title><style>", kStyle, "</style></head><body><div class=\"page\">");

  o += "<header class=\"hero\"><div class=\"eyebrow\">llmtune · training report</div>";
  o += cat("<h1>", html_escape(heading), "</h1><div class=\"chips\">");
  if (!title.method.empty()) o += cat("<span class=\"chip\">", html_escape(title.method), "</span>");
  if (!title.dataset.empty()) o += cat("<span class=\"chip\">dataset: ", html_escape(title.dataset), "</span>");
  o += finished ? "<span class=\"chip status-done\">✓ finished</span>" : "<span class=\"chip status-running\">● in progress</span>";
  o += "</div>";
  if (!title.model_path.empty() || !title.dataset_path.empty()) {
    o += "<div class=\"paths mono\">";
    if (!title.model_path.empty()) o += cat("model ", html_escape(title.model_path));
    if (!title.model_path.empty() && !title.dataset_path.empty()) o += " &nbsp;·&nbsp; ";
    if (!title.dataset_path.empty()) o += cat("data ", html_escape(title.dataset_path));
    o += "</div>";
  }
  o += "</header>";

  o += "<div class=\"stats\">";
  for (const Stat& s : stats) o += stat_card(s);
  o += "</div>";
  if (d.skipped_lines > 0)
    o += cat("<div class=\"note\">", d.skipped_lines, " line", d.skipped_lines == 1 ? "" : "s",
             " of metrics.jsonl could not be read and ", d.skipped_lines == 1 ? "was" : "were",
             " skipped (a run still writing, or a crash mid-line).</div>");

  o += cat("<h2>Training curves</h2><div class=\"grid\">", plots, "</div>");
  o += cat("<h2>Samples before and after training</h2>", render_samples(d.samples, finished));
  o += cat("<h2>Configuration</h2>", render_config(d.config));
  o += cat("<footer>Generated by <span class=\"mono\">llmtune report</span>", d.source_dir.empty() ? "" : " from ",
           html_escape(d.source_dir), " · ", d.train.size(), " training log", d.train.size() == 1 ? "" : "s", ", ",
           d.eval.size(), " evaluation", d.eval.size() == 1 ? "" : "s", "</footer>");
  o += "</div></body></html>\n";
  return o;
}

void write_report(const std::string& output_dir) {
  ReportData data = read_run_folder(output_dir);
  write_file_atomic((fs::path(output_dir) / "report.html").string(), render_report_html(data));
}

}  // namespace llmtune
