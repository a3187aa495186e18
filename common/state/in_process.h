#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/state/reservations.h"
#include "common/state/transport.h"

namespace ringserve::state {

// The transport for prefill and decode in one process (tests, single-machine mode): builds the
// manifest (with trailing checksums) and copies each segment straight from the prefill state
// into the reservation's memory through ReservationTable::BeginTransfer and its StateAssembler,
// so every check of the other transports runs; pieces of kPieceBytes are hashed just before
// they are copied, while they sit in cache. Jobs must name `address`, the in-process decode
// worker's. `table` must outlive the sender. Thread-safe.
class InProcessStateSender : public StateSender {
 public:
  static constexpr size_t kPieceBytes = 256 << 10;

  // `kv_chunk_tokens` as in ManifestOptions.
  InProcessStateSender(const StateLayout& layout, std::string address, ReservationTable* table,
                       int64_t kv_chunk_tokens = 0)
      : layout_(layout),
        address_(std::move(address)),
        table_(table),
        kv_chunk_tokens_(kv_chunk_tokens) {}

  absl::StatusOr<TransferResult> Send(const TransferJob& job, absl::Time deadline) override;

 private:
  const StateLayout layout_;
  const std::string address_;
  ReservationTable* const table_;
  const int64_t kv_chunk_tokens_;
};

}  // namespace ringserve::state
