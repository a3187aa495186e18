#pragma once

#include <string>

#include "common/rpc/metrics.h"
#include "router/core/request_flow.h"

namespace ringserve::router {

// The router's Prometheus series, fed by the flows. Thread-safe; owned by the router process.
class RouterMetrics : public core::FlowObserver {
 public:
  explicit RouterMetrics(rpc::Metrics* m);

  void Finished(const std::string& outcome, absl::Duration total, size_t prompt_tokens,
                size_t completion_tokens) override;
  void FirstToken(absl::Duration since_admission) override;
  void InterToken(absl::Duration gap) override;
  void QueueWait(absl::Duration wait) override;
  void PrefillRetry() override;
  void Migration() override;
  void HungWorker(const std::string& role) override;
  void PrefillRouted(core::RouteReason reason) override;

 private:
  rpc::Metrics* const metrics_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& inter_token_;
  prometheus::Histogram& e2e_;
  prometheus::Histogram& queue_wait_;
  prometheus::Counter& prefill_retries_;
  prometheus::Counter& migrations_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& completion_tokens_;
};

}  // namespace ringserve::router
