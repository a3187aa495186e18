#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ringserve/internal/v1/worker.pb.h"
#include "ringserve/v1/generation.pb.h"
#include "router/core/admission.h"
#include "router/core/policy.h"
#include "router/core/serializer.h"
#include "router/core/timers.h"
#include "router/core/worker_client.h"
#include "router/core/worker_directory.h"
#include "router/text_stream.h"
#include "router/validation.h"

namespace ringserve::router::core {

// The client's side of one Generate stream. Write and Finish never block; after each Write has
// been written the adapter reports it with RequestFlow::OnClientWriteDone. Thread-safe.
class ClientStream {
 public:
  virtual ~ClientStream() = default;
  virtual void Write(ringserve::v1::GenerateResponse message) = 0;
  // Ends the stream with `status` after the messages already written.
  virtual void Finish(const absl::Status& status) = 0;
  // Ends the stream at once, dropping unwritten messages (the client stopped reading).
  virtual void Abort(const absl::Status& status) = 0;
};

// Where the core reports what it measures. The default does nothing. Thread-safe.
class FlowObserver {
 public:
  virtual ~FlowObserver() = default;
  // `outcome`: a finish reason ("stop", "length") or a status code ("cancelled").
  virtual void Finished(const std::string& outcome, absl::Duration total, size_t prompt_tokens,
                        size_t completion_tokens) {}
  virtual void FirstToken(absl::Duration since_admission) {}
  virtual void InterToken(absl::Duration gap) {}
  virtual void QueueWait(absl::Duration wait) {}
  virtual void PrefillRetry() {}
  virtual void Migration() {}
  virtual void HungWorker(const std::string& role) {}
  // A prefill worker was chosen for a prompt.
  virtual void PrefillRouted(RouteReason reason) {}
};

struct FlowOptions {
  RouterLimits limits;
  absl::Duration lease = absl::Seconds(60);
  absl::Duration unary_timeout = absl::Seconds(5);  // Reserve and Release
  // A worker stream silent this long, while its worker also answered no status poll for this
  // long, is hung: treated like a dead worker.
  absl::Duration worker_timeout = absl::Seconds(10);
  // Longest wait in the admission queue (the request's deadline may end it sooner).
  absl::Duration queue_timeout = absl::Seconds(30);
  // A client that reads nothing this long while its output queue is full loses its request.
  absl::Duration client_timeout = absl::Seconds(30);
  // Messages written to the client and not yet sent before the flow stops reading its decode
  // stream.
  int client_queue = 16;
  int max_attempts = 4;  // attempts per request (prefill retries and decode migrations)
};

// Everything flows share; owned by the router process, outlives every flow.
struct FlowEnv {
  FlowOptions options;
  WorkerDirectory* prefill = nullptr;
  WorkerDirectory* decode = nullptr;
  Policy* policy = nullptr;
  WorkerClient* workers = nullptr;
  Timers* timers = nullptr;
  AdmissionQueue* queue = nullptr;
  const TextCodec* text = nullptr;   // null: text and chat prompts answer UNIMPLEMENTED
  FlowObserver* observer = nullptr;  // null: nothing is measured
  // Runs CPU work (tokenizing a text prompt) off the event path; null runs it inline.
  std::function<void(std::function<void()>)> offload;
};

// One Generate request as a state machine fed by events:
//   admitted -> [queued] -> reserving -> prefilling -> decoding -> finished
// with `migrating` (re-reserving after a decode worker was lost mid-stream) and a new attempt
// from `reserving` after a failed prefill. Every event is posted to the flow's Serializer, so
// transitions of one request never overlap and no lock is held across a call. Finish is
// idempotent; every exit releases the decode reservation it holds exactly once (a reservation
// the worker ended itself is not released again). Owns no thread and never blocks.
//
// Events from a stream or a timer of an earlier attempt are recognised by their attempt number
// and dropped. Shared by the client adapter, the worker calls and the timers that report to
// it. Thread-safe.
class RequestFlow : public std::enable_shared_from_this<RequestFlow> {
 public:
  enum class State {
    kAdmitted,
    kQueued,
    kReserving,
    kPrefilling,
    kDecoding,
    kMigrating,
    kFinished
  };

  static std::shared_ptr<RequestFlow> Create(const FlowEnv* env, std::string request_id,
                                             ringserve::v1::GenerateRequest request,
                                             std::shared_ptr<ClientStream> client,
                                             absl::Time deadline);

  // Admits the request: tokenizes, then places it.
  void Start();
  // One message given to Write has been sent to the client.
  void OnClientWriteDone();
  // The client cancelled or went away.
  void OnClientCancelled();

  State state() const { return state_.load(); }
  const std::string& request_id() const { return request_id_; }

 private:
  struct Reservation {
    std::string address;
    std::string ticket;
    uint64_t epoch = 0;
  };

