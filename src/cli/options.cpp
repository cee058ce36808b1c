// Option parsing for `llmtune <command>`: argv and YAML/JSON config files resolved against a typed
// per-command spec. Every user mistake becomes one llmtune::Error naming the key, value and what is allowed.
#include "cli/options.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "core/error.h"

namespace llmtune::cli {

namespace {

// A value before it is checked against the option's type: absent (None), one text, or a list of texts.
struct RawValue {
  enum Kind { None, Scalar, List } kind = None;
  std::string text;
  std::vector<std::string> items;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(std::tolower((unsigned char)c));
  return out;
}

std::string upper_case(std::string s) {
  for (char& c : s) c = char(std::toupper((unsigned char)c));
  return s;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace((unsigned char)s[b])) ++b;
  while (e > b && std::isspace((unsigned char)s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

// Shortest text that reads back as the same double (so defaults like 5e-05 print as written).
std::string format_double(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

std::optional<bool> parse_bool_literal(std::string_view text) {
  std::string t = lower(trim(text));
  if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "0" || t == "no" || t == "off") return false;
  return std::nullopt;
}

std::optional<int64_t> parse_int_text(std::string_view text) {
  std::string t = trim(text);
  if (!t.empty() && t[0] == '+') t.erase(0, 1);
  int64_t v = 0;
  auto res = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || res.ec != std::errc() || res.ptr != t.data() + t.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_float_text(std::string_view text) {
  std::string t = trim(text);
  if (t.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  if (end != t.c_str() + t.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

std::string range_text(const OptionSpec& spec) {
  auto num = [&](double v) {
    return spec.type == OptionType::Float ? format_double(v) : std::to_string(int64_t(v));
  };
  if (spec.min && spec.max) return cat("[", num(*spec.min), ", ", num(*spec.max), "]");
  if (spec.min) return cat(">= ", num(*spec.min));
  if (spec.max) return cat("<= ", num(*spec.max));
  return "";
}

std::string type_meta(OptionType type) {
  switch (type) {
    case OptionType::Bool: return "[BOOL]";
    case OptionType::Int: return "INT";
    case OptionType::Float: return "FLOAT";
    case OptionType::String: return "STR";
    case OptionType::StringList: return "A,B,..";
    case OptionType::IntList: return "N,M,..";
  }
  return "";
}

bool is_list_type(OptionType type) {
  return type == OptionType::StringList || type == OptionType::IntList;
}

// Items of a list written as text: a JSON list ("[\"a\", \"b\"]", "[1, 2]") or comma separated.
std::vector<std::string> split_list_text(const std::string& where, const std::string& text) {
  std::string t = trim(text);
  std::vector<std::string> items;
  if (!t.empty() && t[0] == '[') {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(t);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": '", text, "' looks like a JSON list but does not parse (", e.what(),
           "); write it as a,b,c or [\"a\", \"b\"]");
    }
    if (!j.is_array()) fail(where, ": '", text, "' is not a JSON list");
    for (const auto& el : j) {
      if (el.is_string()) items.push_back(el.get<std::string>());
      else if (el.is_number() || el.is_boolean()) items.push_back(el.dump());
      else fail(where, ": list element ", el.dump(), " in '", text, "' is not a plain value");
    }
    return items;
  }
  size_t start = 0;
  while (start <= t.size()) {
    size_t comma = t.find(',', start);
    if (comma == std::string::npos) comma = t.size();
    std::string item = trim(std::string_view(t).substr(start, comma - start));
    if (!item.empty()) items.push_back(item);
    start = comma + 1;
  }
  return items;
}

std::string choices_error(const OptionSpec& spec, const std::string& value) {
  std::string msg = cat("'", value, "' is not one of: ", join(spec.choices, ", "));
  std::string near = nearest_name(value, spec.choices);
  if (!near.empty()) msg += cat(" (did you mean '", near, "'?)");
  return msg;
}

// `where` names the source and key, e.g. "option 'top_p'" or "cfg.yaml: option 'top_p'".
OptionValue convert_scalar_item(const OptionSpec& spec, OptionType item_type, const std::string& where,
                                const std::string& text) {
  switch (item_type) {
    case OptionType::Bool: {
      auto b = parse_bool_literal(text);
      if (!b) fail(where, ": expected true or false, got '", text, "'");
      return *b;
    }
    case OptionType::Int: {
      auto v = parse_int_text(text);
      if (!v) fail(where, ": expected an integer, got '", text, "'");
      if ((spec.min && double(*v) < *spec.min) || (spec.max && double(*v) > *spec.max))
        fail(where, ": value ", *v, " is out of range ", range_text(spec));
      return *v;
    }
    case OptionType::Float: {
      auto v = parse_float_text(text);
      if (!v) fail(where, ": expected a number, got '", text, "'");
      if ((spec.min && *v < *spec.min) || (spec.max && *v > *spec.max))
        fail(where, ": value ", format_double(*v), " is out of range ", range_text(spec));
      return *v;
    }
    default: {
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), text) == spec.choices.end())
        fail(where, ": ", choices_error(spec, text));
      return text;
    }
  }
}

OptionValue convert_raw(const OptionSpec& spec, const std::string& where, const RawValue& raw) {
  if (!is_list_type(spec.type)) {
    if (raw.kind == RawValue::List)
      fail(where, ": expected a single ", type_name(spec.type), ", got a list");
    return convert_scalar_item(spec, spec.type, where, raw.text);
  }
  std::vector<std::string> items = raw.kind == RawValue::List ? raw.items : split_list_text(where, raw.text);
  if (spec.type == OptionType::StringList) {
    for (const auto& item : items) convert_scalar_item(spec, OptionType::String, where, item);
    return items;
  }
  std::vector<int64_t> ints;
  for (const auto& item : items) ints.push_back(std::get<int64_t>(convert_scalar_item(spec, OptionType::Int, where, item)));
  return ints;
}

const OptionSpec& spec_or_unknown(const CommandSpec& spec, const std::string& key, const std::string& origin) {
  if (const OptionSpec* s = spec.find(key)) return *s;
  std::vector<std::string> names{"config"};
  for (const auto& o : spec.options) names.push_back(o.name);
  std::string msg = cat(origin, "unknown option '", key, "' for 'llmtune ", spec.name, "'");
  std::string near = nearest_name(key, names);
  if (!near.empty()) msg += cat(" (did you mean '", near, "'?)");
  else msg += cat("; see 'llmtune ", spec.name, " --help'");
  fail(msg);
}

RawValue raw_from_json(const std::string& where, const nlohmann::json& j) {
  RawValue raw;
  if (j.is_null()) return raw;
  if (j.is_string()) {
    raw.kind = RawValue::Scalar;
    raw.text = j.get<std::string>();
  } else if (j.is_number() || j.is_boolean()) {
    raw.kind = RawValue::Scalar;
    raw.text = j.dump();
  } else if (j.is_array()) {
    raw.kind = RawValue::List;
    for (const auto& el : j) {
      if (el.is_string()) raw.items.push_back(el.get<std::string>());
      else if (el.is_number() || el.is_boolean()) raw.items.push_back(el.dump());
      else fail(where, ": list element ", el.dump(), " is not a plain value");
    }
  } else {
    fail(where, ": nested sections are not supported; write options as flat key: value pairs");
  }
  return raw;
}

RawValue raw_from_yaml(const std::string& where, const YAML::Node& node) {
  RawValue raw;
  if (!node || node.IsNull()) return raw;
  if (node.IsScalar()) {
    raw.kind = RawValue::Scalar;
    raw.text = node.Scalar();
  } else if (node.IsSequence()) {
    raw.kind = RawValue::List;
    for (const auto& el : node) {
      if (!el.IsScalar())
        fail(where, ": list elements must be plain values (line ", el.Mark().line + 1, ")");
      raw.items.push_back(el.Scalar());
    }
  } else {
    fail(where, ": nested sections are not supported (line ", node.Mark().line + 1,
         "); write options as flat key: value pairs");
  }
  return raw;
}

// Reads one config file into (key, raw value) pairs in file order.
std::vector<std::pair<std::string, RawValue>> read_config_file(const std::string& path) {
  namespace fs = std::filesystem;
  if (!fs::is_regular_file(path)) fail("config file '", path, "' does not exist or is not a file");
  std::string ext = lower(fs::path(path).extension().string());
  std::vector<std::pair<std::string, RawValue>> entries;
  if (ext == ".json") {
    std::ifstream in(path);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ": not valid JSON: ", e.what());
    }
    if (!j.is_object()) fail(path, ": the top level must be an object of option: value pairs");
    for (const auto& [key, value] : j.items())
      entries.emplace_back(key, raw_from_json(cat(path, ": option '", key, "'"), value));
  } else if (ext == ".yaml" || ext == ".yml") {
    YAML::Node root;
    try {
      root = YAML::LoadFile(path);
    } catch (const YAML::Exception& e) {
      fail(path, ": not valid YAML: ", e.what());
    }
    if (root.IsNull()) return entries;  // an empty file sets nothing
    if (!root.IsMap()) fail(path, ": the top level must be a mapping of option: value pairs");
    for (const auto& kv : root) {
      if (!kv.first.IsScalar()) fail(path, ": keys must be plain names (line ", kv.first.Mark().line + 1, ")");
      std::string key = kv.first.Scalar();
      entries.emplace_back(key, raw_from_yaml(cat(path, ": option '", key, "'"), kv.second));
    }
  } else {
    fail("config file '", path, "': unsupported extension '", ext, "'; use .yaml, .yml or .json");
  }
  return entries;
}

bool looks_like_negative_number(const std::string& arg) {
  return arg.size() >= 2 && arg[0] == '-' && (std::isdigit((unsigned char)arg[1]) || arg[1] == '.');
}

const OptionSpec& spec_of(const std::vector<OptionSpec>& specs, std::string_view key) {
  for (const auto& s : specs)
    if (s.name == key) return s;
  throw std::logic_error(cat("option '", key, "' is not declared for this command"));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Specs

OptionSpec& CommandSpec::add(OptionSpec spec) {
  spec.name = normalize_key(spec.name);
  if (find(spec.name) || spec.name == "config" || spec.name == "help")
    throw std::logic_error(cat("option '", spec.name, "' declared twice (or reserved) in command '", name, "'"));
  options.push_back(std::move(spec));
  return options.back();
}

OptionSpec& CommandSpec::add_bool(std::string n, bool def, std::string help) {
  return add(OptionSpec{std::move(n), OptionType::Bool, OptionValue(def), std::move(help)});
}
OptionSpec& CommandSpec::add_int(std::string n, std::optional<int64_t> def, std::string help) {
  std::optional<OptionValue> d;
  if (def) d = OptionValue(*def);
  return add(OptionSpec{std::move(n), OptionType::Int, d, std::move(help)});
}
OptionSpec& CommandSpec::add_float(std::string n, std::optional<double> def, std::string help) {
  std::optional<OptionValue> d;
  if (def) d = OptionValue(*def);
  return add(OptionSpec{std::move(n), OptionType::Float, d, std::move(help)});
}
OptionSpec& CommandSpec::add_string(std::string n, std::optional<std::string> def, std::string help) {
  std::optional<OptionValue> d;
  if (def) d = OptionValue(std::move(*def));
  return add(OptionSpec{std::move(n), OptionType::String, d, std::move(help)});
}
OptionSpec& CommandSpec::add_string_list(std::string n, std::optional<std::vector<std::string>> def,
                                         std::string help) {
  std::optional<OptionValue> d;
  if (def) d = OptionValue(std::move(*def));
  return add(OptionSpec{std::move(n), OptionType::StringList, d, std::move(help)});
}
OptionSpec& CommandSpec::add_int_list(std::string n, std::optional<std::vector<int64_t>> def, std::string help) {
  std::optional<OptionValue> d;
  if (def) d = OptionValue(std::move(*def));
  return add(OptionSpec{std::move(n), OptionType::IntList, d, std::move(help)});
}
PositionalSpec& CommandSpec::add_positional(std::string n, std::string help, bool required) {
  if (!positionals.empty() && !positionals.back().required && required)
    throw std::logic_error(cat("command '", name, "': required positional after an optional one"));
  positionals.push_back(PositionalSpec{std::move(n), std::move(help), required});
  return positionals.back();
}

const OptionSpec* CommandSpec::find(std::string_view key) const {
  for (const auto& o : options)
    if (o.name == key) return &o;
  return nullptr;
}

CommandSpec& CommandRegistry::add(CommandSpec spec) {
  for (const auto& c : commands)
    if (c.name == spec.name) throw std::logic_error(cat("command '", spec.name, "' registered twice"));
  commands.push_back(std::move(spec));
  return commands.back();
}

const CommandSpec& CommandRegistry::get(std::string_view name) const {
  std::vector<std::string> names;
  for (const auto& c : commands) {
    if (c.name == name) return c;
    names.push_back(c.name);
  }
  std::string msg = cat("unknown command '", name, "'");
  std::string near = nearest_name(name, names);
  if (!near.empty()) msg += cat(" (did you mean '", near, "'?)");
  else msg += cat("; commands: ", join(names, ", "));
  fail(msg);
}

// ---------------------------------------------------------------------------------------------
// Parsing

ResolvedOptions parse_options(const CommandSpec& spec, int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) args.emplace_back(argv[i]);
  return parse_options(spec, args);
}

ResolvedOptions parse_options(const CommandSpec& spec, const std::vector<std::string>& args) {
  ResolvedOptions r;
  r.command = spec.name;
  r.specs = spec.options;
  for (const auto& p : spec.positionals) r.positional_names.push_back(p.name);
  for (const auto& o : spec.options) {
    r.values[o.name] = o.default_value;
    r.sources[o.name] = OptionSource::Default;
  }

  // Pass 1: split argv into flags, config files and positionals (flags are applied after the files).
  struct Flag {
    const OptionSpec* spec;
    RawValue raw;
  };
  std::vector<Flag> flags;
  std::vector<std::string> positionals;
  std::string last_bare_bool;  // for a hint when a stray word follows a bool flag
  bool only_positionals = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    bool is_flag = !only_positionals && arg.size() > 1 && arg[0] == '-' && !looks_like_negative_number(arg);
    if (!is_flag) {
      if (positionals.size() >= spec.positionals.size()) {
        std::string hint;
        if (!last_bare_bool.empty() && i > 0 && args[i - 1].rfind("--", 0) == 0)
          hint = cat(" (bool flag --", last_bare_bool, " takes true/false, or nothing)");
        if (spec.positionals.empty())
          fail("unexpected argument '", arg, "': 'llmtune ", spec.name,
               "' takes no positional arguments; options are written --key value", hint);
        std::vector<std::string> pnames;
        for (const auto& p : spec.positionals) pnames.push_back(p.name);
        fail("unexpected extra argument '", arg, "': 'llmtune ", spec.name, "' takes ", spec.positionals.size(),
             " (", join(pnames, ", "), ")", hint);
      }
      positionals.push_back(arg);
      last_bare_bool.clear();
      continue;
    }
    last_bare_bool.clear();
    if (arg == "--") {
      only_positionals = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      r.help_requested = true;
      continue;
    }
    if (arg[1] != '-') fail("unknown short option '", arg, "': options are written --key value (see --help)");
    std::string body = arg.substr(2);
    std::optional<std::string> inline_value;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      inline_value = body.substr(eq + 1);
      body.resize(eq);
    }
    std::string key = normalize_key(body);
    if (key.empty()) fail("malformed option '", arg, "'");

