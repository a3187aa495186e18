#include "router/service.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/logging.h"
#include "common/base/random.h"
#include "common/rpc/server_stream.h"
#include "common/rpc/status.h"

namespace ringserve::router {

using ringserve::v1::GenerateResponse;

RouterService::RouterService(RouterContext* context, Options options)
    : context_(context), options_(std::move(options)) {}

RouterService::~RouterService() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return active_.empty(); });
}

uint32_t RouterService::inflight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<uint32_t>(active_.size()) + tokenizing_;
}

grpc::Status RouterService::AtCapacity() const {
  const size_t inflight = active_.size() + tokenizing_;
  if (inflight < options_.max_inflight) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                      absl::StrCat("router has ", inflight, " requests in flight; the limit is ",
                                   options_.max_inflight));
}

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
  if (grpc::Status auth = Authenticate(ctx); !auth.ok()) {
    return rpc::RejectStream<GenerateResponse>(auth);
  }
  if (absl::Status s = ValidateRequest(*request, context_->limits); !s.ok()) {
    return rpc::RejectStream<GenerateResponse>(rpc::ToGrpc(s));
  }
  std::string id = request->request_id();
  if (id.empty()) {
    id = absl::StrFormat("req-%016x", base::RandomU64());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (grpc::Status full = AtCapacity(); !full.ok()) {
      return rpc::RejectStream<GenerateResponse>(full);
    }
    if (!active_.insert(id).second) {
      return rpc::RejectStream<GenerateResponse>(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                       absl::StrCat("request_id '", id, "' is already in flight")));
    }
  }
  const auto chrono_deadline = ctx->deadline();
  absl::Time deadline = absl::InfiniteFuture();
  if (chrono_deadline < std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    deadline = absl::FromChrono(chrono_deadline);
  }
  auto sink = std::make_shared<rpc::StreamSink<GenerateResponse>>();
  auto flow = std::make_shared<RequestFlow>(context_, id, *request, sink, deadline);
  sink->OnCancel([flow] { flow->Cancel(); });
  std::thread([this, flow, id] {
    flow->Run();
    std::lock_guard<std::mutex> lock(mu_);
    active_.erase(id);
    idle_cv_.notify_all();
  }).detach();
  return new rpc::ServerStreamReactor<GenerateResponse>(sink);
}

grpc::ServerUnaryReactor* RouterService::Tokenize(grpc::CallbackServerContext* ctx,
                                                  const ringserve::v1::TokenizeRequest* request,
                                                  ringserve::v1::TokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (grpc::Status auth = Authenticate(ctx); !auth.ok()) {
    reactor->Finish(auth);
    return reactor;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (grpc::Status full = AtCapacity(); !full.ok()) {
      reactor->Finish(full);
      return reactor;
    }
    ++tokenizing_;
  }
  absl::StatusOr<std::vector<uint32_t>> ids =
      TokenizeTokens(*request, context_->limits, context_->text);
  {
    std::lock_guard<std::mutex> lock(mu_);
    --tokenizing_;
  }
  if (!ids.ok()) {
    reactor->Finish(rpc::ToGrpc(ids.status()));
    return reactor;
  }
  for (uint32_t id : *ids) response->add_ids(id);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RouterService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                      const ringserve::v1::GetModelInfoRequest*,
                                                      ringserve::v1::ModelInfo* response) {
  auto* reactor = ctx->DefaultReactor();
  *response = options_.model_info;
  for (const WorkerView& w : context_->decode->Snapshot()) {
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
  for (WorkerPool* pool : {context_->prefill, context_->decode}) {
    for (const WorkerView& w : pool->Snapshot()) {
      auto* info = response->add_workers();
      info->set_address(w.address);
      info->set_role(pool->role());
      info->set_healthy(w.healthy);
      info->set_epoch(w.epoch);
      info->set_error(w.error);
      if (pool->role() == "prefill") {
        info->set_load(w.status.queued_prompt_tokens());
        info->set_capacity(w.status.queue_capacity_tokens());
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