  RequestFlow(const FlowEnv* env, std::string request_id, ringserve::v1::GenerateRequest request,
              std::shared_ptr<ClientStream> client, absl::Time deadline);

  // Runs `fn` on this flow's serializer, unless the flow has finished.
  void Post(std::function<void(RequestFlow*)> fn);
  // Like Post, also dropped when attempt `attempt` is over.
  void PostForAttempt(uint64_t attempt, std::function<void(RequestFlow*)> fn);
  // Stream callbacks that post to the handlers for the current attempt.
  template <typename Event>
  StreamCallbacks<Event> CallbacksFor(void (RequestFlow::*on_message)(Event),
                                      void (RequestFlow::*on_end)(const absl::Status&)) {
    StreamCallbacks<Event> callbacks;
    auto self = shared_from_this();
    const uint64_t a = attempt_;
    callbacks.on_message = [self, a, on_message](Event e) {
      self->PostForAttempt(a, [e = std::move(e), on_message](RequestFlow* f) mutable {
        (f->*on_message)(std::move(e));
      });
    };
    callbacks.on_end = [self, a, on_end](absl::Status s) {
      self->PostForAttempt(a, [s = std::move(s), on_end](RequestFlow* f) { (f->*on_end)(s); });
    };
    return callbacks;
  }
  void SetState(State s);
  absl::Time Now() const;

  void OnTokenized(absl::StatusOr<std::vector<uint32_t>> prompt);
  void BeginAttempt();
  void RankDecode(bool refreshed);
  void TryNextDecode();
  void OnReserved(const std::string& address, absl::StatusOr<internal::v1::ReserveResponse> answer);
  void StartPrefill(bool refreshed);
  void OnPrefillEvent(internal::v1::PrefillEvent event);
  void OnPrefillEnd(const absl::Status& status);
  void OnDecodeEvent(internal::v1::DecodeEvent event);
  void OnDecodeEnd(const absl::Status& status);
  void OnSilence();
  void OnClientStalled();
  void EnterQueue(bool front);
  void OnQueueTurn();

  // Ends the current attempt (streams cancelled, reservation released) and starts the next,
  // or gives up after max_attempts.
  void Retry(const absl::Status& why);
  void EndAttempt();
  void ReleaseReservation();
  // Streams generated tokens to the client; true when a stop string ended generation.
  bool Emit(const std::vector<uint32_t>& tokens);
  void Write(ringserve::v1::GenerateResponse message);
  // Reads the decode stream's next message when the client's queue has room.
  void ReadDecode();
  void ArmSilenceTimer();
  void Finish(ringserve::v1::FinishReason reason, const absl::Status& status,
              bool abort_client = false);
  std::string StateName() const;

  const FlowEnv* const env_;
  const FlowOptions& options_;
  const std::string request_id_;
  const ringserve::v1::GenerateRequest request_;
  const std::shared_ptr<ClientStream> client_;
  const absl::Time deadline_;
  Serializer serializer_;
  std::atomic<State> state_{State::kAdmitted};
  std::atomic<bool> finished_{false};
  std::atomic<uint64_t> attempt_{0};

  // Everything below is touched only on the serializer.
  absl::Time start_;
  std::vector<uint32_t> prompt_;
  std::vector<uint32_t> generated_;
  std::unique_ptr<TextStream> text_;
  internal::v1::Sampling sampling_;  // resolved, with the seed minted when absent
  ringserve::v1::Timings timings_;
  // Prompt tokens the prefill that produced the stream's state restored from its prefix cache
  // (a migration's prefill counts: its state is the one decoded from).
  uint32_t cached_tokens_ = 0;
  absl::Time first_token_time_ = absl::InfinitePast();
  absl::Time last_token_time_ = absl::InfinitePast();
  int attempts_ = 0;
  absl::Status last_error_;

  std::vector<std::string> decode_candidates_;
  size_t next_candidate_ = 0;
  bool saw_full_ = false;
  std::optional<Reservation> reservation_;
  std::string prefill_address_;
  std::shared_ptr<WorkerStream> prefill_stream_;
  std::shared_ptr<WorkerStream> decode_stream_;
  bool prefill_done_ = false;
  bool decode_read_pending_ = false;
  bool paused_ = false;
  int outstanding_ = 0;  // messages written to the client and not yet sent

  AdmissionQueue::Id queue_id_ = 0;
  absl::Time queued_at_ = absl::InfinitePast();

  Timers::Id deadline_timer_ = 0;
  Timers::Id queue_timer_ = 0;
  Timers::Id silence_timer_ = 0;
  Timers::Id stall_timer_ = 0;
  absl::Time paused_since_ = absl::InfinitePast();  // when the decode reads last paused
  absl::Time last_life_ = absl::InfinitePast();     // last message of the watched stream
};

}  // namespace ringserve::router::core
