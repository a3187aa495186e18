#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/flags.h"
#include "common/model/model.h"
#include "kernels/backend.h"

namespace ringserve::worker {

// The flags both worker binaries take: --host, --port, --metrics-port, --model, --device,
// --threads, --decay-variant, --log-level, --ready-fd (TLS flags come from rpc::AddTlsFlags).
void AddWorkerFlags(base::FlagSet* flags, const std::string& default_port,
                    const std::string& default_metrics_port);

// What a worker needs once its common flags are parsed: the engine on its backend, the model
// fingerprint its peers must match (weights, config and decay variant), a fresh start epoch,
// and the listening settings. The backend outlives the model.
struct WorkerEngine {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<model::HybridModel> model;
  std::string fingerprint;
  uint64_t epoch = 0;
  std::string host;
  int port = 0;
  int metrics_port = 0;
  int ready_fd = -1;
};

// Sets the log level and component, then loads the model named by the flags.
absl::StatusOr<WorkerEngine> LoadWorkerEngine(const base::FlagSet& flags,
                                              const std::string& component);

}  // namespace ringserve::worker
