#include "common/worker/worker_setup.h"

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"
#include "common/base/random.h"
#include "common/base/status_macros.h"
#include "common/worker/model_state.h"

namespace ringserve::worker {

void AddWorkerFlags(base::FlagSet* flags, const std::string& default_port,
                    const std::string& default_metrics_port) {
  flags->String("host", "0.0.0.0", "address to listen on");
  flags->String("port", default_port, "gRPC port (0 picks a free one)");
  flags->String("metrics-port", default_metrics_port,
                "Prometheus metrics port (0 picks one, -1 disables)");
  flags->String("model", "", "checkpoint directory");
  flags->String("device", "cpu", "cpu or cuda");
  flags->String("threads", "0", "CPU threads (0 = all cores)");
  flags->String("decay-variant", "sglang", "linear-attention decay formula: sglang or hf");
  flags->String("log-level", "info", "debug, info, warning or error");
  flags->String("ready-fd", "-1", "write 'GRPC_PORT METRICS_PORT' to this inherited fd when ready");
}

absl::StatusOr<WorkerEngine> LoadWorkerEngine(const base::FlagSet& flags,
                                              const std::string& component) {
  RETURN_IF_ERROR(base::SetLogLevel(flags.Get("log-level")));
  base::SetLogComponent(component);
  if (flags.Get("model").empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(const int64_t port, flags.GetInt("port"));
  ASSIGN_OR_RETURN(const int64_t metrics_port, flags.GetInt("metrics-port"));
  ASSIGN_OR_RETURN(const int64_t threads, flags.GetInt("threads"));
  ASSIGN_OR_RETURN(const int64_t ready_fd, flags.GetInt("ready-fd"));
  ASSIGN_OR_RETURN(const model::DecayVariant variant,
                   model::ParseDecayVariant(flags.Get("decay-variant")));
  WorkerEngine w;
  w.host = flags.Get("host");
  w.port = static_cast<int>(port);
  w.metrics_port = static_cast<int>(metrics_port);
  w.ready_fd = static_cast<int>(ready_fd);
  ASSIGN_OR_RETURN(w.backend,
                   kernels::CreateBackend(flags.Get("device"), static_cast<int>(threads)));
  ASSIGN_OR_RETURN(w.model,
                   model::HybridModel::Load(flags.Get("model"), w.backend.get(), {variant}));
  // The decay variant changes the linear states, so it is part of what must match.
  ASSIGN_OR_RETURN(w.fingerprint, ModelFingerprintOfDirectory(flags.Get("model")));
  absl::StrAppend(&w.fingerprint, "/", model::DecayVariantName(variant));
  w.epoch = base::RandomU64() >> 1;
  return w;
}

}  // namespace ringserve::worker
