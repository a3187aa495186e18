// ringserve-prefill: chunked prefill of queued prompts; pushes each finished state to the decode
// worker named in its job.
#include <cstdio>
#include <numeric>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/flags.h"
#include "common/base/logging.h"
#include "common/base/status_macros.h"
#include "common/base/subprocess.h"
#include "common/model/model.h"
#include "common/rpc/metrics.h"
#include "common/rpc/server.h"
#include "common/state/grpc_stream.h"
#include "common/state/link_transport.h"
#include "common/worker/model_state.h"
#include "common/worker/proto_convert.h"
#include "common/worker/worker_setup.h"
#include "prefill_worker/scheduler.h"
#include "prefill_worker/service.h"
#ifdef RINGSERVE_HAVE_NCCL
#include "common/state/device_memory.h"
#include "common/state/nccl_byte_link.h"
#endif

namespace ringserve::prefill {

absl::Status Main(const std::vector<std::string>& args) {
  base::FlagSet flags("ringserve-prefill");
  worker::AddWorkerFlags(&flags, "50061", "9091");
  flags.String("chunk-tokens", "2048", "prefill chunk length");
  flags.String("max-queued-tokens", "1048576", "queued prompt tokens before RESOURCE_EXHAUSTED");
  flags.String("max-active", "4", "prompts prefilled interleaved, chunk by chunk");
  flags.String("transport", "grpc", "state transport to decode workers: grpc or nccl");
  flags.String("transfer-timeout-s", "120", "deadline of one state transfer");
  flags.String("drain-timeout-s", "600", "how long SIGTERM waits for queued prompts");
  flags.String("prefix-cache-mib", "2048",
               "memory of the prefix cache (device memory with --device cuda); 0 turns it off");
  flags.String("prefix-checkpoint-tokens", "0",
               "prefix checkpoint spacing, a multiple of --chunk-tokens and the page; 0: the "
               "least common multiple of the two");
  flags.String("prefix-page-tokens", "64", "tokens per KV page of the prefix cache");
  rpc::AddTlsFlags(&flags);
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(const int64_t chunk, flags.GetInt("chunk-tokens"));
  ASSIGN_OR_RETURN(const int64_t max_queued, flags.GetInt("max-queued-tokens"));
  ASSIGN_OR_RETURN(const int64_t max_active, flags.GetInt("max-active"));
  ASSIGN_OR_RETURN(const int64_t transfer_s, flags.GetInt("transfer-timeout-s"));
  ASSIGN_OR_RETURN(const int64_t drain_s, flags.GetInt("drain-timeout-s"));
  ASSIGN_OR_RETURN(const int64_t cache_mib, flags.GetInt("prefix-cache-mib"));
  ASSIGN_OR_RETURN(int64_t checkpoint_tokens, flags.GetInt("prefix-checkpoint-tokens"));
  ASSIGN_OR_RETURN(const int64_t page_tokens, flags.GetInt("prefix-page-tokens"));
  if (chunk < 1 || max_queued < 1 || max_active < 1 || page_tokens < 1) {
    return absl::InvalidArgumentError(
        "--chunk-tokens, --max-queued-tokens, --max-active and --prefix-page-tokens must be "
        "positive");
  }
  if (checkpoint_tokens == 0) checkpoint_tokens = std::lcm(chunk, page_tokens);
  if (cache_mib < 0 || checkpoint_tokens % chunk != 0 || checkpoint_tokens % page_tokens != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--prefix-cache-mib ", cache_mib, " must not be negative and --prefix-checkpoint-tokens ",
        checkpoint_tokens, " must be a multiple of --chunk-tokens ", chunk,
        " and --prefix-page-tokens ", page_tokens));
  }
  const rpc::TlsFiles tls = rpc::TlsFromFlags(flags);
  ASSIGN_OR_RETURN(worker::WorkerEngine engine, worker::LoadWorkerEngine(flags, "prefill"));
  model::HybridModel* const model = engine.model.get();
  const std::string& fingerprint = engine.fingerprint;
  const uint64_t epoch = engine.epoch;
  // States live in device memory on CUDA; the transports reach them through this.
  std::unique_ptr<state::StateMemory> device_memory;
  if (flags.Get("device") == "cuda") {
#ifdef RINGSERVE_HAVE_NCCL
    ASSIGN_OR_RETURN(device_memory, state::DeviceStateMemory::Create(/*device=*/0));
#endif
  }
  ASSIGN_OR_RETURN(auto creds, rpc::ChannelCredentials(tls));
  state::ChannelCache channels(creds);
  std::unique_ptr<state::ByteLinkFactory> link_factory;
  std::unique_ptr<state::StateSender> sender;
  const std::string transport = flags.Get("transport");
  if (transport == "grpc") {
    sender = std::make_unique<state::GrpcStateSender>(worker::LayoutOf(model->config()), &channels);
  } else if (transport == "nccl") {
#ifdef RINGSERVE_HAVE_NCCL
    link_factory = std::make_unique<state::NcclByteLinkFactory>(/*device=*/0);
    state::LinkStateSender::Options link_options;
    link_options.sender_id = absl::StrCat(engine.host, ":", engine.port, "/", epoch);
    link_options.epoch = epoch;
    sender = std::make_unique<state::LinkStateSender>(worker::LayoutOf(model->config()),
                                                      link_factory.get(), &channels, link_options);
#else
    return absl::FailedPreconditionError(
        "--transport=nccl needs a build with CUDA and NCCL (nvcc was not found)");
#endif
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--transport '", transport, "' is not one of grpc, nccl"));
  }

  ASSIGN_OR_RETURN(auto metrics, rpc::Metrics::Start(engine.host, engine.metrics_port, "prefill"));
  auto& m_bytes =
      metrics->Counter("ringserve_transfer_bytes_total", "State bytes sent to decode workers",
                       {{"transport", transport}});
  auto& m_transfer = metrics->Seconds("ringserve_transfer_duration_seconds",
                                      "Time of one state transfer", {{"transport", transport}});
  auto& m_ok = metrics->Counter("ringserve_prefill_requests_total", "Prefill jobs by outcome",
                                {{"outcome", "ok"}});
  auto& m_failed = metrics->Counter("ringserve_prefill_requests_total", "Prefill jobs by outcome",
                                    {{"outcome", "error"}});
  SendState send = [&](const PrefillJob& job) -> absl::Status {
    state::TransferJob t;
    t.request_id = job.request_id;
    t.ticket = job.ticket;
    t.decode_address = job.decode_address;
    t.sender_epoch = epoch;
    t.first_token = static_cast<uint32_t>(job.first_token);
    t.sampling = worker::SamplingToProto(job.sampling);
    t.model_fingerprint = fingerprint;
    const worker::ModelState view(job.state.get());
    t.state = &view;
    t.tokens = job.state->position();
    if (device_memory != nullptr) t.memory = device_memory.get();
    absl::StatusOr<state::TransferResult> r =
        sender->Send(t, absl::Now() + absl::Seconds(transfer_s));
    if (!r.ok()) {
      m_failed.Increment();
      return r.status();
    }
    m_ok.Increment();
    m_bytes.Increment(static_cast<double>(r->bytes));
    m_transfer.Observe(absl::ToDoubleSeconds(r->elapsed));
    return absl::OkStatus();
  };
  std::unique_ptr<PrefixCache> prefix_cache;
  if (cache_mib > 0) {
    PrefixCache::Options cache_options;
    cache_options.max_bytes = static_cast<size_t>(cache_mib) << 20;
    cache_options.page_tokens = page_tokens;
    cache_options.checkpoint_tokens = checkpoint_tokens;
    ASSIGN_OR_RETURN(prefix_cache, PrefixCache::Create(model, cache_options));
  }
  PrefillScheduler::Options options;
  options.chunk_tokens = chunk;
  options.prefix_cache = prefix_cache.get();
  options.max_queued_tokens = static_cast<uint64_t>(max_queued);
  options.max_active = static_cast<int>(max_active);
  PrefillScheduler scheduler(model, options, send);
  PrefillService service(&scheduler, &model->config(), epoch, fingerprint,
                         static_cast<uint64_t>(max_queued), prefix_cache.get());
  scheduler.Start();
  auto& m_queued = metrics->Gauge("ringserve_prefill_queued_prompt_tokens",
                                  "Prompt tokens queued or being prefilled (autoscaling signal)");
  auto& m_jobs =
      metrics->Gauge("ringserve_prefill_jobs", "Prefill jobs queued, running or sending");
  auto& m_tokens = metrics->Counter("ringserve_prefill_tokens_total", "Prompt tokens prefilled");
  auto& m_lookups =
      metrics->Counter("ringserve_prefix_cache_lookups_total", "Prompts looked up in the cache");
  auto& m_hits = metrics->Counter("ringserve_prefix_cache_hits_total",
                                  "Prompts that restored a cached prefix");
  auto& m_restored = metrics->Counter("ringserve_prefix_cache_restored_tokens_total",
                                      "Prompt tokens restored instead of prefilled");
  auto& m_saved = metrics->Counter("ringserve_prefix_cache_checkpoints_total",
                                   "State checkpoints stored in the cache");
  auto& m_checkpoints =
      metrics->Gauge("ringserve_prefix_cache_checkpoints", "State checkpoints held");
  auto& m_evicted_checkpoints = metrics->Counter("ringserve_prefix_cache_evictions_total",
                                                 "Cache entries evicted", {{"kind", "checkpoint"}});
  auto& m_evicted_pages = metrics->Counter("ringserve_prefix_cache_evictions_total",
                                           "Cache entries evicted", {{"kind", "kv_page"}});
  auto& m_cache_bytes = metrics->Gauge("ringserve_prefix_cache_bytes", "Prefix cache bytes held");
  auto& m_cache_limit =
      metrics->Gauge("ringserve_prefix_cache_limit_bytes", "Prefix cache bound (bytes)");

  ASSIGN_OR_RETURN(auto server, rpc::GrpcServer::Start(engine.host, engine.port, tls,
                                                       /*require_client_cert=*/true, {&service}));
  service.set_ready(true);
  server->SetReady(true);
  RS_LOG(kInfo) << "event=listening port=" << server->port() << " metrics_port=" << metrics->port()
                << " epoch=" << epoch << " transport=" << transport;
  base::NotifyReady(engine.ready_fd, absl::StrCat(server->port(), " ", metrics->port()));

  metrics->SetRefresh([&, seen = uint64_t{0}, cache_seen = cache::PrefixTreeStats()]() mutable {
    const PrefillStats s = scheduler.stats();
    m_queued.Set(static_cast<double>(s.queued_tokens));
    m_jobs.Set(s.jobs);
    m_tokens.Increment(static_cast<double>(s.prefilled_tokens - seen));
    seen = s.prefilled_tokens;
    if (prefix_cache == nullptr) return;
    const cache::PrefixTreeStats c = prefix_cache->stats();
    auto add = [](prometheus::Counter& counter, uint64_t now, uint64_t before) {
      counter.Increment(static_cast<double>(now - before));
    };
    add(m_lookups, c.lookups, cache_seen.lookups);
    add(m_hits, c.hits, cache_seen.hits);
    add(m_restored, c.restored_tokens, cache_seen.restored_tokens);
    add(m_saved, c.inserted_checkpoints, cache_seen.inserted_checkpoints);
    add(m_evicted_checkpoints, c.evicted_checkpoints, cache_seen.evicted_checkpoints);
    add(m_evicted_pages, c.evicted_pages, cache_seen.evicted_pages);
    m_checkpoints.Set(static_cast<double>(c.checkpoints));
    m_cache_bytes.Set(static_cast<double>(c.bytes));
    m_cache_limit.Set(static_cast<double>(c.max_bytes));
    cache_seen = c;
  });
  const int sig = rpc::WaitForTerminationSignal();
  RS_LOG(kInfo) << "event=draining signal=" << sig;
  service.set_ready(false);
  server->SetReady(false);
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(drain_s);
  while (absl::Now() < drain_deadline && scheduler.stats().jobs > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  server->Shutdown(absl::Seconds(5));
  metrics->SetRefresh(nullptr);
  scheduler.Stop();
  return absl::OkStatus();
}

}  // namespace ringserve::prefill

int main(int argc, char** argv) {
  return ringserve::rpc::ServerMain("ringserve-prefill", ringserve::prefill::Main, argc, argv);
}
