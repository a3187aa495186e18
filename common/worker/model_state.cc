#include "common/worker/model_state.h"

#include "common/base/safetensors.h"
#include "common/base/status_macros.h"
#include "common/state/format.h"

namespace ringserve::worker {

state::StateLayout LayoutOf(const model::ModelConfig& config) {
  state::StateLayout layout;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    layout.softmax.push_back(config.IsSoftmaxLayer(layer));
  }
  layout.num_attention_heads = config.num_attention_heads;
  layout.num_key_value_heads = config.num_key_value_heads;
  layout.head_dim = config.head_dim;
  layout.max_positions = config.max_position_embeddings;
  return layout;
}

absl::StatusOr<std::unique_ptr<state::StateBuffer>> ModelState::Wrap(
    absl::StatusOr<std::unique_ptr<model::SequenceState>> state) {
  if (!state.ok()) return state.status();
  return std::make_unique<ModelState>(std::move(*state));
}

absl::StatusOr<std::unique_ptr<model::SequenceState>> ModelState::Unwrap(
    std::unique_ptr<state::StateBuffer> buffer) {
  auto* model_state = dynamic_cast<ModelState*>(buffer.get());
  if (model_state == nullptr || model_state->owned_ == nullptr) {
    return absl::InternalError("the state buffer does not own a model state");
  }
  return std::move(model_state->owned_);
}

std::vector<state::Span> ModelState::KvSpans(int64_t index, bool value, int64_t begin,
                                             int64_t end) const {
  std::vector<state::Span> spans;
  for (const model::Span& s : state_->KvSpans(index, value, begin, end)) {
    spans.push_back({s.data, s.bytes});
  }
  return spans;
}

absl::StatusOr<std::string> ModelFingerprintOfDirectory(const std::string& dir) {
  ASSIGN_OR_RETURN(const model::ModelConfig config, model::ModelConfig::FromDirectory(dir));
  ASSIGN_OR_RETURN(const auto store, base::TensorStore::Open(dir));
  return state::ModelFingerprint(config.ToJson(), *store);
}

}  // namespace ringserve::worker
