#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/config.h"
#include "common/model/sequence_state.h"
#include "common/state/layout.h"

// The model's side of common/state, which knows neither: the layout of a config's state, model
// states seen as state buffers, and the model's fingerprint.
namespace ringserve::worker {

// The state layout of `config`.
state::StateLayout LayoutOf(const model::ModelConfig& config);

// A model::SequenceState seen as a state::StateBuffer. Owns the state, or views one that its
// creator keeps alive while the view is used. Not thread-safe.
class ModelState final : public state::StateBuffer {
 public:
  explicit ModelState(std::unique_ptr<model::SequenceState> owned)
      : owned_(std::move(owned)), state_(owned_.get()) {}
  explicit ModelState(model::SequenceState* viewed) : state_(viewed) {}

  // Makes an owning ModelState of `state` (passing an error through), for state factories.
  static absl::StatusOr<std::unique_ptr<state::StateBuffer>> Wrap(
      absl::StatusOr<std::unique_ptr<model::SequenceState>> state);
  // The model state that `buffer` owns; INTERNAL when it is not an owning ModelState.
  static absl::StatusOr<std::unique_ptr<model::SequenceState>> Unwrap(
      std::unique_ptr<state::StateBuffer> buffer);

  model::SequenceState* sequence() const { return state_; }

  int64_t position() const override { return state_->position(); }
  void set_position(int64_t position) override { state_->set_position(position); }
  int64_t capacity() const override { return state_->capacity(); }
  int64_t num_linear() const override { return state_->num_linear(); }
  int64_t num_softmax() const override { return state_->num_softmax(); }
  state::Span LinearState(int64_t index) const override {
    return {state_->linear_state(index), state_->linear_state_bytes()};
  }
  std::vector<state::Span> KvSpans(int64_t index, bool value, int64_t begin,
                                   int64_t end) const override;
  size_t linear_bytes_total() const override { return state_->linear_bytes_total(); }
  size_t kv_bytes_per_token() const override { return state_->kv_bytes_per_token(); }

 private:
  std::unique_ptr<model::SequenceState> owned_;  // null for a view
  model::SequenceState* const state_;
};

// The identity of the checkpoint in `dir` (state::ModelFingerprint of its config and weights).
absl::StatusOr<std::string> ModelFingerprintOfDirectory(const std::string& dir);

}  // namespace ringserve::worker
