// Crash-safe file output: a file or a whole folder appears complete under its final name or not at
// all (write to a temporary name beside it, fsync, rename). Plus read_file with clear errors.
#pragma once
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace llmtune {

// Writes `bytes` to "<path>.tmp.<pid>" in the same directory, fsyncs it, renames it over `path`
// and fsyncs the directory. Readers see the old file or the new one, never a partial file; on
// failure the temporary file is removed and llmtune::Error is thrown ("cannot write X: ...").
void write_file_atomic(const std::string& path, std::string_view bytes);

// Same, for content made of several pieces (a header and tensor data) so that large outputs are
// never joined into one buffer first.
void write_file_atomic_parts(const std::string& path, const std::vector<std::string_view>& parts);

// The whole file as bytes; "cannot open X: <strerror>" / "cannot read X: <strerror>" on failure.
std::string read_file(const std::string& path);

// Builds a directory atomically: creates an empty "<dir>.tmp.<pid>", calls fill(tmp_dir) to put the
// contents there, then renames it to `dir`. If `dir` already exists it is swapped out (atomic
// exchange where the filesystem supports it, else renamed aside to "<dir>.old.<pid>") and removed
// afterwards, so a crash at any moment leaves either the old or the new complete folder (plus, at
// worst, a stale *.tmp.* / *.old.* folder). If fill throws, the temporary folder is removed and the
// exception propagates; `dir` is untouched.
void write_dir_atomic(const std::string& dir, const std::function<void(const std::string& tmp_dir)>& fill);

}  // namespace llmtune
