#pragma once

#include <cstdint>
#include <string>

#include "prefill_worker/scheduler.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"

namespace ringserve::prefill {

// The Prefill gRPC service: validates and enqueues jobs on the scheduler, streams their events.
// Handlers never block. Thread-safe. `prefix_cache` (may be null) outlives it; its summary goes
// into the status.
class PrefillService final : public internal::v1::Prefill::CallbackService {
 public:
  // The longest cache_salt a request may carry.
  static constexpr size_t kMaxCacheSaltBytes = 1024;

  PrefillService(PrefillScheduler* scheduler, const model::ModelConfig* config, uint64_t epoch,
                 std::string fingerprint, uint64_t max_queued_tokens,
                 const PrefixCache* prefix_cache = nullptr);

  grpc::ServerWriteReactor<internal::v1::PrefillEvent>* Run(
      grpc::CallbackServerContext* ctx, const internal::v1::PrefillRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* ctx,
                                   const internal::v1::CancelRequest* request,
                                   internal::v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const internal::v1::StatusRequest* request,
                                      internal::v1::WorkerStatus* response) override;

  void set_ready(bool ready) { ready_ = ready; }

 private:
  PrefillScheduler* const scheduler_;
  const model::ModelConfig* const config_;
  const uint64_t epoch_;
  const std::string fingerprint_;
  const uint64_t max_queued_tokens_;
  const PrefixCache* const prefix_cache_;
  std::atomic<bool> ready_{false};
};

}  // namespace ringserve::prefill
