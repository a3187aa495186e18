#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/safetensors.h"
#include "common/state/layout.h"
#include "ringserve/internal/v1/worker.pb.h"

struct XXH3_state_s;

// The prefill-to-decode state format (architecture.md, "The state handed from prefill to
// decode"): a StateManifest listing the segments of one sequence's state, then the raw bytes of
// each segment in manifest order (each segment's checksum either in the manifest or after its
// bytes). Segments, in this order:
//   - SEGMENT_KEY and SEGMENT_VALUE of every softmax layer, bf16, [Hkv, token_end - token_begin,
//     D], possibly split into token ranges (chunks) that together cover [0, token_count) once;
//   - then one SEGMENT_LINEAR_STATE per linear layer, fp32, [H, D, D], token range
//     [0, token_count).
// Every segment carries the XXH3-64 of its raw bytes. State memory is reached through a
// StateMemory: in place on the host, by copies on a device.
namespace ringserve::state {

// The version of the format this build writes and reads.
inline constexpr uint32_t kFormatVersion = 1;

// The identity of a model, as a hex string: XXH3-128 over its config's JSON, every tensor's
// name, dtype and shape, and the XXH3-64 digest of every tensor's bytes. Reads all weight bytes.
std::string ModelFingerprint(std::string_view config_json, const base::TensorStore& store);

// How the state code reaches a state's memory: host memory (the CPU backend's) is read and
// written in place; other memory (the CUDA backend's device memory) through copies to and from
// host buffers. Implementations are thread-safe.
class StateMemory {
 public:
  virtual ~StateMemory() = default;
  // Host memory, read and written in place. Never destroyed.
  static const StateMemory* Host();

  virtual bool in_place() const = 0;
  // For memory that is not in place: copies between it and host memory.
  virtual absl::Status CopyToHost(void* dst, const void* src, size_t bytes) const = 0;
  virtual absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) const = 0;
};

// The size of one sequence's state for `tokens` tokens.
struct StateSize {
  uint64_t linear_bytes = 0;  // the fp32 states of all linear layers
  uint64_t kv_bytes = 0;      // bf16 K and V of all softmax layers
  // bf16 K and V of a model of the same shape whose every layer is softmax attention.
  uint64_t all_softmax_kv_bytes = 0;

  uint64_t total() const { return linear_bytes + kv_bytes; }
};
StateSize ComputeStateSize(const StateLayout& layout, int64_t tokens);

// The manifest fields that do not come from the state itself.
struct ManifestHeader {
  std::string request_id;
  std::string ticket;
  std::string model_fingerprint;
  uint64_t sender_epoch = 0;
  uint32_t first_token = 0;
  internal::v1::Sampling sampling;
};

struct ManifestOptions {
  // > 0 splits K and V into token ranges of this length, ordered chunk by chunk so that a chunk
  // can travel as soon as prefill has computed it; 0 sends each layer's K and V as one segment.
  int64_t kv_chunk_tokens = 0;
  // The checksums travel after their segments' bytes (SegmentData.checksum), so no pass over
  // the state precedes the first byte; else they are computed here, into the manifest.
  bool trailing_checksums = false;
  // Where the state lives (for the checksums).
  const StateMemory* memory = StateMemory::Host();
};

// The manifest of the first `tokens` tokens of `state`, whose position must equal `tokens`.
absl::StatusOr<internal::v1::StateManifest> BuildManifest(const StateLayout& layout,
                                                          const StateBuffer& state, int64_t tokens,
                                                          const ManifestHeader& header,
                                                          const ManifestOptions& options);

// The memory of `segment` inside `state`, in wire order (one span per kv head for K and V).
// The segment must have passed validation (BuildManifest's, or StateAssembler::Create's).
std::vector<Span> SegmentSpans(const StateLayout& layout, const StateBuffer& state,
                               const internal::v1::Segment& segment);

// "segment 3 (key of layer 7, tokens [0, 64))", for error messages.
std::string DescribeSegment(const internal::v1::StateManifest& manifest, int index);

// XXH3-64 of a byte stream fed in pieces (runtime-dispatched to AVX2 or AVX-512 on x86).
// Not thread-safe.
class SegmentHasher {
 public:
  SegmentHasher();
  void Reset();
  void Update(const void* data, size_t bytes);
  uint64_t Digest() const;

 private:
  struct Deleter {
    void operator()(XXH3_state_s* state) const;
  };
  std::unique_ptr<XXH3_state_s, Deleter> state_;
};

// Bytes [offset, offset + size) of segment `segment`, as the sending side reads them.
struct Piece {
  uint32_t segment = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  std::vector<std::span<const uint8_t>> chunks;  // the state's memory, in order
  // The segment's XXH3-64, on its last piece when the manifest has trailing checksums.
  std::optional<uint64_t> checksum;
};

