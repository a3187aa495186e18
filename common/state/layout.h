#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

// What the state code knows of a model and of one sequence's state: the shape of the layers
// (StateLayout) and access to the memory (StateBuffer). The model side builds both (see
// common/worker/model_state.h); nothing here depends on the model or the kernels.
namespace ringserve::state {

// A contiguous piece of state memory (host or device, see StateMemory).
struct Span {
  void* data;
  size_t bytes;
};

// The shape of one sequence's state: per hidden layer, softmax attention (K and V, bf16,
// [Hkv, tokens, D] each) or linear attention (one fp32 state [H, D, D]).
struct StateLayout {
  std::vector<bool> softmax;        // per hidden layer: true for softmax attention
  int64_t num_attention_heads = 0;  // H
  int64_t num_key_value_heads = 0;  // Hkv
  int64_t head_dim = 0;             // D
  int64_t max_positions = 0;        // the most tokens a state may hold

  int64_t num_layers() const { return static_cast<int64_t>(softmax.size()); }
  bool IsSoftmaxLayer(int64_t layer) const { return softmax[static_cast<size_t>(layer)]; }
  int64_t num_softmax_layers() const {
    int64_t n = 0;
    for (bool s : softmax) n += s ? 1 : 0;
    return n;
  }
  int64_t num_linear_layers() const { return num_layers() - num_softmax_layers(); }
};

// One sequence's state memory as the transfer format reads and writes it: the linear states in
// linear-layer order, K and V in softmax-layer order, and the number of tokens it holds. Owns
// its memory (or views memory its creator owns, as documented there). Not thread-safe; one
// owner at a time.
class StateBuffer {
 public:
  virtual ~StateBuffer() = default;

  virtual int64_t position() const = 0;
  virtual void set_position(int64_t position) = 0;
  virtual int64_t capacity() const = 0;  // tokens it has room for
  virtual int64_t num_linear() const = 0;
  virtual int64_t num_softmax() const = 0;
  // The state of the `index`-th linear layer (counting linear layers only).
  virtual Span LinearState(int64_t index) const = 0;
  // K (or V) of the `index`-th softmax layer for tokens [begin, end): one span per kv head, in
  // head order (the wire layout [Hkv, tokens, D]).
  virtual std::vector<Span> KvSpans(int64_t index, bool value, int64_t begin,
                                    int64_t end) const = 0;
  // Bytes of all linear states, and of K and V of every softmax layer per token.
  virtual size_t linear_bytes_total() const = 0;
  virtual size_t kv_bytes_per_token() const = 0;
};

}  // namespace ringserve::state
