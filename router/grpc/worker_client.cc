#include "router/grpc/worker_client.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/status.h"

namespace ringserve::router {

using internal::v1::DecodeEvent;
using internal::v1::PrefillEvent;

void CallTracker::Begin() {
  std::lock_guard<std::mutex> lock(mu_);
  ++calls_;
}

void CallTracker::End() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--calls_ == 0) cv_.notify_all();
}

void CallTracker::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return calls_ == 0; });
}

namespace {

absl::Status NoWorker(const std::string& address) {
  return absl::UnavailableError(absl::StrCat("worker ", address, " is no longer in the pool"));
}

// A server stream read one message per Read(). Holds itself until OnDone (after which gRPC no
// longer touches it); the core holds it too, so calls after the end find it alive and do
// nothing. A hold keeps the call open while the core is not reading; it is removed when the
// stream ends or is cancelled.
template <typename Request, typename Event>
class StreamCall final : public grpc::ClientReadReactor<Event>, public core::WorkerStream {
 public:
  StreamCall(Request request, core::StreamCallbacks<Event> callbacks, absl::Time deadline,
             CallTracker* tracker)
      : request_(std::move(request)), callbacks_(std::move(callbacks)), tracker_(tracker) {
    ctx_.set_deadline(absl::ToChronoTime(deadline));
  }

  // `start` begins the call on a stub: stub->async()->Method(ctx, request, reactor).
  template <typename Start>
  static std::shared_ptr<StreamCall> Begin(Request request, core::StreamCallbacks<Event> callbacks,
                                           absl::Time deadline, CallTracker* tracker, Start start) {
    auto call =
        std::make_shared<StreamCall>(std::move(request), std::move(callbacks), deadline, tracker);
    call->self_ = call;
    tracker->Begin();
    start(&call->ctx_, &call->request_, call.get());
    call->AddHold();
    call->StartCall();
    return call;
  }

  void Read() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (ended_ || reading_) return;
      reading_ = true;
    }
    this->StartRead(&message_);
  }

  void Cancel() override {
    ctx_.TryCancel();
    Unhold();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ended_ = true;
      }
      Unhold();
      return;
    }
    Event event = std::move(message_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
    }
    callbacks_.on_message(std::move(event));
  }

  void OnDone(const grpc::Status& s) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ended_ = true;
    }
    auto callbacks = std::move(callbacks_);
    callbacks_ = {};
    callbacks.on_end(rpc::FromGrpc(s));
    CallTracker* tracker = tracker_;
    std::shared_ptr<StreamCall> self = std::move(self_);
    self.reset();  // may delete this
    tracker->End();
  }

 private:
  void Unhold() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (unheld_) return;
      unheld_ = true;
    }
    this->RemoveHold();
  }

  grpc::ClientContext ctx_;
  const Request request_;
  core::StreamCallbacks<Event> callbacks_;
  CallTracker* const tracker_;
  Event message_;
  std::shared_ptr<StreamCall> self_;
  std::mutex mu_;
  bool reading_ = false;
  bool ended_ = false;
  bool unheld_ = false;
};

// A stream that ended before it began (its worker left the pool).
class EndedStream final : public core::WorkerStream {
 public:
  void Read() override {}
  void Cancel() override {}
};

template <typename Event>
std::shared_ptr<core::WorkerStream> Ended(core::StreamCallbacks<Event> callbacks,
                                          const std::string& address) {
  callbacks.on_end(NoWorker(address));
  return std::make_shared<EndedStream>();
}

// One unary call: its context, request and response live until the completion.
template <typename Request, typename Response>
struct UnaryCall {
  grpc::ClientContext ctx;
  Request request;
  Response response;
};

}  // namespace

GrpcWorkerClient::~GrpcWorkerClient() { calls_.WaitIdle(); }

void GrpcWorkerClient::Reserve(
    const std::string& address, internal::v1::ReserveRequest request, absl::Time deadline,
    std::function<void(absl::StatusOr<internal::v1::ReserveResponse>)> done) {
  auto handle = decode_->Handle(address);
  if (handle == nullptr) {
    done(NoWorker(address));
    return;
  }
  using Call = UnaryCall<internal::v1::ReserveRequest, internal::v1::ReserveResponse>;
  auto* call = new Call;
  call->ctx.set_deadline(absl::ToChronoTime(deadline));
  call->request = std::move(request);
  calls_.Begin();
  handle->decode->async()->Reserve(&call->ctx, &call->request, &call->response,
                                   [this, call, done = std::move(done)](grpc::Status s) {
                                     if (s.ok()) {
                                       done(std::move(call->response));
                                     } else {
                                       done(rpc::FromGrpc(s));
                                     }
                                     delete call;
                                     calls_.End();
                                   });
}

void GrpcWorkerClient::Release(const std::string& address, internal::v1::ReleaseRequest request,
                               std::function<void()> done) {
  auto handle = decode_->Handle(address);
  if (handle == nullptr) {
    done();
    return;
  }
  using Call = UnaryCall<internal::v1::ReleaseRequest, internal::v1::ReleaseResponse>;
  auto* call = new Call;
  call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + release_timeout_));
  call->request = std::move(request);
  calls_.Begin();
  handle->decode->async()->Release(&call->ctx, &call->request, &call->response,
                                   [this, call, done = std::move(done)](grpc::Status) {
                                     done();
                                     delete call;
                                     calls_.End();
                                   });
}

std::shared_ptr<core::WorkerStream> GrpcWorkerClient::OpenDecode(
    const std::string& address, internal::v1::DecodeRequest request, absl::Time deadline,
    core::StreamCallbacks<DecodeEvent> callbacks) {
  auto handle = decode_->Handle(address);
  if (handle == nullptr) return Ended(std::move(callbacks), address);
  return StreamCall<internal::v1::DecodeRequest, DecodeEvent>::Begin(
      std::move(request), std::move(callbacks), deadline, &calls_,
      [&](grpc::ClientContext* ctx, const internal::v1::DecodeRequest* req,
          grpc::ClientReadReactor<DecodeEvent>* reactor) {
        handle->decode->async()->Generate(ctx, req, reactor);
      });
}

std::shared_ptr<core::WorkerStream> GrpcWorkerClient::StartPrefill(
    const std::string& address, internal::v1::PrefillRequest request, absl::Time deadline,
    core::StreamCallbacks<PrefillEvent> callbacks) {
  auto handle = prefill_->Handle(address);
  if (handle == nullptr) return Ended(std::move(callbacks), address);
  return StreamCall<internal::v1::PrefillRequest, PrefillEvent>::Begin(
      std::move(request), std::move(callbacks), deadline, &calls_,
      [&](grpc::ClientContext* ctx, const internal::v1::PrefillRequest* req,
          grpc::ClientReadReactor<PrefillEvent>* reactor) {
        handle->prefill->async()->Run(ctx, req, reactor);
      });
}

}  // namespace ringserve::router
