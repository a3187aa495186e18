#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/state/reservations.h"
#include "common/state/transport.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"

// The gRPC-stream transport: the state travels on Decode/PushState as a client stream of
// StateMessages, the manifest first, then the segments in bounded pieces, each segment's
// checksum on its last piece. Both ends handle the messages as raw ByteBuffers (wire.h), so no
// piece is parsed into or serialized from a protobuf object.
namespace ringserve::state {

class LinkReceiver;
class PieceBufferPool;

// Channels to decode workers, one per address, made on first use with the given credentials
// (TLS or insecure). Thread-safe.
class ChannelCache {
 public:
  explicit ChannelCache(std::shared_ptr<grpc::ChannelCredentials> credentials)
      : credentials_(std::move(credentials)) {}

  std::shared_ptr<grpc::Channel> Get(const std::string& address);

 private:
  const std::shared_ptr<grpc::ChannelCredentials> credentials_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

// One client stream of Decode/PushState, driven by the callback API: writes the manifest, then
// the messages that `next` produces, one write in flight at a time (so the sender holds one
// piece), then half-closes and reads the ack. `on_done` hears the outcome on a gRPC thread
// before Wait returns. Owned by the caller, who must Wait before destroying it. Thread-safe.
class PushStateCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // Fills `message` with the next encoded StateMessage; false when there is none left.
  using NextFn = std::function<bool(grpc::ByteBuffer* message)>;
  using DoneFn = std::function<void(const absl::Status& status)>;

  PushStateCall(const internal::v1::StateManifest& manifest, NextFn next, DoneFn on_done);

  // Starts the call on a channel; `deadline` bounds it.
  void Start(const std::shared_ptr<grpc::Channel>& channel, absl::Time deadline);
  // Blocks until the call ended; the receiver's bytes_received, or its error.
  absl::StatusOr<uint64_t> Wait();

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::GenericStub> stub_;
  grpc::ByteBuffer manifest_;
  grpc::ByteBuffer piece_;
  grpc::ByteBuffer response_;
  const NextFn next_;
  const DoneFn on_done_;
  bool acked_ = false;  // written by OnReadDone, read after OnDone
  absl::Status status_;
  absl::Notification done_;
};

struct GrpcSenderOptions {
  size_t piece_bytes = 1 << 20;  // segment bytes per StateMessage
  int64_t kv_chunk_tokens = 0;   // as in ManifestOptions
};

// The gRPC-stream transport, prefill side: one PushState call per transfer, on the cached
// channel of the job's decode address, carrying the manifest (with trailing checksums) and then
// every segment in pieces of at most `piece_bytes`. Each piece is hashed and copied from the
// state into a reused buffer that gRPC sends as it is, as the previous piece's write completes.
// The call's deadline is Send's. `channels` must outlive the sender. Thread-safe.
class GrpcStateSender : public StateSender {
 public:
  GrpcStateSender(const StateLayout& layout, ChannelCache* channels,
                  GrpcSenderOptions options = {});

  absl::StatusOr<TransferResult> Send(const TransferJob& job, absl::Time deadline) override;

 private:
  const StateLayout layout_;
  ChannelCache* const channels_;
  const GrpcSenderOptions options_;
  const std::shared_ptr<PieceBufferPool> buffers_;
};

// The receiving side of Decode/PushState (raw), for the Decode service's PushState method to
// return. The first message must be the manifest: with a link reference, `links` receives the
// segments over the NCCL link (UNIMPLEMENTED when `links` is null); otherwise the following
// messages are the segment pieces, whose bytes go from gRPC's buffers straight into the
// reservation through its InboundTransfer. Any error fails the transfer, which frees the
// reservation, and ends the call with the matching status code and message; a complete,
// verified state ends it with PushStateResponse{bytes_received} after the sender's half-close.
// Deletes itself when the call is done. `table` and `links` must outlive the server.
grpc::ServerReadReactor<grpc::ByteBuffer>* NewPushStateReactor(grpc::CallbackServerContext* context,
                                                               ReservationTable* table,
                                                               LinkReceiver* links,
                                                               grpc::ByteBuffer* response);

// The state half of the Decode service: PushState (raw; the gRPC-stream and NCCL transports'
// receiving side) and OpenNcclLink (UNIMPLEMENTED when `links` is null). The decode worker's
// service derives from it and adds Reserve, Generate, Release and GetStatus. `table` and `links`
// must outlive the server. Thread-safe.
class DecodeStateService : public internal::v1::Decode::WithRawCallbackMethod_PushState<
                               internal::v1::Decode::CallbackService> {
 public:
  DecodeStateService(ReservationTable* table, LinkReceiver* links) : table_(table), links_(links) {}

  grpc::ServerReadReactor<grpc::ByteBuffer>* PushState(grpc::CallbackServerContext* context,
                                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* OpenNcclLink(grpc::CallbackServerContext* context,
                                         const internal::v1::NcclLinkRequest* request,
                                         internal::v1::NcclLinkResponse* response) override;

 private:
  ReservationTable* const table_;
  LinkReceiver* const links_;
};

}  // namespace ringserve::state
