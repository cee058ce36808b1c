// safetensors: round trips, byte-exact layout against the reference writer, and one test per kind
// of corrupt file (each must give an llmtune::Error naming the file and the problem).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/dtype.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io_test_util.h"

using namespace llmtune;
using llmtune::testing::error_of;
using llmtune::testing::TempDir;

namespace {

Tensor make_f32(const Shape& shape, float start = 0.0f) {
  Tensor t = Tensor::zeros(shape, DType::F32);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = start + float(i);
  return t;
}

// Fills a tensor of any dtype with a byte pattern that differs per tensor.
Tensor make_bytes(const Shape& shape, DType dtype, uint8_t seed) {
  Tensor t = Tensor::zeros(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.data);
  for (size_t i = 0; i < t.nbytes(); i++) p[i] = uint8_t(seed + i * 7);
  return t;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; i++) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file made by hand: 8-byte length (`header.size()` unless overridden), header, data.
std::string write_raw(const TempDir& dir, const std::string& header, const std::string& data,
                      int64_t header_len_override = -1) {
  std::string path = dir.file("model.safetensors");
  uint64_t n = header_len_override >= 0 ? uint64_t(header_len_override) : header.size();
  write_file_atomic(path, le64(n) + header + data);
  return path;
}

std::string open_error(const std::string& path) {
  return error_of([&] { open_safetensors(path); });
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && (a.nbytes() == 0 || std::memcmp(a.data, b.data, a.nbytes()) == 0);
}

}  // namespace

TEST(Safetensors, RoundTripDtypesScalarsEmptyAndMetadata) {
  TempDir dir;
  Tensor f16 = Tensor::zeros({3}, DType::F16);
  Tensor bf16 = Tensor::zeros({2, 2}, DType::BF16);
  for (int i = 0; i < 3; i++) f16.as<uint16_t>()[i] = f32_to_f16(0.5f * float(i) - 1.0f);
  for (int i = 0; i < 4; i++) bf16.as<uint16_t>()[i] = f32_to_bf16(float(i) * 3.0f);
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"w.f32", make_f32({2, 3}, 1.5f)},
      {"w.f16", f16},
      {"w.bf16", bf16},
      {"ids", make_bytes({5}, DType::I32, 1)},
      {"scalar", make_f32({}, 42.0f)},
      {"empty", Tensor::zeros({0, 4}, DType::F32)},
      {"mask", make_bytes({3}, DType::BOOL, 0)},
      {"big", make_bytes({2}, DType::I64, 9)},
      {"d", make_bytes({1, 1}, DType::F64, 3)},
      {"u8", make_bytes({7}, DType::U8, 5)},
  };
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "héllo \"quoted\"\n"}};
  std::string path = dir.file("x.safetensors");
  write_safetensors(path, tensors, metadata);

  SafetensorsFile f = open_safetensors(path);
  EXPECT_EQ(f.metadata, metadata);
  EXPECT_EQ(f.names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f.has(name)) << name;
    EXPECT_EQ(f.info(name).dtype, t.dtype) << name;
    EXPECT_EQ(f.info(name).shape, t.shape) << name;
    Tensor got = f.get(name);
    EXPECT_EQ(got.dtype, t.dtype);
    EXPECT_EQ(got.shape, t.shape);
    EXPECT_TRUE(same_bytes(got, t)) << name;
  }
  EXPECT_EQ(f.get("scalar").numel(), 1);
  EXPECT_EQ(f.get("scalar").f32()[0], 42.0f);
  EXPECT_EQ(f.get("empty").numel(), 0);
  EXPECT_FALSE(f.has("nope"));
  EXPECT_NE(error_of([&] { f.get("nope"); }).find("no tensor named 'nope'"), std::string::npos);
}

TEST(Safetensors, NoMetadataWritesNoMetadataKey) {
  TempDir dir;
  std::string path = dir.file("a.safetensors");
  write_safetensors(path, {{"a", make_f32({1})}});
  std::string bytes = read_file(path);
  EXPECT_EQ(bytes.find("__metadata__"), std::string::npos);
  EXPECT_TRUE(open_safetensors(path).metadata.empty());
}

