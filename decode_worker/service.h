#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "common/rpc/server_stream.h"
#include "common/state/grpc_stream.h"
#include "common/state/reservations.h"
#include "decode_worker/scheduler.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"

namespace ringserve::decode {

// The Decode gRPC service: reservations (leases in the ReservationTable), the state stream
// (from DecodeStateService), and the token stream of each request, which starts when its
// verified state is ready and the router has opened the stream. Handlers never block: Reserve
// charges the table and posts the state's allocation to the scheduler, which answers between
// steps; the scheduler's events for a sequence are turned into its stream's messages here, on a
// stream whose queue is bounded (the scheduler pauses a sequence whose client stops reading).
// Thread-safe.
class DecodeService final : public state::DecodeStateService {
 public:
  struct Options {
    size_t stream_queue_messages = 64;  // token messages a stream queues before its sequence pauses
  };
  // `links` (the NCCL transport's receiving side) may be null.
  DecodeService(state::ReservationTable* table, state::LinkReceiver* links, Scheduler* scheduler,
                Options options);

  // The table's listener: a reservation's state is ready (OK) or its reservation ended.
  void OnStateEvent(const std::string& request_id, const absl::Status& status);
  void set_ready(bool ready) { ready_ = ready; }
  // Renews the leases of reservations whose token stream the router holds open (a router that
  // goes away cancels the stream, which releases the reservation), so a prefill may take longer
  // than one lease. Called periodically.
  void RenewAttachedLeases();

  grpc::ServerUnaryReactor* Reserve(grpc::CallbackServerContext* ctx,
                                    const internal::v1::ReserveRequest* request,
                                    internal::v1::ReserveResponse* response) override;
  grpc::ServerWriteReactor<internal::v1::DecodeEvent>* Generate(
      grpc::CallbackServerContext* ctx, const internal::v1::DecodeRequest* request) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx,
                                    const internal::v1::ReleaseRequest* request,
                                    internal::v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* ctx,
                                      const internal::v1::StatusRequest* request,
                                      internal::v1::WorkerStatus* response) override;

 private:
  struct Request {
    std::string ticket;
    absl::Duration lease;
    internal::v1::Stopping stopping;
    std::shared_ptr<rpc::StreamSink<internal::v1::DecodeEvent>> stream;  // once Generate came
    bool started = false;
  };
  // Joins the request to the batch when both its state and its stream are there.
  void MaybeStart(const std::string& request_id);
  void Forget(const std::string& request_id);

  // Runs on the scheduler thread: allocates the state of an admitted reservation and answers
  // the Reserve call.
  void Allocate(const internal::v1::ReserveRequest* request, absl::Duration lease,
                internal::v1::ReserveResponse* response, grpc::ServerUnaryReactor* reactor);

  state::ReservationTable* const table_;
  Scheduler* const scheduler_;
  const Options options_;
  std::atomic<bool> ready_{false};
  std::mutex mu_;
  std::map<std::string, Request> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ringserve::decode
