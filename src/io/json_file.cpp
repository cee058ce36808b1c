// JSON file helpers: nlohmann parse errors turned into one-line messages with line/column.
#include "io/json_file.h"

#include "core/error.h"
#include "io/atomic_file.h"

namespace llmtune {

namespace {

// nlohmann reports the byte position just past the offending character; turn it into the
// 1-based line and column a text editor would show.
void line_and_column(std::string_view text, size_t byte_pos, size_t* line, size_t* column) {
  size_t end = std::min(byte_pos == 0 ? 0 : byte_pos - 1, text.size());
  *line = 1;
  *column = 1;
  for (size_t i = 0; i < end; i++) {
    if (text[i] == '\n') {
      ++*line;
      *column = 1;
    } else {
      ++*column;
    }
  }
}

// "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ..." -> the part
// after the location, which is the useful description.
std::string parser_reason(const std::string& what) {
  size_t bracket = what.find(']');
  size_t start = bracket == std::string::npos ? 0 : bracket + 1;
  size_t colon = what.find(": ", start);
  std::string reason = colon == std::string::npos ? what.substr(start) : what.substr(colon + 2);
  while (!reason.empty() && reason.front() == ' ') reason.erase(reason.begin());
  return reason;
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& source_name) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    size_t line, column;
    line_and_column(text, e.byte, &line, &column);
    fail(source_name, ": invalid JSON at line ", line, ", column ", column, ": ", parser_reason(e.what()));
  }
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

void write_json_file(const std::string& path, const nlohmann::json& j, int indent) {
  std::string text;
  try {
    text = j.dump(indent);
  } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 in a string
    fail("cannot write ", path, ": ", parser_reason(e.what()));
  }
  if (indent >= 0) text += '\n';
  write_file_atomic(path, text);
}

}  // namespace llmtune