    if (key == "config") {
      std::string path;
      if (inline_value) path = *inline_value;
      else if (i + 1 < args.size()) path = args[++i];
      if (path.empty()) fail("option 'config' needs a file: --config FILE.yaml");
      r.config_files.push_back(path);
      continue;
    }

    const OptionSpec& o = spec_or_unknown(spec, key, "");
    RawValue raw{RawValue::Scalar, "", {}};
    if (inline_value) {
      raw.text = *inline_value;
    } else if (o.type == OptionType::Bool) {
      // A bare bool flag means true; it only takes the next word when that word is a bool literal.
      if (i + 1 < args.size() && parse_bool_literal(args[i + 1])) {
        raw.text = args[++i];
      } else {
        raw.text = "true";
        last_bare_bool = o.name;
      }
    } else {
      if (i + 1 >= args.size() ||
          (args[i + 1].rfind("--", 0) == 0 && args[i + 1].size() > 2))
        fail("option '", o.name, "' needs a value: --", o.name, " ", type_meta(o.type),
             (i + 1 < args.size() ? cat(" (got the option '", args[i + 1], "'; use --", o.name, "=VALUE if the value starts with --)") : std::string()));
      raw.text = args[++i];
    }
    flags.push_back(Flag{&o, std::move(raw)});
  }

  // Pass 2: config files in order, then the command-line flags on top.
  for (const auto& path : r.config_files) {
    for (const auto& [file_key, raw] : read_config_file(path)) {
      std::string key = normalize_key(file_key);
      if (key == "config") fail(path, ": a config file cannot name another config file; pass several --config flags");
      const OptionSpec& o = spec_or_unknown(spec, key, cat(path, ": "));
      std::string where = cat(path, ": option '", o.name, "'");
      r.values[o.name] = raw.kind == RawValue::None ? std::nullopt
                                                    : std::optional<OptionValue>(convert_raw(o, where, raw));
      r.sources[o.name] = OptionSource::ConfigFile;
    }
  }
  // A list option given several times on the command line collects every occurrence (argparse's
  // action="append": --reward keyword:cat --reward length:5:40); the first one replaces the config
  // file's / default value.
  std::set<std::string> seen_on_command_line;
  for (const auto& f : flags) {
    OptionValue v = convert_raw(*f.spec, cat("option '", f.spec->name, "'"), f.raw);
    const bool append = is_list_type(f.spec->type) && !seen_on_command_line.insert(f.spec->name).second;
    auto& slot = r.values[f.spec->name];
    if (append && slot) {
      if (f.spec->type == OptionType::StringList) {
        auto& dst = std::get<std::vector<std::string>>(*slot);
        const auto& src = std::get<std::vector<std::string>>(v);
        dst.insert(dst.end(), src.begin(), src.end());
      } else {
        auto& dst = std::get<std::vector<int64_t>>(*slot);
        const auto& src = std::get<std::vector<int64_t>>(v);
        dst.insert(dst.end(), src.begin(), src.end());
      }
    } else {
      slot = std::move(v);
    }
    r.sources[f.spec->name] = OptionSource::CommandLine;
  }

  r.positionals = std::move(positionals);
  if (!r.help_requested) {
    for (size_t p = r.positionals.size(); p < spec.positionals.size(); ++p)
      if (spec.positionals[p].required)
        fail("missing argument ", upper_case(spec.positionals[p].name), " (", spec.positionals[p].help,
             "); see 'llmtune ", spec.name, " --help'");
    for (const auto& o : spec.options)
      if (o.required && !r.values[o.name])
        fail("option '", o.name, "' is required: pass --", o.name, " ", type_meta(o.type),
             " or set it in a --config file");
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Resolved values

namespace {
const OptionValue& value_of(const ResolvedOptions& r, std::string_view key, OptionType want) {
  const OptionSpec& s = spec_of(r.specs, key);
  if (s.type != want)
    throw std::logic_error(cat("option '", key, "' is ", type_name(s.type), ", read as ", type_name(want)));
  const auto& v = r.values.at(s.name);
  if (!v) fail("option '", key, "' has no value: pass --", key, " ", type_meta(s.type), " or set it in a --config file");
  return *v;
}
}  // namespace

bool ResolvedOptions::get_bool(std::string_view key) const {
  return std::get<bool>(value_of(*this, key, OptionType::Bool));
}
int64_t ResolvedOptions::get_int(std::string_view key) const {
  return std::get<int64_t>(value_of(*this, key, OptionType::Int));
}
double ResolvedOptions::get_float(std::string_view key) const {
  if (spec_of(specs, key).type == OptionType::Int) return double(get_int(key));
  return std::get<double>(value_of(*this, key, OptionType::Float));
}
const std::string& ResolvedOptions::get_string(std::string_view key) const {
  return std::get<std::string>(value_of(*this, key, OptionType::String));
}
const std::vector<std::string>& ResolvedOptions::get_string_list(std::string_view key) const {
  return std::get<std::vector<std::string>>(value_of(*this, key, OptionType::StringList));
}
const std::vector<int64_t>& ResolvedOptions::get_int_list(std::string_view key) const {
  return std::get<std::vector<int64_t>>(value_of(*this, key, OptionType::IntList));
}
std::optional<int64_t> ResolvedOptions::get_optional_int(std::string_view key) const {
  return has(key) ? std::optional<int64_t>(get_int(key)) : std::nullopt;
}
std::optional<double> ResolvedOptions::get_optional_float(std::string_view key) const {
  return has(key) ? std::optional<double>(get_float(key)) : std::nullopt;
}
std::optional<std::string> ResolvedOptions::get_optional_string(std::string_view key) const {
  return has(key) ? std::optional<std::string>(get_string(key)) : std::nullopt;
}

bool ResolvedOptions::has(std::string_view key) const {
  return values.at(spec_of(specs, key).name).has_value();
}
bool ResolvedOptions::was_set(std::string_view key) const { return source(key) != OptionSource::Default; }
OptionSource ResolvedOptions::source(std::string_view key) const { return sources.at(spec_of(specs, key).name); }

std::optional<std::string> ResolvedOptions::positional(std::string_view name) const {
  for (size_t i = 0; i < positional_names.size(); ++i)
    if (positional_names[i] == name) return i < positionals.size() ? std::optional(positionals[i]) : std::nullopt;
  throw std::logic_error(cat("positional '", name, "' is not declared for command '", command, "'"));
}

nlohmann::json ResolvedOptions::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& s : specs) {
    const auto& v = values.at(s.name);
    if (!v) {
      j[s.name] = nullptr;
      continue;
    }
    std::visit([&](const auto& x) { j[s.name] = x; }, *v);
  }
  for (size_t i = 0; i < positionals.size() && i < positional_names.size(); ++i) j[positional_names[i]] = positionals[i];
  return j;
}

