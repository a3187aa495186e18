#include "decode_worker/service.h"

#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/rpc/server_stream.h"
#include "common/rpc/status.h"
#include "common/worker/model_state.h"
#include "common/worker/proto_convert.h"
#include "ringserve/v1/generation.pb.h"

namespace ringserve::decode {

using internal::v1::DecodeEvent;

namespace {

// A sequence's scheduler events as messages of its token stream.
class StreamSequenceSink final : public SequenceSink {
 public:
  explicit StreamSequenceSink(std::shared_ptr<rpc::StreamSink<DecodeEvent>> stream)
      : stream_(std::move(stream)) {}

  bool HasRoom() override { return stream_->HasRoom(); }

  void Token(int32_t token) override {
    DecodeEvent event;
    event.mutable_tokens()->add_token_ids(static_cast<uint32_t>(token));
    stream_->TryPush(std::move(event));
  }

  void Finished(const SequenceEnd& end) override {
    if (end.reason == FinishReason::kStalled) {
      stream_->Abort(rpc::ToGrpc(end.status));
      return;
    }
    if (!end.status.ok() && end.reason != FinishReason::kError) {
      stream_->Finish(rpc::ToGrpc(end.status));
      return;
    }
    DecodeEvent event;
    internal::v1::DecodeFinished* finished = event.mutable_finished();
    finished->set_reason(PublicReason(end.reason));
    finished->set_completion_tokens(static_cast<uint32_t>(end.completion_tokens));
    finished->set_decode_us(absl::ToInt64Microseconds(end.decode_time));
    if (!end.status.ok()) finished->set_error_message(std::string(end.status.message()));
    stream_->Push(std::move(event));
    stream_->Finish(grpc::Status::OK);
  }

  bool Cancelled() override { return stream_->cancelled(); }

 private:
  static ringserve::v1::FinishReason PublicReason(FinishReason reason) {
    switch (reason) {
      case FinishReason::kStop:
        return ringserve::v1::FINISH_REASON_STOP;
      case FinishReason::kLength:
        return ringserve::v1::FINISH_REASON_LENGTH;
      case FinishReason::kCancelled:
        return ringserve::v1::FINISH_REASON_CANCELLED;
      case FinishReason::kError:
      case FinishReason::kStalled:
        return ringserve::v1::FINISH_REASON_ERROR;
    }
    return ringserve::v1::FINISH_REASON_ERROR;
  }

  const std::shared_ptr<rpc::StreamSink<DecodeEvent>> stream_;
};

}  // namespace

DecodeService::DecodeService(state::ReservationTable* table, state::LinkReceiver* links,
                             Scheduler* scheduler, Options options)
    : DecodeStateService(table, links),
      table_(table),
      scheduler_(scheduler),
      options_(std::move(options)) {}

grpc::ServerUnaryReactor* DecodeService::Reserve(grpc::CallbackServerContext* ctx,
                                                 const internal::v1::ReserveRequest* request,
                                                 internal::v1::ReserveResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (!ready_) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode worker is draining"));
    return reactor;
  }
  const absl::Duration lease =
      request->lease_ms() > 0 ? absl::Milliseconds(request->lease_ms()) : absl::Seconds(60);
  if (absl::Status admitted = table_->Admit(request->request_id(), request->prompt_tokens(),
                                            request->max_tokens(), lease);
      !admitted.ok()) {
    reactor->Finish(rpc::ToGrpc(admitted));
    return reactor;
  }
  scheduler_->PostAdmission([this, request, lease, response, reactor](const absl::Status& status) {
    if (!status.ok()) {
      table_->Abandon(request->request_id());
      reactor->Finish(rpc::ToGrpc(status));
      return;
    }
    Allocate(request, lease, response, reactor);
  });
  return reactor;
}

void DecodeService::Allocate(const internal::v1::ReserveRequest* request, absl::Duration lease,
                             internal::v1::ReserveResponse* response,
                             grpc::ServerUnaryReactor* reactor) {
  absl::StatusOr<state::Reservation> r = table_->Allocate(request->request_id());
  if (!r.ok()) {
    reactor->Finish(rpc::ToGrpc(r.status()));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    Request& req = requests_[request->request_id()];
    req.ticket = r->ticket;
    req.lease = lease;
    req.stopping = request->stopping();
    req.stopping.set_max_tokens(request->max_tokens());
  }
  RS_LOG(kInfo) << "event=reserved request_id=" << base::Quote(request->request_id())
                << " prompt_tokens=" << request->prompt_tokens()
                << " max_tokens=" << request->max_tokens();
  response->set_ticket(r->ticket);
  response->set_epoch(r->epoch);
  response->set_lease_deadline_unix_ms(absl::ToUnixMillis(r->lease_deadline));
  reactor->Finish(grpc::Status::OK);
}

grpc::ServerWriteReactor<DecodeEvent>* DecodeService::Generate(
    grpc::CallbackServerContext* ctx, const internal::v1::DecodeRequest* request) {
  auto stream = std::make_shared<rpc::StreamSink<DecodeEvent>>(options_.stream_queue_messages);
  const std::string id = request->request_id();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = requests_.find(id);
    if (it == requests_.end()) {
      return rpc::RejectStream<DecodeEvent>(grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("no reservation for request ", base::Quote(id), " (lease expired?)")));
    }
    if (it->second.ticket != request->ticket()) {
      return rpc::RejectStream<DecodeEvent>(
          grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "ticket does not match"));
    }
    if (it->second.stream != nullptr) {
      return rpc::RejectStream<DecodeEvent>(
          grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                       absl::StrCat("request ", base::Quote(id), " is streaming")));
    }
    it->second.stream = stream;
  }
  const std::string ticket = request->ticket();
  stream->OnCancel([this, id, ticket] {
    scheduler_->Cancel(id);
    table_->Release(id, ticket).IgnoreError();
  });
  stream->OnWritable([this] { scheduler_->Wake(); });
  auto* reactor = new rpc::ServerStreamReactor<DecodeEvent>(stream, ctx);
  MaybeStart(id);
  return reactor;
}

