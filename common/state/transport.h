#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/state/format.h"
#include "common/state/layout.h"
#include "ringserve/internal/v1/worker.pb.h"

// The transports of the prefill-to-decode state, behind one interface. The sending side is a
// StateSender (in_process.h, grpc_stream.h, link_transport.h); the receiving side of every
// transport is an InboundTransfer from ReservationTable::BeginTransfer (reservations.h).
namespace ringserve::state {

// One state to hand from a prefill worker to a decode worker.
struct TransferJob {
  std::string request_id;
  std::string ticket;          // from the decode worker's Reserve
  std::string decode_address;  // host:port of the decode worker
  uint64_t sender_epoch = 0;   // the prefill worker's start epoch
  uint32_t first_token = 0;
  internal::v1::Sampling sampling;
  std::string model_fingerprint;
  // The prefilled state, owned by the caller and left untouched until Send returns; the device
  // work that wrote it must have finished.
  const StateBuffer* state = nullptr;
  int64_t tokens = 0;                               // the tokens it holds (== state->position())
  const StateMemory* memory = StateMemory::Host();  // where `state` lives
};

// BuildManifest for `job` (INVALID_ARGUMENT when it has no state); options.memory is the job's.
absl::StatusOr<internal::v1::StateManifest> BuildJobManifest(const StateLayout& layout,
                                                             const TransferJob& job,
                                                             const ManifestOptions& options);

struct TransferResult {
  uint64_t bytes = 0;      // segment bytes delivered
  absl::Duration elapsed;  // from the manifest's checksums to the receiver's ack
};

// The prefill side of a transport. Send returns once the receiver acknowledged the complete,
// verified state, or with the error that ended the transfer (the receiver then freed the
// reservation unless the error says the ticket or the link was refused); either way the sender
// no longer reads the caller's state, which the caller may free. `deadline` bounds the whole
// transfer. Implementations are thread-safe.
class StateSender {
 public:
  virtual ~StateSender() = default;
  virtual absl::StatusOr<TransferResult> Send(const TransferJob& job, absl::Time deadline) = 0;
};

// A two-party byte link with the shape of NCCL point-to-point: each Send of a list of buffers
// matches the peer's next Recv, whose buffers have the same sizes in the same order, and
// completes when the peer has the bytes. Buffers are host memory (NcclByteLink also takes
// device memory). After any error the link is out of step and must be aborted. Send and Recv
// are driven by one thread at a time; Abort is thread-safe and makes pending and later calls
// fail with ABORTED.
class ByteLink {
 public:
  virtual ~ByteLink() = default;
  virtual absl::Status Send(const std::vector<Span>& buffers, absl::Time deadline) = 0;
  virtual absl::Status Recv(const std::vector<Span>& buffers, absl::Time deadline) = 0;
  virtual void Abort() = 0;
};

// Makes ByteLinks: a rendezvous id (an ncclUniqueId's bytes for NCCL) travels to the peer over
// gRPC, then both sides Connect with it. Thread-safe.
class ByteLinkFactory {
 public:
  virtual ~ByteLinkFactory() = default;
  virtual absl::StatusOr<std::string> NewUniqueId() = 0;
  // Joins the two-rank link `unique_id` as `rank` (0 sends, 1 receives); blocks until the peer
  // joined (DEADLINE_EXCEEDED at `deadline`).
  virtual absl::StatusOr<std::unique_ptr<ByteLink>> Connect(const std::string& unique_id, int rank,
                                                            absl::Time deadline) = 0;
};

}  // namespace ringserve::state
