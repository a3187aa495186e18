#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/state/grpc_stream.h"
#include "common/state/reservations.h"
#include "common/state/transport.h"
#include "ringserve/internal/v1/worker.pb.h"

// The NCCL transport's control logic, on any ByteLink (NcclByteLink on GPUs, an in-memory pipe
// in tests). Handshake: the prefill side makes a unique id and sends it with its peer id and
// start epoch on Decode/OpenNcclLink; the decode side answers with its own epoch; both join the
// two-rank link. A transfer: the manifest, naming the link (LinkRef: sender id, the receiver
// epoch the link was opened with; StateManifest.sender_epoch), goes on Decode/PushState; the
// segment bytes follow over the link in manifest order, one grouped send per segment; the
// PushState response is the ack. Any error aborts the link on both sides; the next transfer
// opens a new one.
namespace ringserve::state {

// The decode side: a pool of receiving links, one per prefill worker (peer id), each tagged with
// that peer's start epoch. Open replaces a peer's link (a restarted peer brings a newer epoch; an
// older epoch is refused). Each link has a thread that first joins the link, then receives the
// transfers naming it in arrival order, straight into the reservations' memory. Destroying the
// receiver aborts every link and waits for their threads (a link still joining holds it up to
// the connect timeout). `factory` and `table` must outlive it. Thread-safe.
class LinkReceiver {
 public:
  struct Options {
    uint64_t epoch = 0;  // this worker's start epoch
    absl::Duration connect_timeout = absl::Seconds(30);
    // Bounds a transfer whose PushState call has no deadline.
    absl::Duration transfer_timeout = absl::Minutes(2);
  };

  LinkReceiver(ByteLinkFactory* factory, ReservationTable* table, Options options)
      : factory_(factory), table_(table), options_(options) {}
  ~LinkReceiver();
  LinkReceiver(const LinkReceiver&) = delete;
  LinkReceiver& operator=(const LinkReceiver&) = delete;

  // Decode/OpenNcclLink: starts joining the link `request.unique_id` for the peer (replacing its
  // current link) and returns this worker's epoch. FAILED_PRECONDITION when the peer's epoch is
  // older than its current link's.
  absl::StatusOr<internal::v1::NcclLinkResponse> Open(const internal::v1::NcclLinkRequest& request);

  // Receives the segments of `manifest`, which names a link, on that link's thread; `done` runs
  // there once with the outcome and the bytes received. Returns without calling `done`:
  // UNAVAILABLE when no such link exists or it was opened with another epoch of either side (the
  // sender reopens it and retries; the reservation is untouched), and BeginTransfer's errors.
  absl::Status Receive(const internal::v1::StateManifest& manifest, absl::Time deadline,
                       std::function<void(const absl::Status&, uint64_t)> done);

  // Aborts and drops the link of that sender epoch, failing its transfer in flight.
  void Abort(const std::string& sender_id, uint64_t sender_epoch);

  // Links open or joining.
  int links() const;

 private:
  class Link;

  // Retires `link` if it is still the current link of its peer.
  void Drop(const Link* link);
  // Joins the threads of retired links that have stopped (all of them when `all`).
  void Reap(bool all);

  ByteLinkFactory* const factory_;
  ReservationTable* const table_;
  const Options options_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Link>> links_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<Link>> retired_ ABSL_GUARDED_BY(mu_);
};

// The prefill side: a pool of sending links keyed by decode address, each tagged with the epoch
// of the decode worker it was opened with. A transfer holds its link alone, so transfers to one
// decode worker run one after another. A link is opened by the first transfer to an address and
// after any failure; when the receiver answers UNAVAILABLE (it restarted or lost the link), the
// sender reopens the link and retries once. `factory` and `channels` must outlive it.
// Thread-safe.
class LinkStateSender : public StateSender {
 public:
  struct Options {
    std::string sender_id;  // this worker's id, the same across restarts (its address)
    uint64_t epoch = 0;     // this worker's start epoch
    int64_t kv_chunk_tokens = 0;
    absl::Duration connect_timeout = absl::Seconds(30);
  };

  LinkStateSender(const StateLayout& layout, ByteLinkFactory* factory, ChannelCache* channels,
                  Options options)
      : layout_(layout), factory_(factory), channels_(channels), options_(std::move(options)) {}

  absl::StatusOr<TransferResult> Send(const TransferJob& job, absl::Time deadline) override;

  // Links open now.
  int links() const { return open_links_.load(); }

 private:
  struct Peer {
    absl::Mutex mu;  // held for a whole transfer
    std::unique_ptr<ByteLink> link ABSL_GUARDED_BY(mu);
    uint64_t epoch ABSL_GUARDED_BY(mu) = 0;  // the receiver's
  };

  absl::Status Open(const std::string& address, Peer* peer, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu);
  // One attempt over the peer's open link; the receiver's bytes_received.
  absl::StatusOr<uint64_t> SendOnce(const TransferJob& job,
                                    const internal::v1::StateManifest& manifest, Peer* peer,
                                    absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu);
  void CloseLink(Peer* peer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(peer->mu);

  const StateLayout layout_;
  ByteLinkFactory* const factory_;
  ChannelCache* const channels_;
  const Options options_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> open_links_{0};
};

}  // namespace ringserve::state