// ---------------------------------------------------------------------------------------------
// Usage

std::string usage(const CommandSpec& spec, std::string_view program) {
  auto upper = upper_case;
  std::string out = cat("usage: ", program, " ", spec.name, " [options]");
  for (const auto& p : spec.positionals) out += p.required ? cat(" ", upper(p.name)) : cat(" [", upper(p.name), "]");
  out += "\n";
  if (!spec.summary.empty()) out += cat("\n", spec.summary, "\n");

  struct Row {
    std::string left, right;
  };
  std::vector<Row> rows;
  for (const auto& o : spec.options) {
    std::string right = o.help;
    std::vector<std::string> notes;
    notes.push_back(cat("default: ", o.default_value ? value_to_string(*o.default_value) : std::string("none")));
    if (o.required) notes.back() = "required";
    if (!o.choices.empty()) notes.push_back(cat("one of: ", join(o.choices, ", ")));
    std::string range = range_text(o);
    if (!range.empty()) notes.push_back(cat("range: ", range));
    right += cat(right.empty() ? "(" : " (", join(notes, "; "), ")");
    rows.push_back({cat("--", o.name, " ", type_meta(o.type)), right});
  }
  rows.push_back({"--config FILE", "YAML or JSON file of option values; command-line flags override it"});
  rows.push_back({"-h, --help", "show this help"});

  size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.left.size());
  width = std::min<size_t>(width, 36);
  if (!spec.positionals.empty()) {
    out += "\narguments:\n";
    for (const auto& p : spec.positionals) {
      std::string left = upper(p.name);
      out += cat("  ", left, std::string(left.size() < width ? width - left.size() : 1, ' '), "  ", p.help, "\n");
    }
  }
  out += "\noptions (names as in Hugging Face; --a-b equals --a_b):\n";
  for (const auto& row : rows) {
    if (row.left.size() > width) out += cat("  ", row.left, "\n  ", std::string(width, ' '), "  ", row.right, "\n");
    else out += cat("  ", row.left, std::string(width - row.left.size(), ' '), "  ", row.right, "\n");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers

size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);  // adjacent transposition
    }
  }
  return d[n][m];
}

