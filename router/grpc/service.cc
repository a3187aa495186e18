#include "router/grpc/service.h"

#include <mutex>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/logging.h"
#include "common/base/random.h"
#include "common/rpc/status.h"

namespace ringserve::router {

using ringserve::v1::GenerateResponse;

namespace {

class GenerateReactor;

// The client side of one Generate stream as the core sees it: messages queue here and the
// reactor writes them one at a time. Shared by the flow and the reactor; outlives whichever
// ends first (after the reactor's OnDone, writes are dropped). Thread-safe.
class ClientChannel final : public core::ClientStream {
 public:
  explicit ClientChannel(grpc::CallbackServerContext* ctx) : ctx_(ctx) {}

  void Write(GenerateResponse message) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || cancelled_) return;
      queue_.push_back(std::move(message));
    }
    Pump();
  }

  void Finish(const absl::Status& status) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      status_ = rpc::ToGrpc(status);
    }
    Pump();
  }

  void Abort(const absl::Status& status) override {
    bool cancel = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
      status_ = rpc::ToGrpc(status);
      queue_.clear();
      // A write the client never takes can only be ended by cancelling the call.
      cancel = writing_ && reactor_ != nullptr;
    }
    if (cancel) ctx_->TryCancel();
    Pump();
  }

  void Attach(GenerateReactor* reactor) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      reactor_ = reactor;
    }
    Pump();
  }
  void WriteDone(bool ok) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
    }
    Pump();
  }
  void Cancelled() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
    }
    Pump();
  }
  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    reactor_ = nullptr;
    closed_ = true;
    queue_.clear();
  }

 private:
  void Pump();

  grpc::CallbackServerContext* const ctx_;  // valid while reactor_ is set
  std::mutex mu_;
  std::vector<GenerateResponse> queue_ ABSL_GUARDED_BY(mu_);  // a few messages at most
  GenerateResponse current_;  // the message being written; touched only while writing_
  GenerateReactor* reactor_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

// The gRPC side of one Generate call: writes what its channel holds, tells the flow about
// written messages and cancellation, frees the admission slot when the call is closed, and
// deletes itself in OnDone. `flow` is null for a request rejected before admission.
class GenerateReactor final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  GenerateReactor(std::shared_ptr<ClientChannel> channel, std::shared_ptr<core::RequestFlow> flow,
                  std::function<void()> on_closed)
      : channel_(std::move(channel)), flow_(std::move(flow)), on_closed_(std::move(on_closed)) {
    channel_->Attach(this);
  }

  void OnWriteDone(bool ok) override {
    if (flow_ != nullptr) {
      if (ok) {
        flow_->OnClientWriteDone();
      } else {
        flow_->OnClientCancelled();
      }
    }
    channel_->WriteDone(ok);
  }
  void OnCancel() override {
    if (flow_ != nullptr) flow_->OnClientCancelled();
    channel_->Cancelled();
  }
  void OnDone() override {
    channel_->Detach();
    if (flow_ != nullptr) flow_->OnClientCancelled();  // a no-op once the flow has finished
    if (on_closed_) on_closed_();
    delete this;
  }

 private:
  const std::shared_ptr<ClientChannel> channel_;
  const std::shared_ptr<core::RequestFlow> flow_;
  const std::function<void()> on_closed_;
};

void ClientChannel::Pump() {
  enum { kNone, kWrite, kFinish } action = kNone;
  grpc::Status status;
  GenerateReactor* reactor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reactor = reactor_;
    if (writing_ || reactor == nullptr || finished_) return;
    if (!queue_.empty() && !cancelled_) {
      current_ = std::move(queue_.front());
      queue_.erase(queue_.begin());
      writing_ = true;
      action = kWrite;
    } else if (closed_ || cancelled_) {
      finished_ = true;
      status = cancelled_ ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client")
                          : status_;
      action = kFinish;
    }
  }
  if (action == kWrite) reactor->StartWrite(&current_);
  if (action == kFinish) reactor->Finish(status);
}

grpc::ServerWriteReactor<GenerateResponse>* Reject(grpc::CallbackServerContext* ctx,
                                                   const grpc::Status& status) {
  auto channel = std::make_shared<ClientChannel>(ctx);
  channel->Finish(rpc::FromGrpc(status));
  return new GenerateReactor(channel, nullptr, nullptr);
}

}  // namespace

