// safetensors reader (mmap + full header validation) and writer (reference-writer byte layout).
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace llmtune {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference reader's limit

// The reference writer sorts by its Dtype enum, which is declared in increasing alignment order:
// BOOL U8 I8 (F8_*) I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64. Larger rank = written first.
int writer_rank(DType t) {
  switch (t) {
    case DType::BOOL: return 0;
    case DType::U8: return 1;
    case DType::I8: return 2;
    case DType::I16: return 3;
    case DType::U16: return 4;
    case DType::F16: return 5;
    case DType::BF16: return 6;
    case DType::I32: return 7;
    case DType::U32: return 8;
    case DType::F32: return 9;
    case DType::F64: return 10;
    case DType::I64: return 11;
    case DType::U64: return 12;
  }
  return 0;
}

std::string offsets_str(uint64_t begin, uint64_t end) { return cat("[", begin, ", ", end, "]"); }

std::string supported_dtypes() {
  std::string s;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8, DType::U8, DType::I16, DType::U16,
                  DType::I32, DType::U32, DType::I64, DType::U64, DType::BOOL})
    s += cat(s.empty() ? "" : " ", dtype_name(t));
  return s;
}

// Parses one tensor entry of the header into `out`, checking everything that concerns the entry
// alone (the layout as a whole is checked by the caller).
void parse_entry(const std::string& path, const std::string& name, const nlohmann::json& entry, uint64_t data_size,
                 SafetensorsTensorInfo* out) {
  if (!entry.is_object()) fail(path, ": tensor '", name, "' has a header entry that is not a JSON object");

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) fail(path, ": tensor '", name, "' has no dtype string");
  const std::string dtype = dtype_it->get<std::string>();
  if (!dtype_from_name(dtype, &out->dtype))
    fail(path, ": tensor '", name, "' has unknown or unsupported dtype '", dtype, "' (supported: ", supported_dtypes(),
         ")");

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array())
    fail(path, ": tensor '", name, "' has no shape (expected a list of non-negative integers)");
  out->shape.clear();
  for (const auto& d : *shape_it) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(path, ": tensor '", name, "' has an invalid shape ", shape_it->dump(),
           " (expected a list of non-negative integers)");
    out->shape.push_back(int64_t(d.get<uint64_t>()));
  }

  auto off_it = entry.find("data_offsets");
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
      !(*off_it)[1].is_number_unsigned())
    fail(path, ": tensor '", name, "' has missing or invalid data_offsets",
         off_it == entry.end() ? std::string() : " " + off_it->dump(), " (expected [begin, end])");
  out->begin = (*off_it)[0].get<uint64_t>();
  out->end = (*off_it)[1].get<uint64_t>();
  const std::string offsets = offsets_str(out->begin, out->end);
  if (out->begin > out->end) fail(path, ": tensor '", name, "' has data_offsets ", offsets, " with begin > end");
  if (out->end > data_size)
    fail(path, ": tensor '", name, "' has data_offsets ", offsets, " beyond the end of the data section (", data_size,
         " bytes)");

  uint64_t nbytes = dtype_size(out->dtype);
  for (int64_t d : out->shape)
    if (__builtin_mul_overflow(nbytes, uint64_t(d), &nbytes))
      fail(path, ": tensor '", name, "' has shape ", shape_str(out->shape), " whose size overflows");
  if (out->end - out->begin != nbytes)
    fail(path, ": tensor '", name, "' has data_offsets ", offsets, " but shape ", shape_str(out->shape), " of ", dtype,
         " needs ", nbytes, " bytes");
}

// Entries sorted by offset must tile the data section exactly: from 0, no gaps, no overlaps, up to
// its last byte. Anything else means a corrupt file or one we would misread.
void check_layout(const std::string& path, const std::map<std::string, SafetensorsTensorInfo>& tensors,
                  uint64_t data_size) {
  std::vector<std::pair<const std::string*, const SafetensorsTensorInfo*>> by_offset;
  by_offset.reserve(tensors.size());
  for (const auto& [name, info] : tensors) by_offset.emplace_back(&name, &info);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
  });
  uint64_t covered = 0;
  const std::string* prev_name = nullptr;
  const SafetensorsTensorInfo* prev = nullptr;
  for (const auto& [name, info] : by_offset) {
    if (info->begin < covered)
      fail(path, ": tensor '", *name, "' (data_offsets ", offsets_str(info->begin, info->end), ") overlaps tensor '",
           *prev_name, "' (data_offsets ", offsets_str(prev->begin, prev->end), ")");
    if (info->begin > covered) {
      if (prev)
        fail(path, ": gap of ", info->begin - covered, " unused bytes between tensor '", *prev_name, "' (data_offsets ",
             offsets_str(prev->begin, prev->end), ") and tensor '", *name, "' (data_offsets ",
             offsets_str(info->begin, info->end), ")");
      fail(path, ": gap of ", info->begin, " unused bytes at the start of the data section, before tensor '", *name,
           "' (data_offsets ", offsets_str(info->begin, info->end), ")");
    }
    covered = info->end;
    prev_name = name;
    prev = info;
  }
  if (covered != data_size)
    fail(path, ": the data section has ", data_size, " bytes but the tensors cover only ", covered, " (",
         data_size - covered, " trailing bytes not described by the header)");
}

}  // namespace

