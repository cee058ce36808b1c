// Tensor storage helpers.
#include <atomic>
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "core/error.h"

namespace llmtune {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); i++) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

namespace {
std::atomic<int64_t> alloc_count{0};
}

int64_t aligned_alloc_count() { return alloc_count.load(std::memory_order_relaxed); }

std::shared_ptr<void> aligned_alloc_shared(size_t nbytes) {
  alloc_count.fetch_add(1, std::memory_order_relaxed);
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) fail("out of memory allocating ", nbytes, " bytes");
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t;
  t.shape = shape;
  t.dtype = dtype;
  t.owner = aligned_alloc_shared(t.nbytes());
  t.data = t.owner.get();
  std::memset(t.data, 0, t.nbytes());
  return t;
}

Tensor Tensor::view(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner) {
  Tensor t;
  t.shape = shape;
  t.dtype = dtype;
  t.data = data;
  t.owner = std::move(owner);
  return t;
}

Tensor Tensor::to_f32() const {
  Tensor t = zeros(shape, DType::F32);
  convert_to_f32(data, dtype, t.f32(), size_t(numel()));
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = zeros(shape, dtype);
  if (nbytes()) std::memcpy(t.data, data, nbytes());
  return t;
}

}  // namespace llmtune
