#include "common/state/link_transport.h"

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/base/status_macros.h"
#include "common/rpc/status.h"

namespace ringserve::state {

using internal::v1::StateManifest;

// One receiving link and its thread: joins the link, then runs the posted jobs in order. After
// an abort or a failed join, jobs still run, with the error instead of a link, so that every
// transfer ends. Thread-safe.
class LinkReceiver::Link {
 public:
  // Runs on the link's thread with the joined link (status OK) or the reason there is none.
  using Job = std::function<void(ByteLink* link, const absl::Status& status)>;

  Link(std::string peer_id, uint64_t peer_epoch)
      : peer_id_(std::move(peer_id)), peer_epoch_(peer_epoch) {}
  ~Link() {
    Abort();
    if (thread_.joinable()) thread_.join();
  }

  const std::string& peer_id() const { return peer_id_; }
  uint64_t peer_epoch() const { return peer_epoch_; }
  bool stopped() const { return stopped_.load(); }

  void Start(ByteLinkFactory* factory, std::string unique_id, absl::Time deadline,
             LinkReceiver* owner) {
    thread_ = std::thread([this, factory, unique_id = std::move(unique_id), deadline, owner] {
      Run(factory, unique_id, deadline, owner);
    });
  }

  void Post(Job job) {
    absl::Status error;
    {
      absl::MutexLock lock(&mu_);
      if (!exited_) {
        jobs_.push_back(std::move(job));
        cv_.Signal();
        return;
      }
      error = error_;
    }
    job(nullptr, error);
  }

  void Abort() {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) {
      error_ = absl::AbortedError(
          absl::StrCat("the NCCL link of '", peer_id_, "' epoch ", peer_epoch_, " was aborted"));
    }
    if (link_ != nullptr) link_->Abort();
    cv_.Signal();
  }

 private:
  void Run(ByteLinkFactory* factory, const std::string& unique_id, absl::Time deadline,
           LinkReceiver* owner) {
    absl::StatusOr<std::unique_ptr<ByteLink>> joined = factory->Connect(unique_id, 1, deadline);
    {
      absl::MutexLock lock(&mu_);
      if (!joined.ok()) {
        if (error_.ok()) {
          error_ = absl::Status(joined.status().code(),
                                absl::StrCat("joining the NCCL link of '", peer_id_,
                                             "': ", joined.status().message()));
        }
      } else {
        link_ = std::move(*joined);
        if (!error_.ok()) link_->Abort();
      }
    }
    if (!joined.ok()) owner->Drop(this);
    for (;;) {
      Job job;
      absl::Status status;
      {
        absl::MutexLock lock(&mu_);
        while (jobs_.empty() && error_.ok()) cv_.Wait(&mu_);
        if (jobs_.empty()) {
          exited_ = true;
          break;
        }
        job = std::move(jobs_.front());
        jobs_.pop_front();
        status = error_;
      }
      job(status.ok() ? link_.get() : nullptr, status);
    }
    stopped_.store(true);
  }

  const std::string peer_id_;
  const uint64_t peer_epoch_;
  absl::Mutex mu_;
  absl::CondVar cv_;
  std::unique_ptr<ByteLink> link_ ABSL_GUARDED_BY(mu_);  // set once joined
  absl::Status error_ ABSL_GUARDED_BY(mu_);              // why the link is gone
  std::deque<Job> jobs_ ABSL_GUARDED_BY(mu_);
  bool exited_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopped_{false};
  std::thread thread_;
};

LinkReceiver::~LinkReceiver() {
  std::vector<std::shared_ptr<Link>> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [peer, link] : links_) all.push_back(std::move(link));
    links_.clear();
    for (auto& link : retired_) all.push_back(std::move(link));
    retired_.clear();
  }
  for (auto& link : all) link->Abort();
  all.clear();
}

void LinkReceiver::Drop(const Link* link) {
  absl::MutexLock lock(&mu_);
  auto it = links_.find(link->peer_id());
  if (it != links_.end() && it->second.get() == link) {
    retired_.push_back(std::move(it->second));
    links_.erase(it);
  }
}

