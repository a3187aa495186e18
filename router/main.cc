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
#include "router/core/admission.h"
#include "router/core/policy.h"
#include "router/core/request_flow.h"
#include "router/grpc/executors.h"
#include "router/grpc/router_metrics.h"
#include "router/grpc/service.h"
#include "router/grpc/worker_client.h"
#include "router/grpc/worker_pool.h"
#include "router/text_stream.h"

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
  flags.String("max-inflight", "8192",
               "Generate streams (until closed) and Tokenize calls in flight before "
               "RESOURCE_EXHAUSTED");
  flags.String("queue-timeout-ms", "30000",
               "longest wait for a decode worker with room before RESOURCE_EXHAUSTED");
  flags.String("worker-timeout-ms", "10000",
               "a worker stream silent this long, with no status poll answered either, is hung");
  flags.String("client-timeout-ms", "30000",
               "a client that reads nothing this long while its output is queued loses the "
               "request");
  flags.String("max-new-tokens", "8192", "largest stopping.max_tokens accepted");
  flags.String("lease-ms", "60000", "decode reservation lease");
  flags.String("resolve-interval-ms", "5000", "re-resolution period of dns:/// targets");
  flags.String("poll-interval-ms", "500", "worker status poll period");
  flags.String("prefill-policy", "prefix",
               "prefix: the prefill worker holding the longest cached prefix of the prompt, within "
               "--prefix-balance-tokens of the least loaded; load: the least loaded");
  flags.String("prefix-balance-tokens", "16384",
               "a worker holding a prefix is passed over when its queued prompt tokens plus the "
               "prompt's uncached tokens exceed the least such sum by more than this");
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
  ASSIGN_OR_RETURN(const int64_t queue_timeout_ms, flags.GetInt("queue-timeout-ms"));
  ASSIGN_OR_RETURN(const int64_t worker_timeout_ms, flags.GetInt("worker-timeout-ms"));
  ASSIGN_OR_RETURN(const int64_t client_timeout_ms, flags.GetInt("client-timeout-ms"));
  ASSIGN_OR_RETURN(const int64_t balance_tokens, flags.GetInt("prefix-balance-tokens"));
  std::unique_ptr<core::Policy> policy;
  if (flags.Get("prefill-policy") == "prefix") {
    policy = std::make_unique<core::PrefixPolicy>(
        core::PrefixPolicyOptions{.balance_tokens = balance_tokens});
  } else if (flags.Get("prefill-policy") == "load") {
    policy = std::make_unique<core::LoadPolicy>();
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--prefill-policy must be prefix or load, not ",
                                                   base::Quote(flags.Get("prefill-policy"))));
  }
  const rpc::TlsFiles tls = rpc::TlsFromFlags(flags);
  std::string api_token;
  if (!flags.Get("api-token-file").empty()) {
    ASSIGN_OR_RETURN(api_token, base::ReadFileToString(flags.Get("api-token-file")));
    while (!api_token.empty() && (api_token.back() == '\n' || api_token.back() == '\r')) {
      api_token.pop_back();
    }
    if (api_token.empty()) return absl::InvalidArgumentError("--api-token-file is empty");
  }

  // The router's own threads: one for timers, two for blocking and CPU work (tokenizing, DNS).
  // Everything else runs on gRPC's threads, whatever the number of streams.
  TimerThread timers;
  TaskRunner cpu(2);
  core::AdmissionQueue queue;
  WorkerPool::Options pool_options;
  pool_options.tls = tls;
  pool_options.resolve_interval = absl::Milliseconds(resolve_ms);
  pool_options.poll_interval = absl::Milliseconds(poll_ms);
  pool_options.role = "prefill";
  pool_options.targets = SplitTargets(flags.Get("prefill"));
  ASSIGN_OR_RETURN(auto prefill, WorkerPool::Create(pool_options, &timers, &cpu));
  pool_options.role = "decode";
  pool_options.targets = SplitTargets(flags.Get("decode"));
  ASSIGN_OR_RETURN(auto decode, WorkerPool::Create(pool_options, &timers, &cpu));
  prefill->RefreshAndWait();
  decode->RefreshAndWait();

  ASSIGN_OR_RETURN(const int64_t metrics_port, flags.GetInt("metrics-port"));
  ASSIGN_OR_RETURN(auto metrics, rpc::Metrics::Start(flags.Get("host"),
                                                     static_cast<int>(metrics_port), "router"));
  RouterMetrics router_metrics(metrics.get());
  auto& m_inflight = metrics->Gauge("ringserve_router_inflight_requests",
                                    "Generate streams not yet closed and Tokenize calls running");
  auto& m_queued = metrics->Gauge("ringserve_router_queued_requests",
                                  "Requests waiting for a decode worker with room");
  auto& m_healthy_prefill = metrics->Gauge("ringserve_router_healthy_workers",
                                           "Healthy workers by pool", {{"pool", "prefill"}});
  auto& m_healthy_decode = metrics->Gauge("ringserve_router_healthy_workers",
                                          "Healthy workers by pool", {{"pool", "decode"}});
  core::Admission admission(static_cast<uint32_t>(max_inflight));
  GrpcWorkerClient workers(prefill.get(), decode.get());
  core::FlowEnv env;
  env.prefill = prefill.get();
  env.decode = decode.get();
  env.policy = policy.get();
  env.workers = &workers;
  env.timers = &timers;
  env.queue = &queue;
  env.text = text.get();
  env.observer = &router_metrics;
  env.offload = [&cpu](std::function<void()> fn) { cpu.Post(std::move(fn)); };
  env.options.limits.vocab_size = static_cast<uint32_t>(config.vocab_size);
  env.options.limits.max_context = static_cast<uint32_t>(config.max_position_embeddings);
  env.options.limits.max_new_tokens = static_cast<uint32_t>(max_new);
  env.options.lease = absl::Milliseconds(lease_ms);
  env.options.queue_timeout = absl::Milliseconds(queue_timeout_ms);
  env.options.worker_timeout = absl::Milliseconds(worker_timeout_ms);
  env.options.client_timeout = absl::Milliseconds(client_timeout_ms);
  // Capacity may have freed elsewhere (another router, a lease that expired): the head of the
  // queue tries again after every decode poll.
  decode->Start([&queue] { queue.Wake(); });
  prefill->Start(nullptr);

  RouterService::Options options;
  options.api_token = api_token;
  auto& info = options.model_info;
  info.set_model_type(config.model_type);
  info.set_vocab_size(static_cast<uint32_t>(config.vocab_size));
  info.set_max_context_tokens(static_cast<uint32_t>(config.max_position_embeddings));
  info.set_num_layers(static_cast<uint32_t>(config.num_hidden_layers));
  info.set_num_linear_layers(static_cast<uint32_t>(config.num_linear_layers()));
  info.set_num_softmax_layers(static_cast<uint32_t>(config.num_softmax_layers()));
  for (int64_t id : config.eos_token_ids) info.add_eos_token_ids(static_cast<uint32_t>(id));
  info.set_max_new_tokens(static_cast<uint32_t>(max_new));
  RouterService service(&env, &admission, prefill.get(), decode.get(), &cpu, options);

  ASSIGN_OR_RETURN(
      auto server,
      rpc::GrpcServer::Start(flags.Get("host"), static_cast<int>(port), tls,
                             /*require_client_cert=*/false,
                             {static_cast<ringserve::v1::Generation::CallbackService*>(&service),
                              static_cast<ringserve::v1::Admin::CallbackService*>(&service)},
                             env.options.limits.max_request_bytes));
  server->SetReady(true);
  RS_LOG(kInfo) << "event=listening port=" << server->port() << " metrics_port=" << metrics->port();
  ASSIGN_OR_RETURN(const int64_t ready_fd, flags.GetInt("ready-fd"));
  base::NotifyReady(static_cast<int>(ready_fd), absl::StrCat(server->port(), " ", metrics->port()));
  metrics->SetRefresh([&] {
    m_inflight.Set(admission.inflight());
    m_queued.Set(static_cast<double>(queue.size()));
    for (auto [pool, gauge] : {std::pair{prefill.get(), &m_healthy_prefill},
                               std::pair{decode.get(), &m_healthy_decode}}) {
      int healthy = 0;
      for (const core::WorkerView& w : pool->Snapshot()) healthy += w.healthy ? 1 : 0;
      gauge->Set(healthy);
    }
  });
  const int sig = rpc::WaitForTerminationSignal();
  RS_LOG(kInfo) << "event=draining signal=" << sig << " inflight=" << admission.inflight();
  server->SetReady(false);
  server->Shutdown(absl::Seconds(30));
  metrics->SetRefresh(nullptr);
  cpu.Stop();  // before the flows' environment goes: queued tokenizing may still use it
  return absl::OkStatus();
}

}  // namespace ringserve::router

int main(int argc, char** argv) {
  return ringserve::rpc::ServerMain("ringserve-router", ringserve::router::Main, argc, argv);
}
