#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "kernels/backend.h"

namespace ringserve::model {

// A contiguous piece of backend memory.
struct Span {
  void* data;
  size_t bytes;
};

// The whole per-sequence state of the hybrid model: one fp32 recurrent state per linear layer
// ([H, D, D], k-dim major), K and V caches per softmax layer ([Hkv, capacity, D], bf16), and the
// number of tokens consumed. Owns its backend memory, sized at creation for `capacity` tokens,
// so nothing grows while the sequence runs. Not thread-safe; one owner at a time.
class SequenceState {
 public:
  static absl::StatusOr<std::unique_ptr<SequenceState>> Create(const ModelConfig& config,
                                                               kernels::Backend* backend,
                                                               int64_t capacity);

  int64_t position() const { return position_; }
  void set_position(int64_t p) { position_ = p; }
  int64_t capacity() const { return capacity_; }

  int64_t num_linear() const { return num_linear_; }
  int64_t num_softmax() const { return num_softmax_; }
  // The state of the `index`-th linear layer (counting linear layers only).
  float* linear_state(int64_t index) const {
    return static_cast<float*>(linear_.get()) + index * linear_elems_;
  }
  size_t linear_state_bytes() const { return linear_elems_ * sizeof(float); }
  uint16_t* k_cache(int64_t index) const { return kv(index, 0); }
  uint16_t* v_cache(int64_t index) const { return kv(index, 1); }

  // Bytes of K (or V) of one softmax layer for tokens [begin, end): one contiguous span per kv
  // head, in head order (the wire layout [Hkv, tokens, D]).
  std::vector<Span> KvSpans(int64_t index, bool value, int64_t begin, int64_t end) const;

  // Makes this a copy of `other` (same model; capacity >= other's position).
  absl::Status CopyFrom(const SequenceState& other, kernels::Backend* backend);

  // Resets to an empty sequence (zero states, position 0).
  void Reset(kernels::Backend* backend);

  size_t linear_bytes_total() const { return linear_elems_ * sizeof(float) * num_linear_; }
  size_t kv_bytes_per_token() const;

 private:
  SequenceState() : linear_(nullptr, nullptr), kv_(nullptr, nullptr) {}
  uint16_t* kv(int64_t index, int which) const {
    return static_cast<uint16_t*>(kv_.get()) + (2 * index + which) * kv_elems_;
  }

  int64_t position_ = 0;
  int64_t capacity_ = 0;
  int64_t num_linear_ = 0;
  int64_t num_softmax_ = 0;
  int64_t kv_heads_ = 0;
  int64_t head_dim_ = 0;
  size_t linear_elems_ = 0;
  size_t kv_elems_ = 0;
  kernels::Buffer linear_;
  kernels::Buffer kv_;
};

}  // namespace ringserve::model