std::string nearest_name(std::string_view word, const std::vector<std::string>& candidates) {
  std::string w = lower(normalize_key(word));
  if (w.empty()) return "";
  // Allow more edits for longer words, but few for short ones so 'lr' does not become 'r'.
  size_t limit = w.size() <= 3 ? 1 : w.size() <= 8 ? 2 : 3;
  std::string best;
  size_t best_d = limit + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(w, lower(c));
    if (d < best_d && !(w.size() <= 3 && c.size() < 2)) {
      best_d = d;
      best = c;
    }
  }
  if (!best.empty()) return best;
  // A truncated name ('max_new' for 'max_new_tokens') is a plausible slip too.
  if (w.size() >= 4)
    for (const auto& c : candidates)
      if (lower(c).rfind(w, 0) == 0) return c;
  return "";
}

std::string normalize_key(std::string_view key) {
  size_t start = 0;
  while (start < key.size() && key[start] == '-') ++start;
  std::string out(key.substr(start));
  std::replace(out.begin(), out.end(), '-', '_');
  return out;
}

std::string type_name(OptionType type) {
  switch (type) {
    case OptionType::Bool: return "bool";
    case OptionType::Int: return "int";
    case OptionType::Float: return "float";
    case OptionType::String: return "string";
    case OptionType::StringList: return "string list";
    case OptionType::IntList: return "int list";
  }
  return "?";
}

std::string value_to_string(const OptionValue& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const { return format_double(v); }
    std::string operator()(const std::string& s) const { return s.empty() ? "\"\"" : s; }
    std::string operator()(const std::vector<std::string>& v) const { return v.empty() ? "[]" : join(v, ","); }
    std::string operator()(const std::vector<int64_t>& v) const {
      std::vector<std::string> s;
      for (auto x : v) s.push_back(std::to_string(x));
      return s.empty() ? "[]" : join(s, ",");
    }
  };
  return std::visit(Visitor{}, value);
}

}  // namespace llmtune::cli
