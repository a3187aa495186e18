// ringserve-router: the public gRPC API; assigns each request to a prefill and a decode worker.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/base/flags.h"
#include "common/base/logging.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "common/base/subprocess.h"
#include "common/model/config.h"
#include "common/rpc/metrics.h"
#include "common/rpc/server.h"
#include "router/policy.h"
#include "router/service.h"
#include "router/text_stream.h"
#include "router/worker_pool.h"

namespace ringserve::router {

absl::Status Main(const std::vector<std::string>& args) {
  base::FlagSet flags("ringserve-router");
  flags.String("host", "0.0.0.0", "address to listen on");
  flags.String("port", "50051", "gRPC port (0 picks a free one)");
  flags.String("metrics-port", "9090", "Prometheus metrics port (0 picks one, -1 disables)");
  flags.String("prefill", "", "prefill workers: comma list of host:port or dns:///name:port");
  flags.String("decode", "", "decode workers: comma list of host:port or dns:///name:port");
  flags.String("model", "", "checkpoint directory (config and tokenizer files)");
  flags.String("api-token-file", "", "file holding the bearer token clients must send");
  flags.String("max-inflight", "256", "requests in flight before RESOURCE_EXHAUSTED");
  flags.String("max-new-tokens", "8192", "largest stopping.max_tokens accepted");
  flags.String("lease-ms", "60000", "decode reservation lease");
  flags.String("resolve-interval-ms", "5000", "re-resolution period of dns:/// targets");
  flags.String("poll-interval-ms", "500", "worker status poll period");
  flags.String("log-level", "info", "debug, info, warning or error");
  flags.String("ready-fd", "-1", "write 'GRPC_PORT METRICS_PORT' to this inherited fd when ready");
  rpc::AddTlsFlags(&flags);
  RETURN_IF_ERROR(flags.Parse(args));
  RETURN_IF_ERROR(base::SetLogLevel(flags.Get("log-level")));
  base::SetLogComponent("router");
  if (flags.Get("model").empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(const model::ModelConfig config,
                   model::ModelConfig::FromDirectory(flags.Get("model")));
  std::unique_ptr<TextCodec> text;
  if (std::filesystem::exists(std::filesystem::path(flags.Get("model")) / "tokenizer.json")) {
    ASSIGN_OR_RETURN(text, TextCodec::Load(flags.Get("model")));
  }
  ASSIGN_OR_RETURN(const int64_t port, flags.GetInt("port"));
  ASSIGN_OR_RETURN(const int64_t max_inflight, flags.GetInt("max-inflight"));
  ASSIGN_OR_RETURN(const int64_t max_new, flags.GetInt("max-new-tokens"));
  ASSIGN_OR_RETURN(const int64_t lease_ms, flags.GetInt("lease-ms"));
  ASSIGN_OR_RETURN(const int64_t resolve_ms, flags.GetInt("resolve-interval-ms"));
  ASSIGN_OR_RETURN(const int64_t poll_ms, flags.GetInt("poll-interval-ms"));
  const rpc::TlsFiles tls = rpc::TlsFromFlags(flags);
  std::string api_token;
  if (!flags.Get("api-token-file").empty()) {
    ASSIGN_OR_RETURN(api_token, base::ReadFileToString(flags.Get("api-token-file")));
    while (!api_token.empty() && (api_token.back() == '\n' || api_token.back() == '\r')) {
      api_token.pop_back();
    }
    if (api_token.empty()) return absl::InvalidArgumentError("--api-token-file is empty");
  }

  WorkerPool::Options pool_options;
  pool_options.tls = tls;
  pool_options.resolve_interval = absl::Milliseconds(resolve_ms);
  pool_options.poll_interval = absl::Milliseconds(poll_ms);
  pool_options.role = "prefill";
  pool_options.targets = SplitTargets(flags.Get("prefill"));
  ASSIGN_OR_RETURN(auto prefill, WorkerPool::Create(pool_options));
  pool_options.role = "decode";
  pool_options.targets = SplitTargets(flags.Get("decode"));
  ASSIGN_OR_RETURN(auto decode, WorkerPool::Create(pool_options));

  ASSIGN_OR_RETURN(const int64_t metrics_port, flags.GetInt("metrics-port"));
  ASSIGN_OR_RETURN(auto metrics, rpc::Metrics::Start(flags.Get("host"),
                                                     static_cast<int>(metrics_port), "router"));
  RouterMetrics router_metrics(metrics.get());
  auto& m_inflight = metrics->Gauge("ringserve_router_inflight_requests", "Requests in flight");
  auto& m_healthy_prefill = metrics->Gauge("ringserve_router_healthy_workers",
                                           "Healthy workers by pool", {{"pool", "prefill"}});
  auto& m_healthy_decode = metrics->Gauge("ringserve_router_healthy_workers",
                                          "Healthy workers by pool", {{"pool", "decode"}});
  LoadPolicy policy;
  RouterContext context;
  context.metrics = &router_metrics;
  context.prefill = prefill.get();
  context.decode = decode.get();
  context.policy = &policy;
  context.text = text.get();
  for (int64_t id : config.eos_token_ids)
    context.eos_token_ids.push_back(static_cast<uint32_t>(id));
  context.limits.vocab_size = static_cast<uint32_t>(config.vocab_size);
  context.limits.max_context = static_cast<uint32_t>(config.max_position_embeddings);
  context.limits.max_new_tokens = static_cast<uint32_t>(max_new);
  context.lease = absl::Milliseconds(lease_ms);

  RouterService::Options options;
  options.max_inflight = static_cast<uint32_t>(max_inflight);
  options.api_token = api_token;
  auto& info = options.model_info;
  info.set_model_type(config.model_type);
  info.set_vocab_size(static_cast<uint32_t>(config.vocab_size));
  info.set_max_context_tokens(static_cast<uint32_t>(config.max_position_embeddings));
  info.set_num_layers(static_cast<uint32_t>(config.num_hidden_layers));
  info.set_num_linear_layers(static_cast<uint32_t>(config.num_linear_layers()));
  info.set_num_softmax_layers(static_cast<uint32_t>(config.num_softmax_layers()));
  for (uint32_t id : context.eos_token_ids) info.add_eos_token_ids(id);
  info.set_max_new_tokens(static_cast<uint32_t>(max_new));
  RouterService service(&context, options);

  ASSIGN_OR_RETURN(
      auto server,
      rpc::GrpcServer::Start(flags.Get("host"), static_cast<int>(port), tls,
                             /*require_client_cert=*/false,
                             {static_cast<ringserve::v1::Generation::CallbackService*>(&service),
                              static_cast<ringserve::v1::Admin::CallbackService*>(&service)}));
  server->SetReady(true);
  RS_LOG(kInfo) << "event=listening port=" << server->port() << " metrics_port=" << metrics->port();
  ASSIGN_OR_RETURN(const int64_t ready_fd, flags.GetInt("ready-fd"));
  base::NotifyReady(static_cast<int>(ready_fd), absl::StrCat(server->port(), " ", metrics->port()));
  metrics->SetRefresh([&] {
    m_inflight.Set(service.inflight());
    for (auto [pool, gauge] : {std::pair{prefill.get(), &m_healthy_prefill},
                               std::pair{decode.get(), &m_healthy_decode}}) {
      int healthy = 0;
      for (const WorkerView& w : pool->Snapshot()) healthy += w.healthy ? 1 : 0;
      gauge->Set(healthy);
    }
  });
  const int sig = rpc::WaitForTerminationSignal();
  RS_LOG(kInfo) << "event=draining signal=" << sig << " inflight=" << service.inflight();
  server->SetReady(false);
  server->Shutdown(absl::Seconds(30));
  metrics->SetRefresh(nullptr);
  return absl::OkStatus();
}

}  // namespace ringserve::router

int main(int argc, char** argv) {
  return ringserve::rpc::ServerMain("ringserve-router", ringserve::router::Main, argc, argv);
}
