#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ringserve/internal/v1/worker.pb.h"

namespace ringserve::router::core {

// One server-streaming call to a worker, read one message at a time: the core asks for each
// message with Read(), so a stream it does not read is not drained (the worker then feels the
// back-pressure). Implementations are thread-safe; calls after the end are no-ops.
class WorkerStream {
 public:
  virtual ~WorkerStream() = default;
  // Asks for the next message; at most one read is outstanding.
  virtual void Read() = 0;
  // Ends the call; its on_end follows (with CANCELLED unless it had already ended).
  virtual void Cancel() = 0;
};

// What a stream reports. on_message runs once per Read that found a message; on_end runs
// exactly once, last, with the call's final status. Either may run on any thread.
template <typename Event>
struct StreamCallbacks {
  std::function<void(Event)> on_message;
  std::function<void(absl::Status)> on_end;
};

// The router's calls to its workers, by address. Every call carries `deadline`; completions run
// on any thread, possibly before the method returns. Implementations are thread-safe and never
// block.
class WorkerClient {
 public:
  virtual ~WorkerClient() = default;
  // Decode.Reserve; `done` runs exactly once.
  virtual void Reserve(const std::string& address, internal::v1::ReserveRequest request,
                       absl::Time deadline,
                       std::function<void(absl::StatusOr<internal::v1::ReserveResponse>)> done) = 0;
  // Decode.Release; `done` runs exactly once, whatever the answer.
  virtual void Release(const std::string& address, internal::v1::ReleaseRequest request,
                       std::function<void()> done) = 0;
  // Decode.Generate (the token stream of a reservation).
  virtual std::shared_ptr<WorkerStream> OpenDecode(
      const std::string& address, internal::v1::DecodeRequest request, absl::Time deadline,
      StreamCallbacks<internal::v1::DecodeEvent> callbacks) = 0;
  // Prefill.Run (progress events, then the first token).
  virtual std::shared_ptr<WorkerStream> StartPrefill(
      const std::string& address, internal::v1::PrefillRequest request, absl::Time deadline,
      StreamCallbacks<internal::v1::PrefillEvent> callbacks) = 0;
};

}  // namespace ringserve::router::core
