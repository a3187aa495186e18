#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "router/core/worker_client.h"
#include "router/grpc/worker_pool.h"

namespace ringserve::router {

// Counts calls in flight so their owner can wait for the last completion. Thread-safe.
class CallTracker {
 public:
  void Begin();
  void End();
  // Waits until no call is in flight.
  void WaitIdle();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// core::WorkerClient on the gRPC callback API: unary calls with a completion callback, streams
// as client read reactors that read only when asked (one outstanding read). No thread of its
// own; completions run on gRPC's threads. Stubs come from the pools. Thread-safe; the
// destructor waits for every call in flight (each carries a deadline).
class GrpcWorkerClient : public core::WorkerClient {
 public:
  GrpcWorkerClient(const WorkerPool* prefill, const WorkerPool* decode)
      : prefill_(prefill), decode_(decode) {}
  ~GrpcWorkerClient() override;

  void Reserve(const std::string& address, internal::v1::ReserveRequest request,
               absl::Time deadline,
               std::function<void(absl::StatusOr<internal::v1::ReserveResponse>)> done) override;
  void Release(const std::string& address, internal::v1::ReleaseRequest request,
               std::function<void()> done) override;
  std::shared_ptr<core::WorkerStream> OpenDecode(
      const std::string& address, internal::v1::DecodeRequest request, absl::Time deadline,
      core::StreamCallbacks<internal::v1::DecodeEvent> callbacks) override;
  std::shared_ptr<core::WorkerStream> StartPrefill(
      const std::string& address, internal::v1::PrefillRequest request, absl::Time deadline,
      core::StreamCallbacks<internal::v1::PrefillEvent> callbacks) override;

  void set_release_timeout(absl::Duration d) { release_timeout_ = d; }

 private:
  const WorkerPool* const prefill_;
  const WorkerPool* const decode_;
  absl::Duration release_timeout_ = absl::Seconds(5);
  CallTracker calls_;
};

}  // namespace ringserve::router
