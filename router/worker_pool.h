#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"

namespace ringserve::router {

// What the router knows of one worker address, refreshed by the pool's poller.
struct WorkerView {
  std::string address;
  bool healthy = false;
  uint64_t epoch = 0;
  internal::v1::WorkerStatus status;
  std::string error;
  // Tokens this router assigned to the worker since its last poll (corrects the polled load
  // between polls, so a burst of requests spreads out).
  int64_t inflight_tokens = 0;
};

// One worker address with its channel and stubs. Immutable after creation; thread-safe.
struct WorkerHandle {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<internal::v1::Prefill::Stub> prefill;
  std::unique_ptr<internal::v1::Decode::Stub> decode;
};

// The workers of one pool ("prefill" or "decode"): static "host:port" targets and
// "dns:///name:port" targets re-resolved every `resolve_interval` (a Kubernetes headless Service
// resolves to every pod), each address tracked separately and polled with GetStatus (health, epoch,
// load). Thread-safe; owns a background thread.
class WorkerPool {
 public:
  struct Options {
    std::string role;  // "prefill" or "decode"
    std::vector<std::string> targets;
    rpc::TlsFiles tls;
    absl::Duration resolve_interval = absl::Seconds(5);
    absl::Duration poll_interval = absl::Milliseconds(500);
    absl::Duration rpc_timeout = absl::Seconds(2);
  };
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const Options& options);
  ~WorkerPool();

  const std::string& role() const { return options_.role; }
  std::vector<WorkerView> Snapshot() const;
  std::shared_ptr<WorkerHandle> Handle(const std::string& address) const;
  // Marks an address unhealthy at once (a call to it failed); the poller may restore it.
  void ReportFailure(const std::string& address, const std::string& error);
  // Counts `tokens` newly assigned to an address, until its next poll.
  void AddAssigned(const std::string& address, int64_t tokens);
  // Re-resolves and polls now, and waits for the result (tests and startup).
  void RefreshNow();

 private:
  explicit WorkerPool(Options options) : options_(std::move(options)) {}
  void Loop();
  std::vector<std::string> Resolve() const;
  void Refresh();

  const Options options_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::shared_ptr<WorkerHandle>> handles_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkerView> views_ ABSL_GUARDED_BY(mu_);
  absl::Time next_resolve_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::mutex refresh_mu_;  // one refresh at a time
  std::thread thread_;
};

// Splits a comma list of targets.
std::vector<std::string> SplitTargets(const std::string& list);

}  // namespace ringserve::router
