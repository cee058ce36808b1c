// Tensor: a shape, a dtype and a view of bytes that are either owned (heap) or borrowed from a
// memory-mapped file (kept alive through `owner`). Kernels never see this type: they take raw
// pointers and sizes, the way llm.c does, so that every kernel is testable alone.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace llmtune {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[3, 4]"

struct Tensor {
  Shape shape;
  DType dtype = DType::F32;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // keeps the storage (heap block or mmap) alive

  // A new zero-filled tensor, 64-byte aligned.
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  // A view of external memory kept alive by `owner` (may be null for unowned views).
  static Tensor view(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner);

  bool defined() const { return data != nullptr; }
  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[size_t(i < 0 ? int(shape.size()) + i : i)]; }
  int ndim() const { return int(shape.size()); }

  float* f32() { return static_cast<float*>(data); }
  const float* f32() const { return static_cast<const float*>(data); }
  template <typename T>
  T* as() { return static_cast<T*>(data); }
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }

  // A copy converted to f32 (F32/F16/BF16/F64 sources). Always owns its storage.
  Tensor to_f32() const;
  // A deep copy with its own storage.
  Tensor clone() const;
};

// 64-byte aligned heap allocation, freed by the returned shared_ptr.
std::shared_ptr<void> aligned_alloc_shared(size_t nbytes);
// How many aligned_alloc_shared calls (every owned Tensor) this process has made: tests and
// benches check that a training step after warm-up allocates none.
int64_t aligned_alloc_count();

}  // namespace llmtune
