// Fuzzes the config.json reader (model::ModelConfig::FromJson). An accepted config must write
// back (ToJson) to text that reads as the same config, and the quantities derived from it
// before any weight is read (layer layout, projection sizes, the state size of a full context)
// must be computable (UBSan checks them for overflow).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/model/config.h"
#include "common/state/format.h"
#include "common/worker/model_state.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using ringserve::model::ModelConfig;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = ModelConfig::FromJson(text);
  if (!config.ok()) return 0;
  const std::string json = config->ToJson();
  auto again = ModelConfig::FromJson(json);
  FUZZ_CHECK(again.ok(), "the config's own JSON does not read back");
  FUZZ_CHECK(again->ToJson() == json, "the config changes when written and read back");

  const ModelConfig& c = *config;
  FUZZ_CHECK(c.num_softmax_layers() >= 1 && c.num_softmax_layers() <= c.num_hidden_layers,
             "no softmax layer or more than the layers");
  FUZZ_CHECK(c.rotary_dim() > 0 && c.rotary_dim() <= c.head_dim, "rotary dim out of range");
  FUZZ_CHECK(c.linear_qkv_rows() > 0 && c.softmax_qkv_rows() > 0, "projection rows");
  FUZZ_CHECK(c.shared_intermediate() >= 0, "shared expert width");
  const ringserve::state::StateSize state =
      ringserve::state::ComputeStateSize(ringserve::worker::LayoutOf(c), c.max_position_embeddings);
  FUZZ_CHECK(state.kv_bytes <= state.all_softmax_kv_bytes, "softmax KV exceeds all-softmax KV");
  return 0;
}
