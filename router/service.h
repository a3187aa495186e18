#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "ringserve/v1/generation.grpc.pb.h"
#include "router/request_flow.h"

namespace ringserve::router {

// The public API: Generate (each request runs as a RequestFlow on its own thread) and Tokenize,
// together bounded by max_inflight, and GetModelInfo; plus the Admin service's cluster status.
// Handlers validate, admit and hand off; they never block. Thread-safe.
class RouterService final : public ringserve::v1::Generation::CallbackService,
                            public ringserve::v1::Admin::CallbackService {
 public:
  struct Options {
    uint32_t max_inflight = 256;
    std::string api_token;  // empty: no bearer token required
    ringserve::v1::ModelInfo model_info;
  };
  RouterService(RouterContext* context, Options options);
  // Waits until every flow has finished.
  ~RouterService();

  grpc::ServerWriteReactor<ringserve::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const ringserve::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const ringserve::v1::TokenizeRequest* request,
                                     ringserve::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const ringserve::v1::GetModelInfoRequest* request,
                                         ringserve::v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetClusterStatus(grpc::CallbackServerContext* ctx,
                                             const ringserve::v1::GetClusterStatusRequest* request,
                                             ringserve::v1::ClusterStatus* response) override;

  uint32_t inflight() const;

 private:
  grpc::Status Authenticate(grpc::CallbackServerContext* ctx) const;
  // RESOURCE_EXHAUSTED when Generate streams and Tokenize calls fill max_inflight.
  grpc::Status AtCapacity() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  RouterContext* const context_;
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::set<std::string> active_ ABSL_GUARDED_BY(mu_);
  uint32_t tokenizing_ ABSL_GUARDED_BY(mu_) = 0;  // Tokenize calls running
};

}  // namespace ringserve::router