void LinkReceiver::Reap(bool all) {
  std::vector<std::shared_ptr<Link>> done;
  {
    absl::MutexLock lock(&mu_);
    auto keep =
        std::partition(retired_.begin(), retired_.end(),
                       [all](const std::shared_ptr<Link>& l) { return !all && !l->stopped(); });
    std::move(keep, retired_.end(), std::back_inserter(done));
    retired_.erase(keep, retired_.end());
  }
  done.clear();
}

absl::StatusOr<internal::v1::NcclLinkResponse> LinkReceiver::Open(
    const internal::v1::NcclLinkRequest& request) {
  if (request.peer_id().empty() || request.unique_id().empty()) {
    return absl::InvalidArgumentError("an NCCL link request needs a peer id and a unique id");
  }
  Reap(false);
  auto link = std::make_shared<Link>(request.peer_id(), request.peer_epoch());
  std::shared_ptr<Link> replaced;
  {
    absl::MutexLock lock(&mu_);
    auto it = links_.find(request.peer_id());
    if (it != links_.end()) {
      if (it->second->peer_epoch() > request.peer_epoch()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "peer '", request.peer_id(), "' epoch ", request.peer_epoch(),
            " is older than the epoch ", it->second->peer_epoch(), " of its current link"));
      }
      replaced = it->second;
      retired_.push_back(replaced);
    }
    links_[request.peer_id()] = link;
  }
  if (replaced != nullptr) replaced->Abort();
  link->Start(factory_, request.unique_id(), absl::Now() + options_.connect_timeout, this);
  internal::v1::NcclLinkResponse response;
  response.set_epoch(options_.epoch);
  return response;
}

absl::Status LinkReceiver::Receive(const StateManifest& manifest, absl::Time deadline,
                                   std::function<void(const absl::Status&, uint64_t)> done) {
  const internal::v1::LinkRef& ref = manifest.link();
  if (ref.receiver_epoch() != options_.epoch) {
    return absl::UnavailableError(absl::StrCat(
        "the NCCL link of '", ref.sender_id(), "' was opened with epoch ", ref.receiver_epoch(),
        " of this decode worker, which is epoch ", options_.epoch, " now; reopen it"));
  }
  std::shared_ptr<Link> link;
  {
    absl::MutexLock lock(&mu_);
    auto it = links_.find(ref.sender_id());
    if (it != links_.end() && it->second->peer_epoch() == manifest.sender_epoch()) {
      link = it->second;
    }
  }
  if (link == nullptr) {
    return absl::UnavailableError(absl::StrCat("no NCCL link from '", ref.sender_id(), "' epoch ",
                                               manifest.sender_epoch(), "; reopen it"));
  }
  absl::StatusOr<std::unique_ptr<InboundTransfer>> begun = table_->BeginTransfer(manifest);
  if (!begun.ok()) {
    // The sender's bytes are on their way over the link, which is out of step now.
    link->Abort();
    Drop(link.get());
    return begun.status();
  }
  std::shared_ptr<InboundTransfer> transfer = std::move(*begun);
  const absl::Time until = std::min(deadline, absl::Now() + options_.transfer_timeout);
  Link* raw = link.get();
  link->Post([this, raw, transfer, until, done = std::move(done)](ByteLink* byte_link,
                                                                  const absl::Status& ready) {
    absl::Status status = ready;
    const StateManifest& m = transfer->manifest();
    for (int i = 0; status.ok() && i < m.segments_size(); ++i) {
      status = transfer->ConsumeInPlace(
          static_cast<uint32_t>(i),
          [&](const std::vector<Span>& spans) { return byte_link->Recv(spans, until); });
    }
    if (status.ok()) {
      status = transfer->Finish();
    } else {
      // The link's byte stream is out of step with the manifests now.
      transfer->Fail(status);
      raw->Abort();
      Drop(raw);
    }
    done(status, transfer->bytes_received());
  });
  return absl::OkStatus();
}

void LinkReceiver::Abort(const std::string& sender_id, uint64_t sender_epoch) {
  std::shared_ptr<Link> link;
  {
    absl::MutexLock lock(&mu_);
    auto it = links_.find(sender_id);
    if (it == links_.end() || it->second->peer_epoch() != sender_epoch) return;
    link = it->second;
    retired_.push_back(link);
    links_.erase(it);
  }
  link->Abort();
}