TEST(Safetensors, GetF32ConvertsHalfBfloatDouble) {
  TempDir dir;
  const float values[4] = {1.0f, -2.5f, 0.15625f, 1024.0f};  // exact in f16 and bf16
  Tensor f16 = Tensor::zeros({4}, DType::F16), bf16 = Tensor::zeros({4}, DType::BF16);
  Tensor f64 = Tensor::zeros({4}, DType::F64);
  for (int i = 0; i < 4; i++) {
    f16.as<uint16_t>()[i] = f32_to_f16(values[i]);
    bf16.as<uint16_t>()[i] = f32_to_bf16(values[i]);
    f64.as<double>()[i] = double(values[i]);
  }
  std::string path = dir.file("c.safetensors");
  write_safetensors(
      path, {{"h", f16}, {"b", bf16}, {"d", f64}, {"f", make_f32({4}, 0)}, {"i", make_bytes({4}, DType::I32, 0)}});
  SafetensorsFile f = open_safetensors(path);
  for (const char* name : {"h", "b", "d"}) {
    Tensor t = f.get_f32(name);
    ASSERT_EQ(t.dtype, DType::F32);
    ASSERT_EQ(t.shape, Shape{4});
    for (int i = 0; i < 4; i++) EXPECT_EQ(t.f32()[i], values[i]) << name << " " << i;
  }
  Tensor fcopy = f.get_f32("f");
  EXPECT_NE(fcopy.data, f.get("f").data);  // owned, not the view
  EXPECT_EQ(fcopy.f32()[3], 3.0f);
  EXPECT_NE(error_of([&] { f.get_f32("i"); }).find("has dtype I32, which cannot be converted to F32"),
            std::string::npos);
}

TEST(Safetensors, ViewIsZeroCopyAndKeepsTheMappingAlive) {
  TempDir dir;
  std::string path = dir.file("v.safetensors");
  write_safetensors(path, {{"w", make_f32({1000}, 7.0f)}});
  Tensor view;
  {
    SafetensorsFile f = open_safetensors(path);
    view = f.get("w");
    const uint8_t* lo = f.mapping->data;
    const uint8_t* p = static_cast<const uint8_t*>(view.data);
    EXPECT_TRUE(p >= lo && p + view.nbytes() <= lo + f.mapping->size) << "get() must not copy aligned data";
  }
  std::filesystem::remove(path);  // the mapping outlives both the SafetensorsFile and the name
  EXPECT_EQ(view.f32()[0], 7.0f);
  EXPECT_EQ(view.f32()[999], 1006.0f);
}

TEST(Safetensors, MisalignedTensorIsReturnedAsAlignedCopy) {
  TempDir dir;
  // Header of 9 bytes is legal for readers (the 8-byte padding is writer behaviour only), and puts
  // the F32 data at file offset 17.
  std::string header = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - header.size() % 8) % 8 + 1, ' ');  // 8 + N == 1 (mod 8)
  ASSERT_NE((8 + header.size()) % 4, 0u);
  float v[2] = {3.25f, -1.0f};
  std::string data(reinterpret_cast<const char*>(v), 8);
  SafetensorsFile f = open_safetensors(write_raw(dir, header, data));
  Tensor t = f.get("t");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 4, 0u);
  EXPECT_EQ(t.f32()[0], 3.25f);
  EXPECT_EQ(t.f32()[1], -1.0f);
  EXPECT_EQ(f.get_f32("t").f32()[0], 3.25f);
}

// Hand-computed: the header below is 85 bytes, padded with 3 spaces to N = 88.
TEST(Safetensors, ByteExactLayoutSmallCase) {
  TempDir dir;
  std::string path = dir.file("a.safetensors");
  Tensor a = Tensor::zeros({2}, DType::F32);
  a.f32()[0] = 1.0f;  // 00 00 80 3f
  a.f32()[1] = 2.0f;  // 00 00 00 40
  write_safetensors(path, {{"a", a}}, {{"format", "pt"}});
  std::string expected = std::string("\x58\0\0\0\0\0\0\0", 8) +
                         R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})" +
                         "   " + std::string("\0\0\x80\x3f\0\0\0\x40", 8);
  EXPECT_EQ(read_file(path), expected);
}

