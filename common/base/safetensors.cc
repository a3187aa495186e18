#include "common/base/safetensors.h"

#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace ringserve::base {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {{DType::kF32, "F32", 4}, {DType::kBF16, "BF16", 2},
                                  {DType::kF16, "F16", 2}, {DType::kI32, "I32", 4},
                                  {DType::kI64, "I64", 8}, {DType::kU8, "U8", 1}};

}  // namespace

size_t DTypeSize(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.size;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.name;
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype '", std::string(name), "'"));
}

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::map<std::string, TensorView>> ParseSafetensors(const uint8_t* data, size_t size,
                                                                   std::string_view origin) {
  if (size < 8) {
    return absl::DataLossError(absl::StrCat(std::string(origin), ": file of ", size,
                                            " bytes is too short for a safetensors header"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, data, 8);
  if (header_len > kMaxHeaderBytes) {
    return absl::DataLossError(absl::StrCat(std::string(origin), ": header length ", header_len,
                                            " exceeds the limit ", kMaxHeaderBytes));
  }
  if (header_len > size - 8) {
    return absl::DataLossError(absl::StrCat(std::string(origin), ": header length ", header_len,
                                            " runs past the end of the file (", size, " bytes)"));
  }
  const std::string_view header(reinterpret_cast<const char*>(data + 8), header_len);
  nlohmann::json json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::DataLossError(
        absl::StrCat(std::string(origin), ": header is not a valid JSON object"));
  }
  const uint8_t* body = data + 8 + header_len;
  const uint64_t body_size = size - 8 - header_len;
  std::map<std::string, TensorView> out;
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& entry = it.value();
    const std::string where = absl::StrCat(std::string(origin), ": tensor '", it.key(), "'");
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() ||
        !entry.contains("shape") || !entry["shape"].is_array() || !entry.contains("data_offsets") ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return absl::DataLossError(
          absl::StrCat(where, " needs string dtype, array shape and two data_offsets"));
    }
    TensorView view;
    view.name = it.key();
    auto dtype = ParseDType(entry["dtype"].get<std::string>());
    if (!dtype.ok())
      return absl::DataLossError(absl::StrCat(where, ": ", dtype.status().message()));
    view.dtype = *dtype;
    uint64_t elements = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) {
        return absl::DataLossError(absl::StrCat(where, " has a shape entry that is not a size"));
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && elements > std::numeric_limits<uint64_t>::max() / 16 / dim) {
        return absl::DataLossError(absl::StrCat(where, " has an impossibly large shape"));
      }
      elements *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offs = entry["data_offsets"];
    if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
      return absl::DataLossError(absl::StrCat(where, " has non-integer data_offsets"));
    }
    const uint64_t begin = offs[0].get<uint64_t>();
    const uint64_t end = offs[1].get<uint64_t>();
    if (begin > end || end > body_size) {
      return absl::DataLossError(absl::StrCat(where, " data_offsets [", begin, ", ", end,
                                              ") lie outside the data section of ", body_size,
                                              " bytes (truncated file?)"));
    }
    const uint64_t expected = elements * DTypeSize(view.dtype);
    if (end - begin != expected) {
      return absl::DataLossError(absl::StrCat(where, " holds ", end - begin,
                                              " bytes but its shape and dtype need ", expected));
    }
    view.data = body + begin;
    view.bytes = end - begin;
    out.emplace(view.name, std::move(view));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> st(new SafetensorsFile(std::move(file)));
  ASSIGN_OR_RETURN(st->tensors_, ParseSafetensors(st->file_->data(), st->file_->size(), path));
  return st;
}

absl::StatusOr<SafetensorsIndex> ParseSafetensorsIndex(std::string_view text,
                                                       std::string_view origin) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, false);
  if (json.is_discarded() || !json.is_object() || !json.contains("weight_map") ||
      !json["weight_map"].is_object()) {
    return absl::DataLossError(
        absl::StrCat(std::string(origin), ": not a JSON object with a weight_map object"));
  }
  SafetensorsIndex index;
  std::set<std::string> unique;
  for (auto it = json["weight_map"].begin(); it != json["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      return absl::DataLossError(absl::StrCat(std::string(origin), ": weight_map entry '", it.key(),
                                              "' is not a file name"));
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard == "." || shard.find('/') != std::string::npos ||
        shard.find('\0') != std::string::npos || shard.find("..") != std::string::npos) {
      return absl::DataLossError(absl::StrCat(std::string(origin), ": shard name '", shard,
                                              "' must be a plain file name"));
    }
    index.weight_map[it.key()] = shard;
    if (unique.insert(shard).second) index.shards.push_back(shard);
  }
  return index;
}

absl::StatusOr<std::unique_ptr<TensorStore>> TensorStore::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  auto store = std::make_unique<TensorStore>();
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  std::vector<std::string> shards;
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
    ASSIGN_OR_RETURN(SafetensorsIndex index, ParseSafetensorsIndex(text, index_path));
    weight_map = std::move(index.weight_map);
    shards = std::move(index.shards);
  } else if (fs::exists(single)) {
    shards.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, " holds neither model.safetensors nor model.safetensors.index.json"));
  }
  std::map<std::string, size_t> shard_index;
  for (const std::string& shard : shards) {
    const std::string path = (fs::path(dir) / shard).string();
    if (!fs::exists(path)) {
      return absl::NotFoundError(absl::StrCat("missing shard ", path));
    }
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
    shard_index[shard] = store->files_.size();
    store->files_.push_back(std::move(file));
  }
  for (const auto& file : store->files_) {
    for (const auto& [name, view] : file->tensors()) {
      if (!store->index_.emplace(name, &view).second) {
        return absl::DataLossError(absl::StrCat("tensor '", name, "' appears in two shards"));
      }
    }
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = store->index_.find(name);
    if (it == store->index_.end()) {
      return absl::DataLossError(
          absl::StrCat("index names tensor '", name, "' in ", shard, " but the shard lacks it"));
    }
  }
  return store;
}

void TensorStore::Advise(Access access) const {
  for (const auto& file : files_) file->Advise(access);
}

const TensorView* TensorStore::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

TensorView ViewOf(const TensorData& data) {
  return {data.name, data.dtype, data.shape, reinterpret_cast<const uint8_t*>(data.bytes.data()),
          data.bytes.size()};
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  std::string out;
  out.reserve(8 + text.size() + offset);
  const uint64_t len = text.size();
  out.append(reinterpret_cast<const char*>(&len), 8);
  out += text;
  for (const auto& t : tensors) out += t.bytes;
  return WriteStringToFile(path, out);
}

}  // namespace ringserve::base
