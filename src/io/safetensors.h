// safetensors files: a validating, memory-mapped reader with zero-copy tensor views, and a writer
// that produces the same bytes as the reference (Rust) writer. Format: hf-semantics.md §2.4.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace llmtune {

struct SafetensorsTensorInfo {
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
};

// A read-only memory mapping of a whole file; unmapped when the last holder lets go.
struct MappedFile {
  const uint8_t* data = nullptr;
  size_t size = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
};

// An opened, fully validated safetensors file. Copies share the mapping.
struct SafetensorsFile {
  std::string path;
  std::shared_ptr<MappedFile> mapping;
  uint64_t data_start = 0;  // 8 + header length
  std::map<std::string, SafetensorsTensorInfo> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__" (empty if absent)

  std::vector<std::string> names() const;  // sorted by name
  bool has(const std::string& name) const;
  // Fails with "<path>: no tensor named 'X'" when absent.
  const SafetensorsTensorInfo& info(const std::string& name) const;

  // The tensor as stored (its dtype and shape). Zero-copy: a view into the mapping, which the
  // Tensor's owner keeps alive even after this SafetensorsFile is gone. The view is READ-ONLY
  // (the mapping is PROT_READ; writing through it faults): clone() to modify.
  // Alignment: files from the standard writers put every tensor at an address aligned for its dtype
  // (8-byte header padding + descending-alignment order). If a tensor in some other file is NOT
  // aligned for its dtype, get() returns an owned, 64-byte-aligned copy instead of a view, so
  // kernels never see a misaligned pointer.
  Tensor get(const std::string& name) const;

  // The tensor converted to an owned F32 tensor (sources F32/F16/BF16/F64; other dtypes fail).
  Tensor get_f32(const std::string& name) const;
};

// Opens and maps `path` (read-only, MAP_PRIVATE) and validates the whole header before anything is
// used; every problem is an llmtune::Error "<path>: <what is wrong>".
SafetensorsFile open_safetensors(const std::string& path);

// The file's bytes up to the data section: 8-byte little-endian length N, then the compact JSON
// header right-padded with spaces to a multiple of 8. Tensors are laid out in the reference
// writer's order: descending dtype alignment (U64 I64 F64 F32 U32 I32 BF16 F16 U16 I16 I8 U8 BOOL),
// then by name (bytewise). `order` receives the indices into `tensors` in layout order.
// An empty `metadata` writes no "__metadata__" key (like save_file(..., metadata=None)).
std::string safetensors_header_bytes(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                     const std::map<std::string, std::string>& metadata, std::vector<size_t>* order);

// Writes a safetensors file atomically (write_file_atomic): the header above, then each tensor's
// bytes in layout order, with no padding between tensors.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace llmtune
