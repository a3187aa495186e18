#include "common/state/grpc_stream.h"

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/rpc/status.h"
#include "common/state/link_transport.h"
#include "common/state/wire.h"

namespace ringserve::state {

using internal::v1::StateManifest;

// Room for a piece's protobuf framing around its bytes.
constexpr size_t kFramingBytes = 64;
constexpr char kPushStateMethod[] = "/ringserve.internal.v1.Decode/PushState";

// Reused buffers for outgoing pieces. A buffer lent to gRPC as a slice comes back when gRPC drops
// its last reference, which may be after the call that sent it ended, so the slices share the
// pool. Holds as many buffers as were ever in flight at once. Thread-safe.
class PieceBufferPool : public std::enable_shared_from_this<PieceBufferPool> {
 public:
  explicit PieceBufferPool(size_t buffer_bytes) : buffer_bytes_(buffer_bytes) {}

  // A slice of `bytes` (at most the buffer size) over a pooled buffer that `fill` wrote.
  grpc::Slice Lend(size_t bytes, const std::function<void(uint8_t*)>& fill) {
    auto* loan = new Loan{shared_from_this(), nullptr};
    {
      absl::MutexLock lock(&mu_);
      if (!free_.empty()) {
        loan->buffer = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (loan->buffer == nullptr) loan->buffer.reset(new uint8_t[buffer_bytes_]);
    fill(loan->buffer.get());
    return grpc::Slice(loan->buffer.get(), bytes, &PieceBufferPool::Return, loan);
  }

 private:
  struct Loan {
    std::shared_ptr<PieceBufferPool> pool;
    std::unique_ptr<uint8_t[]> buffer;
  };

  static void Return(void* p) {
    std::unique_ptr<Loan> loan(static_cast<Loan*>(p));
    absl::MutexLock lock(&loan->pool->mu_);
    loan->pool->free_.push_back(std::move(loan->buffer));
  }

  const size_t buffer_bytes_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<uint8_t[]>> free_ ABSL_GUARDED_BY(mu_);
};

namespace {

grpc::ByteBuffer Serialized(const google::protobuf::MessageLite& message) {
  const grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

absl::Time FromContextDeadline(std::chrono::system_clock::time_point deadline) {
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// The server side of one PushState call (see NewPushStateReactor). Reads run one at a time on
// gRPC threads; with an NCCL link, the link's thread ends the call, so the call's end is guarded
// by a mutex.
class PushStateReactor : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  PushStateReactor(grpc::CallbackServerContext* context, ReservationTable* table,
                   LinkReceiver* links, grpc::ByteBuffer* response)
      : context_(context), table_(table), links_(links), response_(response) {
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (link_mode_) {
      OnLinkRead(ok);
      return;
    }
    if (!ok) {
      OnStreamEnd();
      return;
    }
    std::vector<grpc::Slice> slices;
    message_.Dump(&slices);  // an empty message leaves no slices, which decoding refuses
    absl::StatusOr<DecodedMessage> decoded = DecodeStateMessage(slices);
    if (!decoded.ok()) {
      End(decoded.status());
      return;
    }
    if (transfer_ == nullptr) {
      OnManifest(*std::move(decoded));
      return;
    }
    const absl::Status status = OnPiece(*decoded);
    if (!status.ok()) {
      End(status);
      return;
    }
    StartRead(&message_);
  }

  void OnDone() override { delete this; }

 private:
  void OnManifest(DecodedMessage decoded) {
    if (!decoded.manifest.has_value()) {
      End(absl::InvalidArgumentError("the state stream must begin with its manifest"));
      return;
    }
    const StateManifest& manifest = *decoded.manifest;
    if (!manifest.has_link()) {
      absl::StatusOr<std::unique_ptr<InboundTransfer>> transfer = table_->BeginTransfer(manifest);
      if (!transfer.ok()) {
        End(transfer.status());
        return;
      }
      transfer_ = std::move(*transfer);
      StartRead(&message_);
      return;
    }
    if (links_ == nullptr) {
      End(absl::UnimplementedError("this decode worker has no NCCL links"));
      return;
    }
    // The link's thread may end the call at once; the read watching for a cancellation starts
    // first so that nothing starts after the end.
    link_mode_ = true;
    sender_id_ = manifest.link().sender_id();
    sender_epoch_ = manifest.sender_epoch();
    StartRead(&message_);
    const absl::Status status = links_->Receive(
        manifest, FromContextDeadline(context_->deadline()),
        [this](const absl::Status& outcome, uint64_t bytes) { EndWithAck(outcome, bytes); });
    if (!status.ok()) End(status);
  }

  absl::Status OnPiece(const DecodedMessage& piece) {
    if (piece.manifest.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("a second manifest arrived in the state stream of request '",
                       transfer_->manifest().request_id(), "'"));
    }
    if (piece.bytes.empty()) {
      return transfer_->Consume(piece.segment, piece.offset, {}, piece.checksum);
    }
    uint64_t offset = piece.offset;
    for (size_t i = 0; i < piece.bytes.size(); ++i) {
      const bool last = i + 1 == piece.bytes.size();
      RETURN_IF_ERROR(transfer_->Consume(piece.segment, offset, piece.bytes[i],
                                         last ? piece.checksum : std::nullopt));
      offset += piece.bytes[i].size();
    }
    return absl::OkStatus();
  }

  // With a link, the stream carries nothing after the manifest: a message or a cancellation
  // aborts the link, whose thread then ends the call.
  void OnLinkRead(bool ok) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
    }
    if (ok || context_->IsCancelled()) links_->Abort(sender_id_, sender_epoch_);
  }

  void OnStreamEnd() {
    if (transfer_ == nullptr) {
      End(absl::InvalidArgumentError("the state stream ended before its manifest"));
      return;
    }
    if (context_->IsCancelled()) {
      End(absl::CancelledError(absl::StrCat(
          "the sender cancelled the state stream of request '", transfer_->manifest().request_id(),
          "' after ", transfer_->bytes_received(), " of ", transfer_->bytes_total(), " bytes")));
      return;
    }
    EndWithAck(transfer_->Finish(), transfer_->bytes_received());
  }

  void EndWithAck(const absl::Status& status, uint64_t bytes) {
    if (status.ok()) {
      internal::v1::PushStateResponse ack;
      ack.set_bytes_received(bytes);
      *response_ = Serialized(ack);
    }
    End(status);
  }

  // Fails the transfer (a no-op once it ended) and ends the call, once.
  void End(const absl::Status& status) {
    if (transfer_ != nullptr && !status.ok()) transfer_->Fail(status);
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(rpc::ToGrpc(status));
  }

  grpc::CallbackServerContext* const context_;
  ReservationTable* const table_;
  LinkReceiver* const links_;
  grpc::ByteBuffer* const response_;
  grpc::ByteBuffer message_;
  std::unique_ptr<InboundTransfer> transfer_;
  bool link_mode_ = false;
  std::string sender_id_;
  uint64_t sender_epoch_ = 0;
  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

std::shared_ptr<grpc::Channel> ChannelCache::Get(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<grpc::Channel>& channel = channels_[address];
  if (channel == nullptr) {
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(-1);
    channel = grpc::CreateCustomChannel(address, credentials_, args);
  }
  return channel;
}

PushStateCall::PushStateCall(const StateManifest& manifest, NextFn next, DoneFn on_done)
    : next_(std::move(next)), on_done_(std::move(on_done)) {
  internal::v1::StateMessage message;
  *message.mutable_manifest() = manifest;
  manifest_ = Serialized(message);
}

void PushStateCall::Start(const std::shared_ptr<grpc::Channel>& channel, absl::Time deadline) {
  stub_ = std::make_unique<grpc::GenericStub>(channel);
  context_.set_deadline(absl::ToChronoTime(deadline));
  stub_->PrepareBidiStreamingCall(&context_, kPushStateMethod, grpc::StubOptions(), this);
  StartWrite(&manifest_);
  StartRead(&response_);
  StartCall();
}

void PushStateCall::OnWriteDone(bool ok) {
  if (!ok) return;  // the call is ending; OnDone says why
  if (next_ && next_(&piece_)) {
    StartWrite(&piece_);
  } else {
    StartWritesDone();
  }
}

void PushStateCall::OnReadDone(bool ok) { acked_ = ok; }

void PushStateCall::OnDone(const grpc::Status& status) {
  status_ = rpc::FromGrpc(status);
  if (status_.ok() && !acked_) {
    status_ = absl::DataLossError("the decode worker ended the state stream without an ack");
  }
  if (on_done_) on_done_(status_);
  done_.Notify();
}

absl::StatusOr<uint64_t> PushStateCall::Wait() {
  done_.WaitForNotification();
  if (!status_.ok()) return status_;
  std::vector<grpc::Slice> slices;
  response_.Dump(&slices);
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  internal::v1::PushStateResponse ack;
  if (!ack.ParseFromString(bytes)) {
    return absl::DataLossError("the decode worker's ack does not parse");
  }
  return ack.bytes_received();
}

GrpcStateSender::GrpcStateSender(const StateLayout& layout, ChannelCache* channels,
                                 GrpcSenderOptions options)
    : layout_(layout),
      channels_(channels),
      options_(options),
      buffers_(std::make_shared<PieceBufferPool>(options.piece_bytes + kFramingBytes)) {}

absl::StatusOr<TransferResult> GrpcStateSender::Send(const TransferJob& job, absl::Time deadline) {
  if (options_.piece_bytes == 0) return absl::InvalidArgumentError("piece_bytes is 0");
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(const StateManifest manifest,
                   BuildJobManifest(layout_, job, {options_.kv_chunk_tokens, true}));
  PieceReader reader(layout_, *job.state, manifest, options_.piece_bytes, job.memory);
  Piece piece;
  absl::Status read;
  PushStateCall call(
      manifest,
      [&](grpc::ByteBuffer* message) {
        absl::StatusOr<bool> more = reader.Next(&piece);
        if (!more.ok()) read = more.status();
        if (!more.ok() || !*more) return false;
        const grpc::Slice slice = buffers_->Lend(
            EncodedPieceSize(piece), [&piece](uint8_t* out) { EncodePiece(piece, out); });
        *message = grpc::ByteBuffer(&slice, 1);
        return true;
      },
      nullptr);
  call.Start(channels_->Get(job.decode_address), deadline);
  absl::StatusOr<uint64_t> bytes = call.Wait();
  if (!read.ok()) bytes = read;  // the receiver saw the stream cut short
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat("pushing the state of request '", job.request_id, "' to ",
                                     job.decode_address, ": ", bytes.status().message()));
  }
  return TransferResult{*bytes, absl::Now() - start};
}

grpc::ServerReadReactor<grpc::ByteBuffer>* NewPushStateReactor(grpc::CallbackServerContext* context,
                                                               ReservationTable* table,
                                                               LinkReceiver* links,
                                                               grpc::ByteBuffer* response) {
  return new PushStateReactor(context, table, links, response);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* DecodeStateService::PushState(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  return NewPushStateReactor(context, table_, links_, response);
}

grpc::ServerUnaryReactor* DecodeStateService::OpenNcclLink(
    grpc::CallbackServerContext* context, const internal::v1::NcclLinkRequest* request,
    internal::v1::NcclLinkResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (links_ == nullptr) {
    reactor->Finish(rpc::ToGrpc(absl::UnimplementedError("this decode worker has no NCCL links")));
    return reactor;
  }
  absl::StatusOr<internal::v1::NcclLinkResponse> opened = links_->Open(*request);
  if (opened.ok()) *response = *opened;
  reactor->Finish(rpc::ToGrpc(opened.status()));
  return reactor;
}

}  // namespace ringserve::state