// The byte vectors of the reference implementation's own serializer tests (safetensors/src/tensor.rs:
// test_serialization, test_serialization_forced_alignement, test_empty).
TEST(Safetensors, MatchesReferenceWriterBytes) {
  TempDir dir;
  std::string data;
  for (float x : {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f}) data.append(reinterpret_cast<const char*>(&x), 4);
  auto f32_from = [&](const Shape& shape) {
    Tensor t = Tensor::zeros(shape, DType::F32);
    std::memcpy(t.data, data.data(), 24);
    return t;
  };
  std::string p1 = dir.file("1.safetensors");
  write_safetensors(p1, {{"attn.0", f32_from({1, 2, 3})}});
  EXPECT_EQ(read_file(p1), le64(64) + R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})" + data);

  std::string p2 = dir.file("2.safetensors");
  write_safetensors(p2, {{"attn0", f32_from({1, 1, 2, 3})}});
  EXPECT_EQ(read_file(p2),
            le64(72) + R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" + "       " + data);

  std::string p3 = dir.file("3.safetensors");
  write_safetensors(p3, {});
  EXPECT_EQ(read_file(p3), le64(8) + "{}      ");
  write_safetensors(p3, {}, {{"framework", "pt"}});
  EXPECT_EQ(read_file(p3), le64(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  EXPECT_TRUE(open_safetensors(p3).tensors.empty());
}

TEST(Safetensors, WriterOrdersByDescendingDtypeAlignmentThenName) {
  TempDir dir;
  std::string path = dir.file("o.safetensors");
  write_safetensors(path, {{"b", make_bytes({3}, DType::F16, 1)},
                           {"a", make_bytes({1}, DType::F16, 2)},
                           {"z", make_bytes({1}, DType::F32, 3)},
                           {"d", make_bytes({3}, DType::U8, 4)},
                           {"c", make_bytes({1}, DType::I64, 5)},
                           {"e", make_bytes({1}, DType::BF16, 6)},
                           {"f", make_bytes({2}, DType::BOOL, 7)}});
  // I64(8) F32(4) BF16(2) F16 a(2) F16 b(6) U8(3) BOOL(2)
  std::string header = R"({"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
                       R"("z":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
                       R"("e":{"dtype":"BF16","shape":[1],"data_offsets":[12,14]},)"
                       R"("a":{"dtype":"F16","shape":[1],"data_offsets":[14,16]},)"
                       R"("b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},)"
                       R"("d":{"dtype":"U8","shape":[3],"data_offsets":[22,25]},)"
                       R"("f":{"dtype":"BOOL","shape":[2],"data_offsets":[25,27]}})";
  std::string bytes = read_file(path);
  ASSERT_GE(bytes.size(), 8 + header.size());
  EXPECT_EQ(bytes.substr(8, header.size()), header);
  SafetensorsFile f = open_safetensors(path);
  for (const auto& name : f.names())  // descending alignment keeps every view aligned
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.get(name).data) % dtype_size(f.info(name).dtype), 0u) << name;
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  EXPECT_NE(error_of([&] {
              write_safetensors(path, {{"a", make_f32({1})}, {"a", make_f32({1})}});
            }).find("two tensors named 'a'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(path, {{"__metadata__", make_f32({1})}});
            }).find("reserved"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_safetensors(path, {{"a", Tensor::view(nullptr, {2}, DType::F32, nullptr)}});
            }).find("has no data"),
            std::string::npos);
  EXPECT_NE(error_of([&] { write_safetensors(path, {{"bad\xff", make_f32({1})}}); }).find("UTF-8"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(path));
}

// ---- corrupt files ----

const char* kGoodEntry = R"("x.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";

TEST(SafetensorsCorrupt, ValidHandMadeFileOpens) {  // the baseline the corruptions start from
  TempDir dir;
  SafetensorsFile f = open_safetensors(write_raw(dir, std::string("{") + kGoodEntry + "}", std::string(24, '\0')));
  EXPECT_EQ(f.info("x.weight").shape, (Shape{2, 3}));
}

TEST(SafetensorsCorrupt, FileShorterThanEightBytes) {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  write_file_atomic(path, "abc");
  std::string e = open_error(path);
  EXPECT_NE(e.find(path + ": file is truncated: it has 3 bytes"), std::string::npos) << e;
  write_file_atomic(path, "");
  EXPECT_NE(open_error(path).find("truncated"), std::string::npos);
}

