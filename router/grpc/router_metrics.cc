#include "router/grpc/router_metrics.h"

namespace ringserve::router {

RouterMetrics::RouterMetrics(rpc::Metrics* m)
    : metrics_(m),
      ttft_(m->Seconds("ringserve_router_time_to_first_token_seconds",
                       "Time from admission to the first streamed token")),
      inter_token_(m->Seconds("ringserve_router_inter_token_latency_seconds",
                              "Time between consecutive streamed tokens")),
      e2e_(m->Seconds("ringserve_router_request_duration_seconds", "Time of whole requests")),
      queue_wait_(m->Seconds("ringserve_router_queue_wait_seconds",
                             "Time requests waited in the router for a decode worker with room")),
      prefill_retries_(m->Counter("ringserve_router_prefill_retries_total",
                                  "Prefills rerun on another worker after a failure")),
      migrations_(m->Counter("ringserve_router_migrations_total",
                             "Streams moved to another decode worker after it was lost")),
      prompt_tokens_(m->Counter("ringserve_router_prompt_tokens_total", "Prompt tokens admitted")),
      completion_tokens_(
          m->Counter("ringserve_router_completion_tokens_total", "Tokens streamed to clients")) {}

void RouterMetrics::Finished(const std::string& outcome, absl::Duration total, size_t prompt_tokens,
                             size_t completion_tokens) {
  metrics_
      ->Counter("ringserve_router_requests_total", "Generate requests by outcome",
                {{"outcome", outcome}})
      .Increment();
  e2e_.Observe(absl::ToDoubleSeconds(total));
  prompt_tokens_.Increment(static_cast<double>(prompt_tokens));
  completion_tokens_.Increment(static_cast<double>(completion_tokens));
}

void RouterMetrics::FirstToken(absl::Duration since_admission) {
  ttft_.Observe(absl::ToDoubleSeconds(since_admission));
}

void RouterMetrics::InterToken(absl::Duration gap) {
  inter_token_.Observe(absl::ToDoubleSeconds(gap));
}

void RouterMetrics::QueueWait(absl::Duration wait) {
  queue_wait_.Observe(absl::ToDoubleSeconds(wait));
}

void RouterMetrics::PrefillRetry() { prefill_retries_.Increment(); }

void RouterMetrics::Migration() { migrations_.Increment(); }

void RouterMetrics::HungWorker(const std::string& role) {
  metrics_
      ->Counter("ringserve_router_hung_workers_total",
                "Worker streams given up after --worker-timeout-ms of silence", {{"pool", role}})
      .Increment();
}

void RouterMetrics::PrefillRouted(core::RouteReason reason) {
  metrics_
      ->Counter("ringserve_router_prefill_routes_total",
                "Prefill workers chosen, by reason: cache_hit (it holds a prefix of the prompt), "
                "load (no worker holds one), fallback (one does but is over the balance bound)",
                {{"reason", std::string(core::RouteReasonName(reason))}})
      .Increment();
}

}  // namespace ringserve::router