// Cuts the segments of a manifest of `state` into pieces of at most `piece_bytes`, in manifest
// order, hashing each piece as it is cut when the checksums trail (so that its bytes are in
// cache when the transport copies them). Pieces of memory that is not in place are staged in a
// host buffer of the reader's, valid until the next call. `layout`, `state`, `manifest` and
// `memory` must outlive it and stay unchanged. Not thread-safe.
class PieceReader {
 public:
  PieceReader(const StateLayout& layout, const StateBuffer& state,
              const internal::v1::StateManifest& manifest, size_t piece_bytes,
              const StateMemory* memory = StateMemory::Host())
      : layout_(layout),
        state_(state),
        manifest_(manifest),
        piece_bytes_(piece_bytes),
        memory_(memory) {}

  // Fills `piece` with the next piece and returns true; false after the last.
  absl::StatusOr<bool> Next(Piece* piece);

 private:
  const StateLayout& layout_;
  const StateBuffer& state_;
  const internal::v1::StateManifest& manifest_;
  const size_t piece_bytes_;
  const StateMemory* const memory_;
  std::vector<uint8_t> staging_;
  int segment_ = 0;
  uint64_t offset_ = 0;
  std::vector<Span> spans_;
  size_t span_ = 0;
  size_t span_offset_ = 0;
  SegmentHasher hasher_;
};

// Writes the segments of one manifest into a reserved StateBuffer as their bytes arrive,
// checking order and bounds of every piece and the checksum of every segment; the state is
// complete only when Finish succeeds. Errors are sticky: after one, every call returns it.
// Does not own `layout`, `state` or `memory`, which must outlive it. Not thread-safe: one
// transport thread feeds it.
class StateAssembler {
 public:
  // Validates `manifest` against the model (`layout`, `model_fingerprint`) and the receiving
  // state: format version (UNIMPLEMENTED), fingerprint (FAILED_PRECONDITION), token count against
  // the capacity and every segment's kind, layer, dtype, shape and size, that no two segments
  // overlap and that together they cover the whole state (INVALID_ARGUMENT).
  static absl::StatusOr<std::unique_ptr<StateAssembler>> Create(
      const StateLayout& layout, const std::string& model_fingerprint,
      internal::v1::StateManifest manifest, StateBuffer* state,
      const StateMemory* memory = StateMemory::Host());

  // Copies `bytes`, which sit at `offset` of segment `segment`, into the state. Pieces must come
  // in manifest order, each starting where the previous one ended, and stay inside their segment
  // (INVALID_ARGUMENT). With trailing checksums the piece that ends a segment, and only that one,
  // carries `checksum`. A segment whose bytes do not match its checksum is DATA_LOSS.
  absl::Status Consume(uint32_t segment, uint64_t offset, std::span<const uint8_t> bytes,
                       std::optional<uint64_t> checksum = std::nullopt);

  // Receives the whole of segment `segment` in place: `fill` writes the segment's spans (wire
  // order) directly, then the checksum, which must be in the manifest, is verified. Same
  // ordering rules as Consume.
  absl::Status ConsumeInPlace(uint32_t segment,
                              const std::function<absl::Status(const std::vector<Span>&)>& fill);

  // OK when every segment arrived and verified, and then sets the state's position to the token
  // count; DATA_LOSS naming the first incomplete segment otherwise.
  absl::Status Finish();

  const internal::v1::StateManifest& manifest() const { return manifest_; }
  uint64_t bytes_received() const { return bytes_received_; }
  uint64_t bytes_total() const { return bytes_total_; }

 private:
  StateAssembler(const StateLayout& layout, internal::v1::StateManifest manifest,
                 StateBuffer* state, const StateMemory* memory);

  // Checks that a piece of `size` bytes at `offset`, with or without a checksum, may come next
  // for `segment`.
  absl::Status CheckNext(uint32_t segment, uint64_t offset, uint64_t size,
                         const std::optional<uint64_t>& checksum);
  // Counts `bytes` more of the current segment (already hashed); verifies its checksum once the
  // segment is complete.
  absl::Status EndPiece(uint64_t bytes, const std::optional<uint64_t>& checksum);
  absl::Status Fail(absl::Status status);

  const StateLayout& layout_;
  const internal::v1::StateManifest manifest_;
  StateBuffer* const state_;
  const StateMemory* const memory_;
  std::vector<uint8_t> scratch_;  // stages memory that is not in place for hashing
  uint64_t bytes_total_ = 0;
  uint64_t bytes_received_ = 0;
  absl::Status error_;
  // The segment being received, its spans and how far into it the bytes have come.
  int next_segment_ = 0;
  std::vector<Span> spans_;
  size_t span_index_ = 0;
  size_t span_offset_ = 0;
  uint64_t segment_received_ = 0;
  SegmentHasher hasher_;
};

}  // namespace ringserve::state
