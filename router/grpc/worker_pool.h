#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"
#include "router/core/timers.h"
#include "router/core/worker_directory.h"
#include "router/grpc/executors.h"

namespace ringserve::router {

// One worker address with its channel and stubs. Immutable after creation; thread-safe.
struct WorkerHandle {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<internal::v1::Prefill::Stub> prefill;
  std::unique_ptr<internal::v1::Decode::Stub> decode;
};

// The workers of one pool ("prefill" or "decode"): static "host:port" targets and
// "dns:///name:port" targets re-resolved every `resolve_interval` (a Kubernetes headless Service
// resolves to every pod), each address tracked separately. Every `poll_interval` it asks every
// worker for its status at once (asynchronous GetStatus calls, each with `rpc_timeout`), which
// gives health, epoch and load; a RefreshNow joins the poll in flight. DNS resolution runs on
// the blocking TaskRunner. Owns no thread. Thread-safe.
class WorkerPool : public core::WorkerDirectory {
 public:
  struct Options {
    std::string role;  // "prefill" or "decode"
    std::vector<std::string> targets;
    rpc::TlsFiles tls;
    absl::Duration resolve_interval = absl::Seconds(5);
    absl::Duration poll_interval = absl::Milliseconds(500);
    absl::Duration rpc_timeout = absl::Seconds(2);
  };
  // `timers` and `blocking` must outlive the pool.
  static absl::StatusOr<std::unique_ptr<WorkerPool>> Create(const Options& options,
                                                            core::Timers* timers,
                                                            TaskRunner* blocking);
  // Stops polling and waits for the poll in flight (bounded by rpc_timeout).
  ~WorkerPool() override;

  // Polls now and then every poll_interval; `on_poll` runs after each poll.
  void Start(std::function<void()> on_poll);
  // Polls now and waits for the answers (startup).
  void RefreshAndWait();

  const std::string& role() const override { return options_.role; }
  std::vector<core::WorkerView> Snapshot() const override;
  void ReportFailure(const std::string& address, const std::string& error) override;
  void AddAssigned(const std::string& address, int64_t tokens) override;
  void RefreshNow(std::function<void()> done) override;
  std::shared_ptr<WorkerHandle> Handle(const std::string& address) const;

 private:
  WorkerPool(Options options, core::Timers* timers, TaskRunner* blocking)
      : options_(std::move(options)), timers_(timers), blocking_(blocking) {}
  std::vector<std::string> Resolve() const;
  void UpdateHandles(const std::vector<std::string>& addresses);
  void PollAll();
  void OnStatus(const std::string& address, const grpc::Status& s,
                const internal::v1::WorkerStatus& status);
  void EndPoll();

  const Options options_;
  core::Timers* const timers_;
  TaskRunner* const blocking_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<std::string, std::shared_ptr<WorkerHandle>> handles_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, core::WorkerView> views_ ABSL_GUARDED_BY(mu_);
  absl::Time next_resolve_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool polling_ ABSL_GUARDED_BY(mu_) = false;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;  // status calls of the poll in flight
  std::vector<std::function<void()>> waiters_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_poll_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;       // polls every poll_interval
  core::Timers::Id tick_ ABSL_GUARDED_BY(mu_) = 0;  // the next periodic poll, 0: none pending
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

// Splits a comma list of targets.
std::vector<std::string> SplitTargets(const std::string& list);

}  // namespace ringserve::router
