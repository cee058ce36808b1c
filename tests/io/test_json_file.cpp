// JSON file reading: errors name the file, line and column.
#include <gtest/gtest.h>

#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io_test_util.h"

using namespace llmtune;
using llmtune::testing::error_of;
using llmtune::testing::TempDir;

TEST(JsonFile, ReadsAndWritesRoundTrip) {
  TempDir dir;
  nlohmann::json j = {{"a", 1}, {"b", {1, 2, 3}}, {"c", "é"}};
  write_json_file(dir.file("x.json"), j);
  EXPECT_EQ(read_json_file(dir.file("x.json")), j);
  EXPECT_EQ(read_file(dir.file("x.json")).back(), '\n');
}

TEST(JsonFile, SyntaxErrorNamesFileLineAndColumn) {
  TempDir dir;
  std::string path = dir.file("config.json");
  write_file_atomic(path, "{\n  \"a\": 1,\n  \"b\": }\n");
  std::string e = error_of([&] { read_json_file(path); });
  EXPECT_NE(e.find(path + ": invalid JSON at line 3, column 8: "), std::string::npos) << e;
  EXPECT_NE(e.find("unexpected '}'"), std::string::npos) << e;
  EXPECT_EQ(e.find("[json.exception"), std::string::npos) << e;
}

TEST(JsonFile, MissingFileAndEmptyFile) {
  TempDir dir;
  EXPECT_NE(error_of([&] { read_json_file(dir.file("nope.json")); }).find("cannot open"), std::string::npos);
  write_file_atomic(dir.file("empty.json"), "");
  std::string e = error_of([&] { read_json_file(dir.file("empty.json")); });
  EXPECT_NE(e.find("empty.json: invalid JSON at line 1"), std::string::npos) << e;
}
