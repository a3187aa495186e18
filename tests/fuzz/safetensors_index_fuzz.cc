// Fuzzes the model.safetensors.index.json parser (base::ParseSafetensorsIndex). An accepted
// index names only plain shard file names, lists each shard once, and every weight_map entry's
// shard is among them.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "common/base/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto index = ringserve::base::ParseSafetensorsIndex(text, "fuzz.index.json");
  if (!index.ok()) return 0;
  const std::set<std::string> shards(index->shards.begin(), index->shards.end());
  FUZZ_CHECK(shards.size() == index->shards.size(), "a shard is listed twice");
  for (const std::string& shard : index->shards) {
    FUZZ_CHECK(!shard.empty() && shard != "." && shard.find('/') == std::string::npos &&
                   shard.find('\0') == std::string::npos && shard.find("..") == std::string::npos,
               "a shard name is not a plain file name");
  }
  for (const auto& [tensor, shard] : index->weight_map) {
    FUZZ_CHECK(shards.count(shard) == 1, "a tensor's shard is not listed");
  }
  FUZZ_CHECK(index->weight_map.empty() == index->shards.empty(), "shards without tensors");
  return 0;
}
