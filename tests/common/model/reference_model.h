#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

// A deliberately plain, double-precision implementation of the Ring-linear forward pass
// (model-spec sections 3 and 4), written from the spec with no code shared with the engine:
// its own safetensors reader, the naive quadratic form of linear attention, and whole-prompt
// softmax attention. K and V are rounded to bf16 as the spec's cache dtype prescribes. Slow;
// for small checkpoints only. Not thread-safe.
namespace ringserve::testing {

class ReferenceModel {
 public:
  // Loads DIR/config.json and DIR/model.safetensors; aborts the test process on malformed files
  // (the engine's loader tests cover error handling).
  explicit ReferenceModel(const std::string& dir, bool hf_decay = false);

  // Logits [T, V] for every position of `tokens`.
  std::vector<std::vector<double>> Logits(const std::vector<int>& tokens) const;

 private:
  using Matrix = std::vector<double>;  // row-major
  const Matrix& W(const std::string& name) const;
  double Cfg(const std::string& key) const;

  std::map<std::string, Matrix> tensors_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, double> config_;
  bool hf_decay_;
};

}  // namespace ringserve::testing