TEST(SafetensorsCorrupt, HeaderLongerThanFile) {
  TempDir dir;
  std::string path = write_raw(dir, std::string("{") + kGoodEntry + "}", std::string(24, '\0'), 1000);
  std::string e = open_error(path);
  EXPECT_NE(e.find("file is truncated: header says 1000 bytes but the file has only 88 bytes"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, HeaderTooBig) {
  TempDir dir;
  std::string e = open_error(write_raw(dir, "{}", "", 100'000'001));
  EXPECT_NE(e.find("header length 100000001 exceeds the limit of 100000000 bytes"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, InvalidJson) {
  TempDir dir;
  std::string e = open_error(write_raw(dir, R"({"x.weight":{"dtype":"F32",})", ""));
  EXPECT_NE(e.find("model.safetensors: header: invalid JSON at line 1, column"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, InvalidUtf8) {
  TempDir dir;
  std::string e = open_error(
      write_raw(dir, "{\"x\xff\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", std::string(4, '\0')));
  EXPECT_NE(e.find("invalid JSON"), std::string::npos) << e;
  EXPECT_NE(e.find("UTF-8"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  TempDir dir;
  EXPECT_NE(open_error(write_raw(dir, "[1,2]   ", "")).find("header is not a JSON object"), std::string::npos);
}

TEST(SafetensorsCorrupt, UnknownDtype) {
  TempDir dir;
  std::string e =
      open_error(write_raw(dir, R"({"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", std::string(2, '\0')));
  EXPECT_NE(e.find("tensor 'q' has unknown or unsupported dtype 'F8_E4M3'"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, BadShape) {
  TempDir dir;
  std::string e =
      open_error(write_raw(dir, R"({"q":{"dtype":"F32","shape":[-1,2],"data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_NE(e.find("tensor 'q' has an invalid shape [-1,2]"), std::string::npos) << e;
  e = open_error(write_raw(dir, R"({"q":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_NE(e.find("invalid shape"), std::string::npos) << e;
  e = open_error(write_raw(dir, R"({"q":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_NE(e.find("tensor 'q' has no shape"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, ShapeOverflow) {
  TempDir dir;
  std::string e = open_error(write_raw(
      dir, R"({"q":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", std::string(8, '\0')));
  EXPECT_NE(e.find("overflows"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, BadOrMissingOffsets) {
  TempDir dir;
  std::string e = open_error(write_raw(dir, R"({"q":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')));
  EXPECT_NE(e.find("tensor 'q' has missing or invalid data_offsets"), std::string::npos) << e;
  e = open_error(write_raw(dir, R"({"q":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", std::string(8, '\0')));
  EXPECT_NE(e.find("invalid data_offsets [0]"), std::string::npos) << e;
  e = open_error(write_raw(dir, R"({"q":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, '\0')));
  EXPECT_NE(e.find("tensor 'q' has data_offsets [8, 0] with begin > end"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, OffsetsOutOfRange) {
  TempDir dir;
  std::string e = open_error(write_raw(dir, std::string("{") + kGoodEntry + "}", std::string(20, '\0')));
  EXPECT_NE(e.find("tensor 'x.weight' has data_offsets [0, 24] beyond the end of the data section (20 bytes)"),
            std::string::npos)
      << e;
}

TEST(SafetensorsCorrupt, SizeMismatchAgainstShape) {
  TempDir dir;
  std::string e = open_error(
      write_raw(dir, R"({"x.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}})", std::string(12, '\0')));
  EXPECT_NE(e.find("model.safetensors: tensor 'x.weight' has data_offsets [0, 12] but shape [2, 3] of F32 needs 24 "
                   "bytes"),
            std::string::npos)
      << e;
}

TEST(SafetensorsCorrupt, OverlappingOffsets) {
  TempDir dir;
  std::string e = open_error(write_raw(dir,
                                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                       std::string(12, '\0')));
  EXPECT_NE(e.find("tensor 'b' (data_offsets [4, 12]) overlaps tensor 'a' (data_offsets [0, 8])"), std::string::npos)
      << e;
}

TEST(SafetensorsCorrupt, GapBetweenTensorsAndAtStart) {
  TempDir dir;
  std::string e = open_error(write_raw(dir,
                                       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                       std::string(20, '\0')));
  EXPECT_NE(e.find("gap of 4 unused bytes between tensor 'a'"), std::string::npos) << e;
  e = open_error(write_raw(dir, R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, '\0')));
  EXPECT_NE(e.find("gap of 4 unused bytes at the start of the data section, before tensor 'b'"), std::string::npos)
      << e;
}

TEST(SafetensorsCorrupt, TrailingDataNotCovered) {
  TempDir dir;
  std::string e = open_error(write_raw(dir, std::string("{") + kGoodEntry + "}", std::string(30, '\0')));
  EXPECT_NE(e.find("the data section has 30 bytes but the tensors cover only 24 (6 trailing bytes"), std::string::npos)
      << e;
}

TEST(SafetensorsCorrupt, NonStringMetadata) {
  TempDir dir;
  std::string e = open_error(write_raw(
      dir, std::string(R"({"__metadata__":{"format":"pt","step":3},)") + kGoodEntry + "}", std::string(24, '\0')));
  EXPECT_NE(e.find("__metadata__ value for key 'step' is not a string"), std::string::npos) << e;
  e = open_error(write_raw(dir, R"({"__metadata__":[1]})", ""));
  EXPECT_NE(e.find("__metadata__ is not a JSON object"), std::string::npos) << e;
}

TEST(SafetensorsCorrupt, EntryNotAnObjectAndMissingFile) {
  TempDir dir;
  EXPECT_NE(
      open_error(write_raw(dir, R"({"a":3})", "")).find("tensor 'a' has a header entry that is not a JSON object"),
      std::string::npos);
  std::string missing = dir.file("missing.safetensors");
  std::string e = open_error(missing);
  EXPECT_NE(e.find("cannot open " + missing + ": No such file or directory"), std::string::npos) << e;
  EXPECT_NE(open_error(dir.path).find("not a regular file"), std::string::npos);
}
