// Reading and writing JSON files with errors that name the file, the line and the column.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace llmtune {

// Parses `text`; on a syntax error throws llmtune::Error
// "<source_name>: invalid JSON at line L, column C: <what the parser expected>".
nlohmann::json parse_json(std::string_view text, const std::string& source_name);

// Reads and parses a JSON file ("cannot open X: ..." if it cannot be read).
nlohmann::json read_json_file(const std::string& path);

// Writes `j` atomically (see write_file_atomic), pretty-printed with `indent` spaces (-1 = compact),
// with a final newline when indented.
void write_json_file(const std::string& path, const nlohmann::json& j, int indent = 2);

}  // namespace llmtune
