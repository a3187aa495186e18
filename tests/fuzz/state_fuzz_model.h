#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/model/config.h"

// The model and the input framing shared by state_manifest_fuzz and make_state_seeds.
namespace ringserve::fuzz {

// Four layers alternating linear and softmax attention (layer_group_size 2), 2 query heads,
// 1 kv head, head_dim 4: a state of a few hundred bytes.
inline constexpr std::string_view kStateFuzzConfigJson = R"({
  "model_type": "bailing_moe_linear", "hidden_size": 8, "num_hidden_layers": 4,
  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "layer_group_size": 2,
  "intermediate_size": 8, "moe_intermediate_size": 4, "num_experts": 2,
  "num_experts_per_tok": 1, "max_position_embeddings": 64, "vocab_size": 32})";
inline constexpr char kStateFuzzFingerprint[] = "fuzz-model";
// Tokens the receiving state holds.
inline constexpr int64_t kStateFuzzCapacity = 4;

// The fuzzer's input is a list of StateMessages, each framed as one byte that says where to cut
// it into two gRPC slices (the byte modulo the length + 1), a 2-byte little-endian length and
// the message's bytes.
inline void AppendFrame(std::string_view message, uint8_t cut, std::string* out) {
  out->push_back(static_cast<char>(cut));
  out->push_back(static_cast<char>(message.size() & 0xff));
  out->push_back(static_cast<char>((message.size() >> 8) & 0xff));
  out->append(message);
}

// Reads the next frame from [*pos, size) of `data`; false at the end. A last frame whose length
// runs past the end is cut short.
inline bool NextFrame(const uint8_t* data, size_t size, size_t* pos, std::string_view* message,
                      size_t* cut) {
  if (size - *pos < 3) return false;
  const uint8_t cut_byte = data[*pos];
  size_t length = data[*pos + 1] | static_cast<size_t>(data[*pos + 2]) << 8;
  *pos += 3;
  if (length > size - *pos) length = size - *pos;
  *message = std::string_view(reinterpret_cast<const char*>(data + *pos), length);
  *cut = cut_byte % (length + 1);
  *pos += length;
  return true;
}

}  // namespace ringserve::fuzz
