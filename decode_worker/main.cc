// ringserve-decode: admits requests (reservations under leases), receives their state, batches
// every live sequence on one scheduler thread and streams tokens.
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/clock.h"
#include "common/base/flags.h"
#include "common/base/logging.h"
#include "common/base/status_macros.h"
#include "common/base/subprocess.h"
#include "common/model/model.h"
#include "common/rpc/metrics.h"
#include "common/rpc/server.h"
#include "common/state/link_transport.h"
#include "common/state/reservations.h"
#include "common/worker/model_state.h"
#include "common/worker/worker_setup.h"
#include "decode_worker/scheduler.h"
#include "decode_worker/service.h"
#ifdef RINGSERVE_HAVE_NCCL
#include "common/state/device_memory.h"
#include "common/state/nccl_byte_link.h"
#endif

namespace ringserve::decode {

absl::Status Main(const std::vector<std::string>& args) {
  base::FlagSet flags("ringserve-decode");
  worker::AddWorkerFlags(&flags, "50071", "9092");
  flags.String("max-seqs", "64", "state slots (sequences reserved or running at once)");
  flags.String("kv-tokens", "1048576", "KV token capacity over all reservations");
  flags.String("lease-ms", "60000", "longest lease a reservation may ask for");
  flags.String("transport", "grpc", "state transport accepted besides gRPC: grpc or nccl");
  flags.String("drain-timeout-s", "600", "how long SIGTERM waits for running sequences");
  flags.String("stalled-stream-timeout-ms", "30000",
               "how long a sequence whose client reads no token waits out of the batch before "
               "it ends (DEADLINE_EXCEEDED) and frees its state");
  rpc::AddTlsFlags(&flags);
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(const int64_t max_seqs, flags.GetInt("max-seqs"));
  ASSIGN_OR_RETURN(const int64_t kv_tokens, flags.GetInt("kv-tokens"));
  ASSIGN_OR_RETURN(const int64_t lease_ms, flags.GetInt("lease-ms"));
  ASSIGN_OR_RETURN(const int64_t drain_s, flags.GetInt("drain-timeout-s"));
  ASSIGN_OR_RETURN(const int64_t stall_ms, flags.GetInt("stalled-stream-timeout-ms"));
  if (max_seqs < 1 || kv_tokens < 1 || stall_ms < 1) {
    return absl::InvalidArgumentError(
        "--max-seqs, --kv-tokens and --stalled-stream-timeout-ms must be positive");
  }
  ASSIGN_OR_RETURN(worker::WorkerEngine engine, worker::LoadWorkerEngine(flags, "decode"));
  model::HybridModel* const model = engine.model.get();
  const std::string& fingerprint = engine.fingerprint;
  const uint64_t epoch = engine.epoch;

  Scheduler::Options scheduler_options;
  scheduler_options.max_batch = static_cast<int>(max_seqs);
  scheduler_options.stall_timeout = absl::Milliseconds(stall_ms);
  Scheduler scheduler(model, scheduler_options);
  DecodeService* service_ptr = nullptr;
  state::ReservationTable::Options table_options;
  table_options.layout = worker::LayoutOf(model->config());
  table_options.model_fingerprint = fingerprint;
  table_options.limits.max_slots = max_seqs;
  table_options.limits.max_kv_tokens = kv_tokens;
  table_options.limits.max_lease = absl::Milliseconds(lease_ms);
  // Called by the service's admissions, on the scheduler thread between decode steps.
  table_options.factory = [model](int64_t capacity) {
    return worker::ModelState::Wrap(model->NewState(capacity));
  };
  table_options.epoch = epoch;
  std::unique_ptr<state::StateMemory> device_memory;
  if (flags.Get("device") == "cuda") {
#ifdef RINGSERVE_HAVE_NCCL
    ASSIGN_OR_RETURN(device_memory, state::DeviceStateMemory::Create(/*device=*/0));
    table_options.memory = device_memory.get();
#endif
  }
  table_options.listener = [&service_ptr](const std::string& id, const absl::Status& status) {
    if (service_ptr != nullptr) service_ptr->OnStateEvent(id, status);
  };
  ASSIGN_OR_RETURN(auto table, state::ReservationTable::Create(std::move(table_options)));
  std::unique_ptr<state::ByteLinkFactory> link_factory;
  std::unique_ptr<state::LinkReceiver> links;
  if (flags.Get("transport") == "nccl") {
#ifdef RINGSERVE_HAVE_NCCL
    link_factory = std::make_unique<state::NcclByteLinkFactory>(/*device=*/0);
    links = std::make_unique<state::LinkReceiver>(link_factory.get(), table.get(),
                                                  state::LinkReceiver::Options{.epoch = epoch});
#else
    return absl::FailedPreconditionError(
        "--transport=nccl needs a build with CUDA and NCCL (nvcc was not found)");
#endif
  } else if (flags.Get("transport") != "grpc") {
    return absl::InvalidArgumentError(
        absl::StrCat("--transport '", flags.Get("transport"), "' is not one of grpc, nccl"));
  }
  DecodeService service(table.get(), links.get(), &scheduler, DecodeService::Options{});
  service_ptr = &service;
  scheduler.Start();

  ASSIGN_OR_RETURN(auto metrics, rpc::Metrics::Start(engine.host, engine.metrics_port, "decode"));
  auto& m_running = metrics->Gauge("ringserve_decode_running_sequences", "Sequences in the batch");
  auto& m_paused = metrics->Gauge("ringserve_decode_paused_sequences",
                                  "Sequences out of the batch, waiting for their client to read");
  auto& m_stalled = metrics->Counter("ringserve_decode_stalled_streams_total",
                                     "Sequences ended because their client stopped reading");
  auto& m_admissions = metrics->Gauge("ringserve_decode_admissions_waiting",
                                      "Reservations waiting for the scheduler to allocate them");
  auto& m_slots_used = metrics->Gauge("ringserve_decode_state_slots_used", "State slots in use");
  auto& m_slots_free = metrics->Gauge("ringserve_decode_state_slots_free", "State slots free");
  auto& m_kv_used = metrics->Gauge("ringserve_decode_kv_tokens_used", "KV tokens reserved");
  auto& m_kv_free = metrics->Gauge("ringserve_decode_kv_tokens_free", "KV tokens free");
  auto& m_kv_ratio = metrics->Gauge("ringserve_decode_kv_tokens_used_ratio",
                                    "Fraction of KV tokens reserved (autoscaling signal)");
  auto& m_reservations = metrics->Gauge("ringserve_decode_reservations",
                                        "Reservations waiting for or holding a state");
  auto& m_transfers =
      metrics->Gauge("ringserve_decode_transfers_in_flight", "State transfers being received");
  auto& m_tokens = metrics->Counter("ringserve_decode_generated_tokens_total",
                                    "Tokens generated by decode steps");
  auto& m_steps = metrics->Counter("ringserve_decode_steps_total", "Decode steps run");
  auto& m_graphs =
      metrics->Gauge("ringserve_decode_graphs", "Decode graphs captured (one per batch size)");
  auto& m_graph_steps = metrics->Counter("ringserve_decode_graph_steps_total",
                                         "Decode steps replayed from a captured graph");

  ASSIGN_OR_RETURN(auto server,
                   rpc::GrpcServer::Start(engine.host, engine.port, rpc::TlsFromFlags(flags),
                                          /*require_client_cert=*/true, {&service}));
  service.set_ready(true);
  server->SetReady(true);
  RS_LOG(kInfo) << "event=listening port=" << server->port() << " metrics_port=" << metrics->port()
                << " epoch=" << epoch << " fingerprint=" << fingerprint;
  base::NotifyReady(engine.ready_fd, absl::StrCat(server->port(), " ", metrics->port()));

  metrics->SetRefresh([&, tokens_seen = uint64_t{0}, steps_seen = uint64_t{0},
                       graph_steps_seen = uint64_t{0}, stalled_seen = uint64_t{0}]() mutable {
    const state::ReservationStats s = table->Stats();
    const SchedulerStats sched = scheduler.stats();
    m_running.Set(sched.running);
    m_paused.Set(sched.paused);
    m_admissions.Set(sched.admissions);
    m_stalled.Increment(static_cast<double>(sched.stalled - stalled_seen));
    stalled_seen = sched.stalled;
    m_slots_used.Set(static_cast<double>(s.slots_used));
    m_slots_free.Set(static_cast<double>(s.slots_total - s.slots_used));
    m_kv_used.Set(static_cast<double>(s.kv_tokens_used));
    m_kv_free.Set(static_cast<double>(s.kv_tokens_total - s.kv_tokens_used));
    m_kv_ratio.Set(static_cast<double>(s.kv_tokens_used) /
                   static_cast<double>(std::max<int64_t>(1, s.kv_tokens_total)));
    m_reservations.Set(static_cast<double>(s.reservations));
    m_transfers.Set(static_cast<double>(s.transfers_in_flight));
    m_tokens.Increment(static_cast<double>(sched.tokens - tokens_seen));
    m_steps.Increment(static_cast<double>(sched.steps - steps_seen));
    m_graphs.Set(sched.graphs);
    m_graph_steps.Increment(static_cast<double>(sched.graph_steps - graph_steps_seen));
    tokens_seen = sched.tokens;
    steps_seen = sched.steps;
    graph_steps_seen = sched.graph_steps;
  });
  // Housekeeping: leases of attached transfers renewed, expired ones released, until a
  // termination signal.
  std::atomic<bool> stop{false};
  std::thread housekeeping([&] {
    while (!stop.load()) {
      service.RenewAttachedLeases();
      table->ExpireLeases();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  const int sig = rpc::WaitForTerminationSignal();
  RS_LOG(kInfo) << "event=draining signal=" << sig;
  service.set_ready(false);
  server->SetReady(false);
  // Running sequences finish; new reservations are refused meanwhile.
  const absl::Time drain_deadline = absl::Now() + absl::Seconds(drain_s);
  while (absl::Now() < drain_deadline) {
    const state::ReservationStats s = table->Stats();
    if (s.slots_used == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  server->Shutdown(absl::Seconds(5));
  metrics->SetRefresh(nullptr);
  scheduler.Stop();
  stop = true;
  housekeeping.join();
  return absl::OkStatus();
}

}  // namespace ringserve::decode

int main(int argc, char** argv) {
  return ringserve::rpc::ServerMain("ringserve-decode", ringserve::decode::Main, argc, argv);
}
