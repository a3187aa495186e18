#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/mapped_file.h"

namespace ringserve::base {

enum class DType { kF32, kBF16, kF16, kI32, kI64, kU8 };

// Bytes per element of `dtype`.
size_t DTypeSize(DType dtype);
// The safetensors name ("F32", "BF16", ...).
const char* DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(std::string_view name);

// A tensor inside a mapped file. The data stays valid while its file is open.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t bytes = 0;

  int64_t NumElements() const;
};

// One safetensors file, mapped read-only. Open validates the whole header: JSON syntax, the
// header length, dtypes, shapes, and that every tensor's byte range lies inside the file and
// matches its shape. Immutable after Open; thread-safe.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::string& path() const { return file_->path(); }
  // Hints how the whole file will be read.
  void Advise(Access access) const { AdviseMapped(file_->data(), file_->size(), access); }

 private:
  explicit SafetensorsFile(std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}

  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
};

// Parses a safetensors header of a buffer of `size` bytes (exposed for the fuzzer and tests).
absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const uint8_t* data, size_t size,
                                                                   std::string_view origin);

// model.safetensors.index.json: the shard of every tensor, and the shards in order of first
// appearance. Every shard name is a plain file name (not empty or ".", no '/', NUL or "..").
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
  std::vector<std::string> shards;
};
// Parses the text of an index file (exposed for the fuzzer and tests); `origin` names it in
// errors.
absl::StatusOr<SafetensorsIndex> ParseSafetensorsIndex(std::string_view text,
                                                       std::string_view origin);

// The tensors of a HuggingFace checkpoint directory: `model.safetensors`, or the shards named by
// `model.safetensors.index.json`. Immutable after Open; thread-safe.
class TensorStore {
 public:
  static absl::StatusOr<std::unique_ptr<TensorStore>> Open(const std::string& dir);

  // nullptr when absent.
  const TensorView* Find(const std::string& name) const;
  const std::map<std::string, const TensorView*>& all() const { return index_; }
  // Hints how every file will be read.
  void Advise(Access access) const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// A tensor to write: name, dtype, shape and raw little-endian bytes.
struct TensorData {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// A view of `data`'s bytes, valid while `data` lives.
TensorView ViewOf(const TensorData& data);

// Writes tensors as one safetensors file (header padded to 8 bytes, tensors in the given order).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors);

}  // namespace ringserve::base