grpc::Status RouterService::Authenticate(grpc::CallbackServerContext* ctx) const {
  if (options_.api_token.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing 'authorization: Bearer <token>' metadata");
  }
  const std::string value(it->second.data(), it->second.size());
  if (value != "Bearer " + options_.api_token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid bearer token");
  }
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<GenerateResponse>* RouterService::Generate(
    grpc::CallbackServerContext* ctx, const ringserve::v1::GenerateRequest* request) {
  if (grpc::Status auth = Authenticate(ctx); !auth.ok()) return Reject(ctx, auth);
  if (absl::Status s = ValidateRequest(*request, env_->options.limits); !s.ok()) {
    return Reject(ctx, rpc::ToGrpc(s));
  }
  std::string id = request->request_id();
  if (id.empty()) id = absl::StrFormat("req-%016x", base::RandomU64());
  if (absl::Status s = admission_->Enter(id); !s.ok()) return Reject(ctx, rpc::ToGrpc(s));
  const auto chrono_deadline = ctx->deadline();
  absl::Time deadline = absl::InfiniteFuture();
  if (chrono_deadline < std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    deadline = absl::FromChrono(chrono_deadline);
  }
  auto channel = std::make_shared<ClientChannel>(ctx);
  auto flow = core::RequestFlow::Create(env_, id, *request, channel, deadline);
  auto* reactor =
      new GenerateReactor(channel, flow, [admission = admission_, id] { admission->Leave(id); });
  flow->Start();
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::Tokenize(grpc::CallbackServerContext* ctx,
                                                  const ringserve::v1::TokenizeRequest* request,
                                                  ringserve::v1::TokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (grpc::Status auth = Authenticate(ctx); !auth.ok()) {
    reactor->Finish(auth);
    return reactor;
  }
  // A Tokenize holds an in-flight slot while it runs, like a Generate.
  const std::string id = absl::StrFormat("tokenize-%016x", base::RandomU64());
  if (absl::Status s = admission_->Enter(id); !s.ok()) {
    reactor->Finish(rpc::ToGrpc(s));
    return reactor;
  }
  cpu_->Post([this, id, reactor, request, response] {
    const absl::StatusOr<std::vector<uint32_t>> ids =
        TokenizeTokens(*request, env_->options.limits, env_->text);
    if (ids.ok()) {
      for (uint32_t t : *ids) response->add_ids(t);
    }
    admission_->Leave(id);
    reactor->Finish(ids.ok() ? grpc::Status::OK : rpc::ToGrpc(ids.status()));
  });
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                      const ringserve::v1::GetModelInfoRequest*,
                                                      ringserve::v1::ModelInfo* response) {
  auto* reactor = ctx->DefaultReactor();
  *response = options_.model_info;
  for (const core::WorkerView& w : decode_->Snapshot()) {
    if (w.healthy) {
      response->set_fingerprint(w.status.model_fingerprint());
      break;
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::GetClusterStatus(
    grpc::CallbackServerContext* ctx, const ringserve::v1::GetClusterStatusRequest*,
    ringserve::v1::ClusterStatus* response) {
  auto* reactor = ctx->DefaultReactor();
  for (const WorkerPool* pool : {prefill_, decode_}) {
    for (const core::WorkerView& w : pool->Snapshot()) {
      auto* info = response->add_workers();
      info->set_address(w.address);
      info->set_role(pool->role());
      info->set_healthy(w.healthy);
      info->set_epoch(w.epoch);
      info->set_error(w.error);
      if (pool->role() == "prefill") {
        info->set_load(w.status.queued_prompt_tokens());
        info->set_capacity(w.status.queue_capacity_tokens());
        const internal::v1::PrefixCacheSummary& cache = w.status.prefix_cache();
        info->set_prefix_cache_bytes(cache.bytes_used());
        info->set_prefix_cache_limit_bytes(cache.bytes_limit());
        info->set_prefix_cache_prefixes(static_cast<uint32_t>(cache.prefix_hashes_size()));
      } else {
        info->set_load(w.status.kv_tokens_used());
        info->set_capacity(w.status.kv_tokens_total());
      }
      info->set_running(w.status.running());
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ringserve::router