int LinkReceiver::links() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(links_.size());
}

absl::StatusOr<TransferResult> LinkStateSender::Send(const TransferJob& job, absl::Time deadline) {
  if (job.sender_epoch != options_.epoch) {
    return absl::InvalidArgumentError(absl::StrCat("the job's sender epoch ", job.sender_epoch,
                                                   " is not this sender's epoch ", options_.epoch));
  }
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(StateManifest manifest,
                   BuildJobManifest(layout_, job, {options_.kv_chunk_tokens, false}));
  Peer* peer;
  {
    absl::MutexLock lock(&mu_);
    std::unique_ptr<Peer>& p = peers_[job.decode_address];
    if (p == nullptr) p = std::make_unique<Peer>();
    peer = p.get();
  }
  absl::MutexLock lock(&peer->mu);
  for (int attempt = 0;; ++attempt) {
    if (peer->link == nullptr) RETURN_IF_ERROR(Open(job.decode_address, peer, deadline));
    internal::v1::LinkRef* ref = manifest.mutable_link();
    ref->set_sender_id(options_.sender_id);
    ref->set_receiver_epoch(peer->epoch);
    absl::StatusOr<uint64_t> bytes = SendOnce(job, manifest, peer, deadline);
    if (bytes.ok()) return TransferResult{*bytes, absl::Now() - start};
    CloseLink(peer);
    if (attempt > 0 || bytes.status().code() != absl::StatusCode::kUnavailable) {
      return absl::Status(
          bytes.status().code(),
          absl::StrCat("sending the state of request '", job.request_id, "' over the NCCL link to ",
                       job.decode_address, ": ", bytes.status().message()));
    }
  }
}

absl::Status LinkStateSender::Open(const std::string& address, Peer* peer, absl::Time deadline) {
  ASSIGN_OR_RETURN(const std::string unique_id, factory_->NewUniqueId());
  const absl::Time until = std::min(deadline, absl::Now() + options_.connect_timeout);
  internal::v1::NcclLinkRequest request;
  request.set_peer_id(options_.sender_id);
  request.set_peer_epoch(options_.epoch);
  request.set_unique_id(unique_id);
  internal::v1::NcclLinkResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(until));
  auto stub = internal::v1::Decode::NewStub(channels_->Get(address));
  absl::Notification done;
  grpc::Status answer;
  stub->async()->OpenNcclLink(&context, &request, &response, [&](grpc::Status status) {
    answer = std::move(status);
    done.Notify();
  });
  done.WaitForNotification();
  if (!answer.ok()) {
    const absl::Status status = rpc::FromGrpc(answer);
    return absl::Status(status.code(),
                        absl::StrCat("opening an NCCL link to ", address, ": ", status.message()));
  }
  ASSIGN_OR_RETURN(peer->link, factory_->Connect(unique_id, 0, until));
  peer->epoch = response.epoch();
  ++open_links_;
  return absl::OkStatus();
}

void LinkStateSender::CloseLink(Peer* peer) {
  if (peer->link == nullptr) return;
  peer->link->Abort();
  peer->link.reset();
  --open_links_;
}

absl::StatusOr<uint64_t> LinkStateSender::SendOnce(const TransferJob& job,
                                                   const StateManifest& manifest, Peer* peer,
                                                   absl::Time deadline) {
  ByteLink* link = peer->link.get();
  // A call that fails aborts the link, which ends the sends below.
  PushStateCall call(manifest, nullptr, [link](const absl::Status& status) {
    if (!status.ok()) link->Abort();
  });
  call.Start(channels_->Get(job.decode_address), deadline);
  absl::Status sent;
  for (int i = 0; sent.ok() && i < manifest.segments_size(); ++i) {
    sent = link->Send(SegmentSpans(layout_, *job.state, manifest.segments(i)), deadline);
  }
  if (sent.ok()) return call.Wait();
  // The aborted link fails the receiver's side too, which ends the call; the call's error
  // explains a send that the call's end aborted.
  link->Abort();
  absl::StatusOr<uint64_t> acked = call.Wait();
  if (!acked.ok()) return acked.status();
  return sent;
}

}  // namespace ringserve::state
