#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "ringserve/v1/generation.grpc.pb.h"
#include "router/core/admission.h"
#include "router/core/request_flow.h"
#include "router/grpc/executors.h"
#include "router/grpc/worker_pool.h"

namespace ringserve::router {

// The public API: Generate (a server write reactor per request feeding a core::RequestFlow),
// Tokenize and GetModelInfo; plus the Admin service's cluster status. Handlers validate, admit
// and hand off; they never block. Generate streams and Tokenize calls hold a slot of
// `admission` until the call is closed. Everything passed in outlives the service. Thread-safe.
class RouterService final : public ringserve::v1::Generation::CallbackService,
                            public ringserve::v1::Admin::CallbackService {
 public:
  struct Options {
    std::string api_token;  // empty: no bearer token required
    ringserve::v1::ModelInfo model_info;
  };
  RouterService(const core::FlowEnv* env, core::Admission* admission, const WorkerPool* prefill,
                const WorkerPool* decode, TaskRunner* cpu, Options options)
      : env_(env),
        admission_(admission),
        prefill_(prefill),
        decode_(decode),
        cpu_(cpu),
        options_(std::move(options)) {}

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

 private:
  grpc::Status Authenticate(grpc::CallbackServerContext* ctx) const;

  const core::FlowEnv* const env_;
  core::Admission* const admission_;
  const WorkerPool* const prefill_;
  const WorkerPool* const decode_;
  TaskRunner* const cpu_;
  const Options options_;
};

}  // namespace ringserve::router
