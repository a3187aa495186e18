#include "common/model/make_model.h"

#include <cmath>
#include <filesystem>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/bf16.h"
#include "common/base/mapped_file.h"
#include "common/base/safetensors.h"
#include "common/base/status_macros.h"
#include "common/model/weights.h"
#include "kernels/sampling.h"
#include "nlohmann/json.hpp"

namespace ringserve::model {
namespace {

// Deterministic uniform values in [-amp, amp] (+ center) from (seed, tensor, index).
base::TensorData RandomTensor(const ExpectedTensor& e, uint64_t seed, uint64_t tensor_index) {
  int64_t n = 1;
  for (int64_t d : e.shape) n *= d;
  float center = 0.0f;
  float amp = 0.02f * std::sqrt(3.0f);
  const std::string& name = e.name;
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with("norm.weight")) {
    center = 1.0f;
    amp = 0.1f;
  } else if (ends_with("expert_bias")) {
    amp = 0.01f;
  } else if (name == "model.word_embeddings.weight") {
    amp = std::sqrt(3.0f);
  } else if (name == "lm_head.weight") {
    amp = 0.1f * std::sqrt(3.0f);
  }
  const uint64_t stream = kernels::SplitMix64(seed ^ kernels::SplitMix64(tensor_index));
  base::TensorData out{e.name, e.fp32 ? base::DType::kF32 : base::DType::kBF16, e.shape, {}};
  out.bytes.resize(static_cast<size_t>(n) * (e.fp32 ? 4 : 2));
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t bits = kernels::SplitMix64(stream + static_cast<uint64_t>(i));
    const float u = static_cast<float>(bits >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
    const float value = center + amp * u;
    if (e.fp32) {
      std::memcpy(out.bytes.data() + 4 * i, &value, 4);
    } else {
      const uint16_t h = base::FloatToBf16(value);
      std::memcpy(out.bytes.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<ModelConfig> PresetConfig(const std::string& preset) {
  constexpr std::string_view kSoftmaxSuffix = "-softmax";
  if (preset.size() > kSoftmaxSuffix.size() && preset.ends_with(kSoftmaxSuffix)) {
    ASSIGN_OR_RETURN(ModelConfig c,
                     PresetConfig(preset.substr(0, preset.size() - kSoftmaxSuffix.size())));
    c.layer_group_size = 1;  // every layer softmax attention
    return c;
  }
  ModelConfig c;
  c.num_hidden_layers = 8;
  c.layer_group_size = 4;
  c.first_k_dense_replace = 1;
  c.num_shared_experts = 1;
  c.routed_scaling_factor = 2.5;
  c.rope_theta = 1e6;
  c.partial_rotary_factor = 0.5;
  c.max_position_embeddings = 131072;
  c.rms_norm_eps = 1e-6;
  if (preset == "tiny") {
    // Two query heads (one kv head, so GQA still maps heads) keep a 128K-token softmax prefill
    // affordable in the test suite; one g-norm group spans both heads.
    c.hidden_size = 128;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 32;
    c.group_norm_size = 1;
    c.intermediate_size = 256;
    c.moe_intermediate_size = 64;
    c.num_experts = 16;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
    c.vocab_size = 1024;
  } else if (preset == "small") {
    c.hidden_size = 1024;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 2;
    c.head_dim = 128;
    c.group_norm_size = 4;
    c.intermediate_size = 4096;
    c.moe_intermediate_size = 768;
    c.num_experts = 32;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
    c.vocab_size = 32768;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("preset '", preset, "' is not one of tiny, small (or either with -softmax)"));
  }
  c.moe_shared_expert_intermediate_size = c.moe_intermediate_size;
  // The tokenizer that make-model writes puts <|endoftext|> and <|role_end|> among its specials
  // at the top of the vocabulary; ringctl make-model sets the real ids.
  c.eos_token_ids = {c.vocab_size - 1};
  return c;
}

absl::Status WriteRandomCheckpoint(const ModelConfig& config, const std::string& dir,
                                   const CheckpointOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  if (options.shards < 1) {
    return absl::InvalidArgumentError(absl::StrCat("shards ", options.shards, " must be >= 1"));
  }
  RETURN_IF_ERROR(
      base::WriteStringToFile((fs::path(dir) / "config.json").string(), config.ToJson()));
  nlohmann::ordered_json gen;
  gen["bos_token_id"] = nullptr;
  gen["eos_token_id"] = config.eos_token_ids;
  gen["pad_token_id"] = config.eos_token_ids.empty() ? 0 : config.eos_token_ids[0];
  RETURN_IF_ERROR(
      base::WriteStringToFile((fs::path(dir) / "generation_config.json").string(), gen.dump(2)));
  const std::vector<ExpectedTensor> tensors = ExpectedTensors(config);
  size_t total = 0;
  for (const auto& e : tensors) {
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    total += static_cast<size_t>(n) * (e.fp32 ? 4 : 2);
  }
  const size_t per_shard = total / options.shards + 1;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  std::vector<base::TensorData> shard;
  size_t shard_bytes = 0;
  int shard_index = 0;
  auto flush = [&]() -> absl::Status {
    ++shard_index;
    const std::string name = options.shards == 1 ? std::string("model.safetensors")
                                                 : absl::StrFormat("model-%05d-of-%05d.safetensors",
                                                                   shard_index, options.shards);
    for (const auto& t : shard) weight_map[t.name] = name;
    RETURN_IF_ERROR(base::WriteSafetensors((fs::path(dir) / name).string(), shard));
    shard.clear();
    shard_bytes = 0;
    return absl::OkStatus();
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    shard.push_back(RandomTensor(tensors[i], options.seed, i));
    shard_bytes += shard.back().bytes.size();
    if (shard_bytes >= per_shard && shard_index + 1 < options.shards) RETURN_IF_ERROR(flush());
  }
  while (shard_index < options.shards) RETURN_IF_ERROR(flush());
  if (options.shards > 1) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = weight_map;
    RETURN_IF_ERROR(base::WriteStringToFile(
        (fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2)));
  }
  return absl::OkStatus();
}

}  // namespace ringserve::model