void DecodeService::MaybeStart(const std::string& request_id) {
  std::string ticket;
  std::shared_ptr<rpc::StreamSink<DecodeEvent>> stream;
  internal::v1::Stopping stopping;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = requests_.find(request_id);
    if (it == requests_.end() || it->second.stream == nullptr || it->second.started) return;
    ticket = it->second.ticket;
    stream = it->second.stream;
    stopping = it->second.stopping;
  }
  absl::StatusOr<state::ReadyState> ready = table_->TakeReady(request_id, ticket);
  if (!ready.ok()) return;  // not arrived yet: OnStateEvent calls again
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = requests_.find(request_id);
    if (it == requests_.end() || it->second.started) return;
    it->second.started = true;
  }
  absl::StatusOr<std::unique_ptr<model::SequenceState>> state =
      worker::ModelState::Unwrap(std::move(ready->state));
  if (!state.ok()) {
    table_->Release(request_id, ticket).IgnoreError();
    Forget(request_id);
    stream->Finish(rpc::ToGrpc(state.status()));
    return;
  }
  ReadySequence seq;
  seq.request_id = request_id;
  seq.state = std::move(*state);
  seq.first_token = static_cast<int32_t>(ready->first_token);
  seq.options.sampling = worker::SamplingFromProto(ready->sampling);
  seq.options.max_tokens = stopping.max_tokens();
  seq.options.ignore_eos = stopping.ignore_eos();
  for (uint32_t id : stopping.stop_token_ids()) {
    seq.options.stop_token_ids.push_back(static_cast<int32_t>(id));
  }
  seq.sink = std::make_shared<StreamSequenceSink>(stream);
  seq.on_finish = [this, request_id, ticket] {
    table_->Release(request_id, ticket).IgnoreError();
    Forget(request_id);
  };
  RS_LOG(kInfo) << "event=state_ready request_id=" << base::Quote(request_id)
                << " tokens=" << ready->tokens << " bytes=" << ready->bytes
                << " transfer_us=" << absl::ToInt64Microseconds(ready->transfer_time);
  scheduler_->Submit(std::move(seq));
}

void DecodeService::OnStateEvent(const std::string& request_id, const absl::Status& status) {
  if (status.ok()) {
    MaybeStart(request_id);
    return;
  }
  std::shared_ptr<rpc::StreamSink<DecodeEvent>> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = requests_.find(request_id);
    if (it == requests_.end() || it->second.started) return;
    stream = it->second.stream;
    requests_.erase(it);
  }
  RS_LOG(kInfo) << "event=reservation_ended request_id=" << base::Quote(request_id)
                << " status=" << base::Quote(status.ToString());
  if (stream != nullptr) stream->Finish(rpc::ToGrpc(status));
}

void DecodeService::RenewAttachedLeases() {
  std::vector<std::tuple<std::string, std::string, absl::Duration>> attached;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, req] : requests_) {
      if (req.stream != nullptr && !req.started) attached.emplace_back(id, req.ticket, req.lease);
    }
  }
  for (const auto& [id, ticket, lease] : attached) table_->Renew(id, ticket, lease).IgnoreError();
}

void DecodeService::Forget(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  requests_.erase(request_id);
}

grpc::ServerUnaryReactor* DecodeService::Release(grpc::CallbackServerContext* ctx,
                                                 const internal::v1::ReleaseRequest* request,
                                                 internal::v1::ReleaseResponse* response) {
  scheduler_->Cancel(request->request_id());
  const absl::Status s = table_->Release(request->request_id(), request->ticket());
  response->set_released(s.ok());
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(s.ok() || absl::IsNotFound(s) ? grpc::Status::OK : rpc::ToGrpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* DecodeService::GetStatus(grpc::CallbackServerContext* ctx,
                                                   const internal::v1::StatusRequest*,
                                                   internal::v1::WorkerStatus* response) {
  const state::ReservationStats stats = table_->Stats();
  const SchedulerStats sched = scheduler_->stats();
  response->set_role("decode");
  response->set_epoch(table_->epoch());
  response->set_ready(ready_);
  response->set_running(sched.running);
  response->set_paused(sched.paused);
  response->set_state_slots_total(static_cast<uint32_t>(stats.slots_total));
  response->set_state_slots_used(static_cast<uint32_t>(stats.slots_used));
  response->set_kv_tokens_total(static_cast<uint64_t>(stats.kv_tokens_total));
  response->set_kv_tokens_used(static_cast<uint64_t>(stats.kv_tokens_used));
  response->set_reservations(static_cast<uint32_t>(stats.reservations));
  response->set_transfers_in_flight(static_cast<uint32_t>(stats.transfers_in_flight));
  response->set_buffered_bytes(stats.state_bytes);
  response->set_model_fingerprint(table_->model_fingerprint());
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ringserve::decode
