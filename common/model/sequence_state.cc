#include "common/model/sequence_state.h"

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::model {

absl::StatusOr<std::unique_ptr<SequenceState>> SequenceState::Create(const ModelConfig& c,
                                                                     kernels::Backend* backend,
                                                                     int64_t capacity) {
  if (capacity <= 0 || capacity > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence capacity ", capacity, " tokens is outside [1, ", c.max_position_embeddings, "]"));
  }
  std::unique_ptr<SequenceState> s(new SequenceState());
  s->capacity_ = capacity;
  s->num_linear_ = c.num_linear_layers();
  s->num_softmax_ = c.num_softmax_layers();
  s->kv_heads_ = c.num_key_value_heads;
  s->head_dim_ = c.head_dim;
  s->linear_elems_ = static_cast<size_t>(c.num_attention_heads * c.head_dim * c.head_dim);
  s->kv_elems_ = static_cast<size_t>(c.num_key_value_heads * capacity * c.head_dim);
  ASSIGN_OR_RETURN(s->linear_, backend->Allocate(std::max<size_t>(1, s->linear_bytes_total())));
  ASSIGN_OR_RETURN(s->kv_, backend->Allocate(std::max<size_t>(
                               1, s->kv_elems_ * 2 * sizeof(uint16_t) * s->num_softmax_)));
  s->Reset(backend);
  return s;
}

void SequenceState::Reset(kernels::Backend* backend) {
  position_ = 0;
  backend->Fill(static_cast<float*>(linear_.get()), 0.0f,
                static_cast<int64_t>(linear_elems_ * num_linear_));
}

absl::Status SequenceState::CopyFrom(const SequenceState& other, kernels::Backend* backend) {
  if (other.num_linear_ != num_linear_ || other.num_softmax_ != num_softmax_ ||
      other.linear_elems_ != linear_elems_ || other.position_ > capacity_) {
    return absl::InvalidArgumentError(absl::StrCat("cannot copy a state at position ",
                                                   other.position_, " into one of capacity ",
                                                   capacity_, " or of another model"));
  }
  backend->CopyDeviceToDevice(linear_.get(), other.linear_.get(), linear_bytes_total());
  for (int64_t l = 0; l < num_softmax_; ++l) {
    for (bool value : {false, true}) {
      const auto src = other.KvSpans(l, value, 0, other.position_);
      const auto dst = KvSpans(l, value, 0, other.position_);
      for (size_t i = 0; i < src.size(); ++i) {
        backend->CopyDeviceToDevice(dst[i].data, src[i].data, src[i].bytes);
      }
    }
  }
  position_ = other.position_;
  return absl::OkStatus();
}

std::vector<Span> SequenceState::KvSpans(int64_t index, bool value, int64_t begin,
                                         int64_t end) const {
  std::vector<Span> spans;
  uint16_t* base = kv(index, value ? 1 : 0);
  for (int64_t g = 0; g < kv_heads_; ++g) {
    spans.push_back({base + (g * capacity_ + begin) * head_dim_,
                     static_cast<size_t>((end - begin) * head_dim_) * sizeof(uint16_t)});
  }
  return spans;
}

size_t SequenceState::kv_bytes_per_token() const {
  return static_cast<size_t>(2 * num_softmax_ * kv_heads_ * head_dim_) * sizeof(uint16_t);
}

}  // namespace ringserve::model
