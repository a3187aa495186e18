#pragma once

#include <grpcpp/support/slice.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/state/format.h"
#include "ringserve/internal/v1/worker.pb.h"

// StateMessage on the wire without protobuf's copies and allocations: the gRPC-stream transport
// writes each piece's framing and bytes into one reused buffer, and reads the bytes of received
// pieces straight out of gRPC's slices. The encoding is plain protobuf, so typed peers
// interoperate.
namespace ringserve::state {

// The bytes of StateMessage{data: SegmentData{segment, offset, bytes, checksum}} for `piece`.
size_t EncodedPieceSize(const Piece& piece);
// Writes that message, the piece's bytes included, to `out` (EncodedPieceSize(piece) bytes).
void EncodePiece(const Piece& piece, uint8_t* out);

// One received StateMessage: a manifest, or a piece whose bytes stay in the received slices.
struct DecodedMessage {
  std::optional<internal::v1::StateManifest> manifest;
  uint32_t segment = 0;
  uint64_t offset = 0;
  std::vector<std::span<const uint8_t>> bytes;  // points into the slices it was decoded from
  std::optional<uint64_t> checksum;
};

// Decodes one StateMessage held in `slices` with protobuf semantics (fields in any order, the
// last of repeated scalars and of the oneof wins, unknown fields skipped). INVALID_ARGUMENT for
// malformed bytes or a message with neither manifest nor data.
absl::StatusOr<DecodedMessage> DecodeStateMessage(const std::vector<grpc::Slice>& slices);

}  // namespace ringserve::state