MappedFile::~MappedFile() {
  if (data) ::munmap(const_cast<uint8_t*>(data), size);
}

SafetensorsFile open_safetensors(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open ", path, ": ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    fail("cannot open ", path, ": ", err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail(path, ": file is truncated: it has ", file_size,
         " bytes but a safetensors file starts with an 8-byte header length");
  }
  auto mapping = std::make_shared<MappedFile>();
  void* addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  std::string map_err = addr == MAP_FAILED ? std::strerror(errno) : "";
  ::close(fd);  // the mapping stays valid without the descriptor
  if (addr == MAP_FAILED) fail("cannot map ", path, " into memory: ", map_err);
  mapping->data = static_cast<const uint8_t*>(addr);
  mapping->size = file_size;

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | mapping->data[i];  // little-endian
  if (header_len > kMaxHeaderBytes)
    fail(path, ": header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes,
         " bytes (not a safetensors file, or a corrupt one)");
  if (8 + header_len > file_size)
    fail(path, ": file is truncated: header says ", header_len, " bytes but the file has only ", file_size - 8,
         " bytes after the 8-byte length");

  SafetensorsFile f;
  f.path = path;
  f.mapping = mapping;
  f.data_start = 8 + header_len;
  const uint64_t data_size = file_size - f.data_start;

  // nlohmann rejects ill-formed UTF-8 inside strings, and any non-ASCII byte outside strings is a
  // syntax error anyway, so a successful parse implies a valid UTF-8 header.
  std::string_view header_text(reinterpret_cast<const char*>(mapping->data + 8), header_len);
  nlohmann::json header = parse_json(header_text, path + ": header");
  if (!header.is_object()) fail(path, ": header is not a JSON object");

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(path, ": __metadata__ is not a JSON object of strings");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail(path, ": __metadata__ value for key '", mk, "' is not a string (it is ", mv.dump(),
               "); safetensors metadata must map strings to strings");
        f.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    SafetensorsTensorInfo info;
    parse_entry(path, key, value, data_size, &info);
    f.tensors.emplace(key, std::move(info));
  }
  check_layout(path, f.tensors, data_size);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors.size());
  for (const auto& kv : tensors) out.push_back(kv.first);
  return out;
}

bool SafetensorsFile::has(const std::string& name) const { return tensors.count(name) != 0; }

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) fail(path, ": no tensor named '", name, "'");
  return it->second;
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const SafetensorsTensorInfo& ti = info(name);
  const uint8_t* p = mapping->data + data_start + ti.begin;
  Tensor view = Tensor::view(const_cast<uint8_t*>(p), ti.shape, ti.dtype, mapping);
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(ti.dtype) != 0) return view.clone();
  return view;
}

Tensor SafetensorsFile::get_f32(const std::string& name) const {
  const SafetensorsTensorInfo& ti = info(name);
  if (ti.dtype != DType::F32 && ti.dtype != DType::F16 && ti.dtype != DType::BF16 && ti.dtype != DType::F64)
    fail(path, ": tensor '", name, "' has dtype ", dtype_name(ti.dtype),
         ", which cannot be converted to F32 (only F32, F16, BF16, F64 can)");
  return get(name).to_f32();
}

std::string safetensors_header_bytes(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                     const std::map<std::string, std::string>& metadata, std::vector<size_t>* order) {
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < tensors.size(); i++) {
    const auto& [name, t] = tensors[i];
    if (name == "__metadata__") fail("cannot write a tensor named '__metadata__' (reserved by safetensors)");
    if (!seen.emplace(name, i).second) fail("cannot write two tensors named '", name, "'");
    for (int64_t d : t.shape)
      if (d < 0) fail("cannot write tensor '", name, "': negative dimension in shape ", shape_str(t.shape));
    if (!t.defined() && t.nbytes() != 0) fail("cannot write tensor '", name, "': it has no data");
  }

  order->resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); i++) (*order)[i] = i;
  std::sort(order->begin(), order->end(), [&](size_t a, size_t b) {
    int ra = writer_rank(tensors[a].second.dtype), rb = writer_rank(tensors[b].second.dtype);
    if (ra != rb) return ra > rb;
    return tensors[a].first < tensors[b].first;  // char_traits<char> compares bytes as unsigned
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (size_t i : *order) {
    const auto& [name, t] = tensors[i];
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype_name(t.dtype);
    nlohmann::ordered_json shape = nlohmann::ordered_json::array();
    for (int64_t d : t.shape) shape.push_back(uint64_t(d));
    entry["shape"] = std::move(shape);
    entry["data_offsets"] = {offset, offset + t.nbytes()};
    offset += t.nbytes();
    header[name] = std::move(entry);
  }

  std::string text;
  try {
    text = header.dump();  // compact, like serde_json::to_string
  } catch (const nlohmann::json::exception& e) {
    fail("cannot write safetensors: a tensor name or metadata string is not valid UTF-8 (", e.what(), ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; i++) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  out += text;
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<size_t> order;
  std::string header;
  try {
    header = safetensors_header_bytes(tensors, metadata, &order);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  std::vector<std::string_view> parts;
  parts.reserve(tensors.size() + 1);
  parts.emplace_back(header);
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    if (t.nbytes()) parts.emplace_back(static_cast<const char*>(t.data), t.nbytes());
  }
  write_file_atomic_parts(path, parts);
}

}  // namespace llmtune
