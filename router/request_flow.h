#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/metrics.h"
#include "common/rpc/server_stream.h"
#include "ringserve/internal/v1/worker.pb.h"
#include "ringserve/v1/generation.pb.h"
#include "router/policy.h"
#include "router/text_stream.h"
#include "router/validation.h"
#include "router/worker_pool.h"

namespace ringserve::router {

// The router's Prometheus series (owned by its rpc::Metrics). Thread-safe.
struct RouterMetrics {
  explicit RouterMetrics(rpc::Metrics* m);
  prometheus::Counter& Outcome(const std::string& outcome);

  rpc::Metrics* const metrics;
  prometheus::Histogram& ttft;
  prometheus::Histogram& inter_token;
  prometheus::Histogram& e2e;
  prometheus::Counter& prefill_retries;
  prometheus::Counter& migrations;
  prometheus::Counter& prompt_tokens;
  prometheus::Counter& completion_tokens;
};

// Everything a request flow needs; owned by the router process, outlives every flow.
struct RouterContext {
  RouterMetrics* metrics = nullptr;  // may be null (tests)
  WorkerPool* prefill = nullptr;
  WorkerPool* decode = nullptr;
  const Policy* policy = nullptr;
  const TextCodec* text = nullptr;  // null: text and chat prompts answer UNIMPLEMENTED
  std::vector<uint32_t> eos_token_ids;
  RouterLimits limits;
  absl::Duration lease = absl::Seconds(60);
  absl::Duration unary_timeout = absl::Seconds(5);
  int max_attempts = 4;  // prefill retries and decode migrations per request
};

// One Generate request, driven on its own thread: tokenize, reserve on a decode worker, open the
// decode stream, prefill on a prefill worker (retrying on another when one fails), stream the
// first token and then the decode tokens with incremental text and stop strings; migrate to
// another decode worker (re-prefilling prompt + tokens so far) when the decode worker is lost.
// Run() is called once; Cancel() may be called from any thread.
class RequestFlow {
 public:
  RequestFlow(RouterContext* context, std::string request_id,
              ringserve::v1::GenerateRequest request,
              std::shared_ptr<rpc::StreamSink<ringserve::v1::GenerateResponse>> sink,
              absl::Time deadline);

  void Run();
  void Cancel();

 private:
  struct Outcome {
    bool done = false;  // the request finished (successfully or not)
    absl::Status status;
  };
  // One attempt: reserve, prefill, decode. Returns done=false to retry/migrate.
  Outcome Attempt(const std::vector<uint32_t>& context_tokens);
  // Streams one generated token; returns true when generation must stop (stop string).
  bool Emit(uint32_t token);
  void Finish(ringserve::v1::FinishReason reason, const absl::Status& status);
  std::unique_ptr<grpc::ClientContext> NewCall(absl::Duration limit);
  void Release(const std::string& decode_address, const std::string& ticket);

  RouterContext* const context_;
  const std::string request_id_;
  const ringserve::v1::GenerateRequest request_;
  const std::shared_ptr<rpc::StreamSink<ringserve::v1::GenerateResponse>> sink_;
  const absl::Time deadline_;
  const absl::Time start_;

  std::vector<uint32_t> prompt_;
  std::vector<uint32_t> generated_;
  std::unique_ptr<TextStream> text_;
  internal::v1::Sampling sampling_;  // resolved, with the seed minted when absent
  ringserve::v1::Timings timings_;
  absl::Time first_token_time_ = absl::InfinitePast();
  absl::Time last_token_time_ = absl::InfinitePast();
  bool stopped_by_string_ = false;
  ringserve::v1::FinishReason finish_reason_ = ringserve::v1::FINISH_REASON_STOP;

  std::mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<grpc::ClientContext*> calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ringserve::router
