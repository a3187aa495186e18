#include "prefill_worker/service.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/server_stream.h"
#include "common/rpc/status.h"
#include "common/worker/proto_convert.h"

namespace ringserve::prefill {

using internal::v1::PrefillEvent;

namespace {

// Progress events a stream queues; beyond them progress is dropped until the client reads.
constexpr size_t kStreamQueueMessages = 16;

// A job's scheduler events as messages of its stream.
class StreamPrefillSink final : public PrefillSink {
 public:
  explicit StreamPrefillSink(std::shared_ptr<rpc::StreamSink<PrefillEvent>> stream)
      : stream_(std::move(stream)) {}

  void Progress(size_t done, size_t total) override {
    PrefillEvent event;
    event.mutable_progress()->set_tokens_done(static_cast<uint32_t>(done));
    event.mutable_progress()->set_tokens_total(static_cast<uint32_t>(total));
    stream_->TryPush(std::move(event));
  }

  void Finished(const PrefillOutcome& outcome) override {
    if (!outcome.status.ok()) {
      stream_->Finish(rpc::ToGrpc(outcome.status));
      return;
    }
    PrefillEvent event;
    internal::v1::PrefillDone* done = event.mutable_done();
    done->set_first_token(static_cast<uint32_t>(outcome.first_token));
    done->set_queue_us(absl::ToInt64Microseconds(outcome.queue));
    done->set_prefill_us(absl::ToInt64Microseconds(outcome.prefill));
    done->set_transfer_us(absl::ToInt64Microseconds(outcome.transfer));
    done->set_cached_tokens(static_cast<uint32_t>(outcome.cached_tokens));
    stream_->Push(std::move(event));
    stream_->Finish(grpc::Status::OK);
  }

  bool Cancelled() override { return stream_->cancelled(); }

 private:
  const std::shared_ptr<rpc::StreamSink<PrefillEvent>> stream_;
};

}  // namespace

PrefillService::PrefillService(PrefillScheduler* scheduler, const model::ModelConfig* config,
                               uint64_t epoch, std::string fingerprint, uint64_t max_queued_tokens,
                               const PrefixCache* prefix_cache)
    : scheduler_(scheduler),
      config_(config),
      epoch_(epoch),
      fingerprint_(std::move(fingerprint)),
      max_queued_tokens_(max_queued_tokens),
      prefix_cache_(prefix_cache) {}

grpc::ServerWriteReactor<PrefillEvent>* PrefillService::Run(
    grpc::CallbackServerContext* ctx, const internal::v1::PrefillRequest* request) {
  auto reject = [](grpc::StatusCode code, const std::string& message) {
    return rpc::RejectStream<PrefillEvent>(grpc::Status(code, message));
  };
  if (!ready_) return reject(grpc::StatusCode::UNAVAILABLE, "prefill worker is draining");
  if (request->tokens().empty())
    return reject(grpc::StatusCode::INVALID_ARGUMENT, "tokens is empty");
  if (request->tokens_size() > config_->max_position_embeddings) {
    return reject(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("prompt of ", request->tokens_size(), " tokens exceeds the context of ",
                     config_->max_position_embeddings));
  }
  if (request->decode_address().empty() || request->ticket().empty()) {
    return reject(grpc::StatusCode::INVALID_ARGUMENT, "decode_address and ticket are required");
  }
  if (request->cache_salt().size() > kMaxCacheSaltBytes) {
    return reject(grpc::StatusCode::INVALID_ARGUMENT,
                  absl::StrCat("cache_salt of ", request->cache_salt().size(),
                               " bytes exceeds the limit ", kMaxCacheSaltBytes));
  }
  auto job = std::make_unique<PrefillJob>();
  job->request_id = request->request_id();
  job->tokens.reserve(request->tokens_size());
  for (int i = 0; i < request->tokens_size(); ++i) {
    const uint32_t t = request->tokens(i);
    if (t >= static_cast<uint32_t>(config_->vocab_size)) {
      return reject(grpc::StatusCode::INVALID_ARGUMENT,
                    absl::StrCat("tokens[", i, "] = ", t, " is not below the vocabulary size ",
                                 config_->vocab_size));
    }
    job->tokens.push_back(static_cast<int32_t>(t));
  }
  job->sampling = worker::SamplingFromProto(request->sampling(), request->sample_position());
  job->decode_address = request->decode_address();
  job->ticket = request->ticket();
  job->progress = request->progress();
  job->cache_salt = request->cache_salt();
  job->enqueued = absl::Now();
  auto stream = std::make_shared<rpc::StreamSink<PrefillEvent>>(kStreamQueueMessages);
  job->sink = std::make_shared<StreamPrefillSink>(stream);
  const std::string id = job->request_id;
  stream->OnCancel([this, id] { scheduler_->Cancel(id); });
  if (absl::Status st = scheduler_->Submit(std::move(job)); !st.ok()) {
    stream->Finish(rpc::ToGrpc(st));
  }
  return new rpc::ServerStreamReactor<PrefillEvent>(stream, ctx);
}

grpc::ServerUnaryReactor* PrefillService::Cancel(grpc::CallbackServerContext* ctx,
                                                 const internal::v1::CancelRequest* request,
                                                 internal::v1::CancelResponse* response) {
  scheduler_->Cancel(request->request_id());
  response->set_cancelled(true);
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PrefillService::GetStatus(grpc::CallbackServerContext* ctx,
                                                    const internal::v1::StatusRequest*,
                                                    internal::v1::WorkerStatus* response) {
  const PrefillStats stats = scheduler_->stats();
  response->set_role("prefill");
  response->set_epoch(epoch_);
  response->set_ready(ready_);
  response->set_queued_prompt_tokens(stats.queued_tokens);
  response->set_queue_capacity_tokens(max_queued_tokens_);
  response->set_running(stats.jobs);
  response->set_transfers_in_flight(stats.transferring);
  response->set_model_fingerprint(fingerprint_);
  if (prefix_cache_ != nullptr) *response->mutable_prefix_cache() = prefix_cache_->Summary();
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ringserve::prefill
