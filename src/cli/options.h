// Option system of every `llmtune <command>`: a typed spec per command (Hugging Face key names),
// parsing of argv and of a YAML/JSON config file (flags override the file), typed access and usage text.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmtune::cli {

enum class OptionType { Bool, Int, Float, String, StringList, IntList };

using OptionValue =
    std::variant<bool, int64_t, double, std::string, std::vector<std::string>, std::vector<int64_t>>;

struct OptionSpec {
  std::string name;                        // HF spelling with underscores, e.g. "learning_rate"
  OptionType type = OptionType::String;
  std::optional<OptionValue> default_value;  // nullopt = None (no value unless the user gives one)
  std::string help;
  std::optional<double> min{}, max{};      // inclusive range for Int/Float/IntList (each element)
  std::vector<std::string> choices{};      // allowed values for String/StringList (each element)
  bool required = false;                   // parse fails when neither flag nor config file gives it
};

struct PositionalSpec {
  std::string name;  // shown upper-cased in usage, and the key in to_json()
  std::string help;
  bool required = true;
};

// The options of one command. The add_* helpers return the new spec so callers can set
// range/choices inline: `cmd.add_float("top_p", 1.0, "...").max = 1.0;`.
struct CommandSpec {
  std::string name;     // "train", "generate", ...
  std::string summary;  // one line for usage()
  std::vector<OptionSpec> options{};
  std::vector<PositionalSpec> positionals{};

  OptionSpec& add(OptionSpec spec);  // fails (std::logic_error) on a duplicate name
  OptionSpec& add_bool(std::string name, bool def, std::string help);
  OptionSpec& add_int(std::string name, std::optional<int64_t> def, std::string help);
  OptionSpec& add_float(std::string name, std::optional<double> def, std::string help);
  OptionSpec& add_string(std::string name, std::optional<std::string> def, std::string help);
  OptionSpec& add_string_list(std::string name, std::optional<std::vector<std::string>> def,
                              std::string help);
  OptionSpec& add_int_list(std::string name, std::optional<std::vector<int64_t>> def, std::string help);
  PositionalSpec& add_positional(std::string name, std::string help, bool required = true);

  const OptionSpec* find(std::string_view name) const;  // name already normalised; nullptr if absent
};

// All commands of the program; lookup of an unknown command suggests the nearest one.
struct CommandRegistry {
  std::vector<CommandSpec> commands;
  CommandSpec& add(CommandSpec spec);
  const CommandSpec& get(std::string_view name) const;  // llmtune::Error when unknown
};

enum class OptionSource { Default, ConfigFile, CommandLine };

struct ResolvedOptions {
  std::string command;
  std::vector<OptionSpec> specs;  // copy of the command's specs (types for the getters)
  std::map<std::string, std::optional<OptionValue>> values;  // every option; nullopt = None
  std::map<std::string, OptionSource> sources;
  std::vector<std::string> positional_names;  // declared positionals, in order
  std::vector<std::string> positionals;       // the given ones, in declaration order
  std::vector<std::string> config_files;  // the --config files that were read
  bool help_requested = false;           // -h / --help was given (parse stops checking 'required')

  // Typed getters. The key must be a declared option of the matching type (else std::logic_error:
  // a programming mistake); an option without a value (None) is an llmtune::Error telling the
  // user to pass it. get_float also reads Int options.
  bool get_bool(std::string_view key) const;
  int64_t get_int(std::string_view key) const;
  double get_float(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;
  const std::vector<std::string>& get_string_list(std::string_view key) const;
  const std::vector<int64_t>& get_int_list(std::string_view key) const;
  std::optional<int64_t> get_optional_int(std::string_view key) const;
  std::optional<double> get_optional_float(std::string_view key) const;
  std::optional<std::string> get_optional_string(std::string_view key) const;

  bool has(std::string_view key) const;      // has a value (given, or a non-None default)
  bool was_set(std::string_view key) const;  // given on the command line or in a config file
  OptionSource source(std::string_view key) const;
  // Positional by declared name; nullopt when an optional positional was not given.
  std::optional<std::string> positional(std::string_view name) const;

  // The resolved configuration: every option (None → null) plus the given positionals.
  nlohmann::json to_json() const;
};

// Parses the arguments after the command name. Recognised: `--key value`, `--key=value`,
// dashes as underscores, bare bool flags, `--config FILE` (.yaml/.yml/.json; repeatable, later
// files win, command-line flags win over all files), `-h`/`--help`, and `--` (all further
// arguments are positional). Every user mistake is an llmtune::Error naming key and value.
ResolvedOptions parse_options(const CommandSpec& spec, const std::vector<std::string>& args);
ResolvedOptions parse_options(const CommandSpec& spec, int argc, const char* const* argv);

// Usage text of a command: synopsis, positionals, every option with type, default, range and help.
std::string usage(const CommandSpec& spec, std::string_view program = "llmtune");

// --- helpers, public for reuse and tests ---
// Restricted Damerau–Levenshtein (optimal string alignment) distance.
size_t edit_distance(std::string_view a, std::string_view b);
// The candidate nearest to `word`, if close enough to be a plausible typo; empty otherwise.
std::string nearest_name(std::string_view word, const std::vector<std::string>& candidates);
// "--max-new-tokens" / "max-new-tokens" → "max_new_tokens".
std::string normalize_key(std::string_view key);
std::string type_name(OptionType type);
std::string value_to_string(const OptionValue& value);

}  // namespace llmtune::cli
