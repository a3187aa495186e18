#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/base/clock.h"
#include "common/state/format.h"
#include "common/state/layout.h"
#include "ringserve/internal/v1/worker.pb.h"

namespace ringserve::state {

struct ReservationLimits {
  int64_t max_slots = 0;      // sequences reserved, receiving, ready or running at once
  int64_t max_kv_tokens = 0;  // sum of the reserved capacities (prompt + max_tokens)
  absl::Duration max_lease = absl::Minutes(10);
};

// What Reserve hands back to the router.
struct Reservation {
  std::string ticket;  // 32 hex digits, 128 random bits
  absl::Time lease_deadline;
  uint64_t epoch = 0;  // the worker's start epoch
};

// A received state, handed to the decode scheduler by TakeReady.
struct ReadyState {
  std::unique_ptr<StateBuffer> state;  // position() == tokens
  int64_t tokens = 0;
  int64_t max_tokens = 0;
  uint32_t first_token = 0;
  internal::v1::Sampling sampling;
  uint64_t sender_epoch = 0;
  uint64_t bytes = 0;
  absl::Duration transfer_time;  // from BeginTransfer to completion, on the table's clock
};

struct ReservationStats {
  int64_t slots_used = 0;
  int64_t slots_total = 0;
  int64_t kv_tokens_used = 0;
  int64_t kv_tokens_total = 0;
  int64_t reservations = 0;  // not yet taken: reserved, receiving or ready
  int64_t running = 0;       // taken by TakeReady and not yet released
  int64_t transfers_in_flight = 0;
  uint64_t state_bytes = 0;  // state memory the table holds (reservations not yet taken)
};

class InboundTransfer;

// The decode worker's admission table: reserves a state slot and KV for prompt + max_tokens
// tokens under a lease, allocating the state memory up front, and tracks each reservation
// through Reserved -> Receiving -> Ready -> Running -> Released:
//   Reserve        -> Reserved (ticket and lease deadline returned)
//   BeginTransfer  -> Receiving (the manifest's ticket must match; the transfer owns the memory)
//   the transfer completes -> Ready (the listener hears OK); it fails -> freed
//   TakeReady      -> Running (the caller owns the state memory; the slot and KV stay counted)
//   Release        -> freed (cancels a transfer in flight, which then frees it)
// A transfer that fails after its ticket matched frees its reservation: the router reserves
// again. A forged ticket (PERMISSION_DENIED) or a second transfer for a receiving or ready
// request (FAILED_PRECONDITION) leaves the reservation alone. Leases run on the injected clock
// until TakeReady: ExpireLeases frees reserved and ready reservations past their deadline and
// cancels transfers still in flight. Owns the states it holds; must outlive its transfers.
// Thread-safe.
class ReservationTable {
 public:
  using StateFactory =
      std::function<absl::StatusOr<std::unique_ptr<StateBuffer>>(int64_t capacity)>;
  // Hears each reservation before it is taken: OK when its state is ready, else the error that
  // ended it (failed transfer, expired lease, release). Called once per outcome, outside the
  // table's lock, on the thread that caused it; it may call back into the table.
  using StateListener =
      std::function<void(const std::string& request_id, const absl::Status& status)>;

  struct Options {
    StateLayout layout;
    std::string model_fingerprint;
    ReservationLimits limits;
    // Allocates a state with room for `capacity` tokens, ready to be written by another thread
    // or stream when it returns (a CUDA backend's zeroing must have finished). Called from
    // Reserve's caller thread, so it must be thread-safe.
    StateFactory factory;
    base::Clock* clock = base::Clock::Real();
    uint64_t epoch = 0;
    StateListener listener;  // may be empty
    // Where the factory's states live (DeviceStateMemory for the CUDA backend's).
    const StateMemory* memory = StateMemory::Host();
  };

  static absl::StatusOr<std::unique_ptr<ReservationTable>> Create(Options options);
  ReservationTable(const ReservationTable&) = delete;
  ReservationTable& operator=(const ReservationTable&) = delete;

  // Reserves a slot and KV for prompt_tokens + max_tokens tokens and allocates its state: Admit
  // then Allocate on the caller's thread.
  absl::StatusOr<Reservation> Reserve(const std::string& request_id, int64_t prompt_tokens,
                                      int64_t max_tokens, absl::Duration lease);

  // The first half of Reserve, cheap and never blocking: checks the request and charges its
  // slot and KV. RESOURCE_EXHAUSTED when the slots or the KV tokens are used up, ALREADY_EXISTS
  // when the request already holds a reservation, INVALID_ARGUMENT for sizes or a lease out of
  // range. The reservation then waits for Allocate (or Abandon): no state can arrive, its lease
  // does not run and Release refuses it.
  absl::Status Admit(const std::string& request_id, int64_t prompt_tokens, int64_t max_tokens,
                     absl::Duration lease);
  // The second half: allocates the state of an admitted request with the factory, on the
  // caller's thread, and starts its lease. On failure the reservation is freed. NOT_FOUND when
  // the request is unknown, FAILED_PRECONDITION when it is not waiting for its allocation.
  absl::StatusOr<Reservation> Allocate(const std::string& request_id);
  // Frees an admitted reservation whose allocation will not run (the worker is stopping).
  void Abandon(const std::string& request_id);

  // Starts receiving the state described by `manifest` into its reservation: NOT_FOUND for an
  // unknown request, PERMISSION_DENIED for a wrong ticket, DEADLINE_EXCEEDED once the lease has
  // ended, FAILED_PRECONDITION when the request is already receiving or complete, and the
  // StateAssembler's errors for a manifest that does not fit the model or the reservation.
  absl::StatusOr<std::unique_ptr<InboundTransfer>> BeginTransfer(
      const internal::v1::StateManifest& manifest);

  // Hands a ready state to the decode scheduler (Ready -> Running).
  absl::StatusOr<ReadyState> TakeReady(const std::string& request_id, const std::string& ticket);

  // Frees the reservation of `request_id` in any phase (a receiving one as soon as its
  // transfer notices). NOT_FOUND when unknown, PERMISSION_DENIED for a wrong ticket.
  absl::Status Release(const std::string& request_id, const std::string& ticket);

  // Extends the lease of a request not yet taken to now + `lease` (capped by the limits'
  // max_lease): the decode worker renews the leases of requests whose router holds their token
  // stream open, so a long prefill does not outlive its lease. NOT_FOUND, PERMISSION_DENIED as
  // Release; FAILED_PRECONDITION once the state was taken.
  absl::Status Renew(const std::string& request_id, const std::string& ticket,
                     absl::Duration lease);
  // Ends the leases that passed; returns how many. Call periodically.
  int ExpireLeases();

  ReservationStats Stats() const;
  uint64_t epoch() const { return options_.epoch; }
  const StateLayout& layout() const { return options_.layout; }
  const std::string& model_fingerprint() const { return options_.model_fingerprint; }

 private:
  friend class InboundTransfer;

  enum class Phase { kAllocating, kReserved, kReceiving, kReady, kRunning };
  static const char* PhaseName(Phase phase);

  // Set by Release or ExpireLeases while a transfer runs; the transfer fails with `status` at
  // its next step.
  struct Cancel {
    std::atomic<bool> cancelled{false};
    absl::Mutex mu;
    absl::Status status ABSL_GUARDED_BY(mu);
  };

  struct Entry {
    Phase phase = Phase::kAllocating;
    std::string ticket;
    int64_t prompt_tokens = 0;
    int64_t max_tokens = 0;
    absl::Duration lease;  // asked for; the deadline is set when the state is allocated
    absl::Time deadline;
    uint64_t state_bytes = 0;
    std::unique_ptr<StateBuffer> state;  // held while kReserved and kReady
    std::shared_ptr<Cancel> cancel;      // kReceiving
    absl::Time transfer_start;           // kReceiving
    ReadyState ready;                    // kReady: everything but the state
  };

  // Listener calls and states to free, gathered under the lock and run after it.
  struct Aftermath {
    std::vector<std::pair<std::string, absl::Status>> events;
    std::vector<std::unique_ptr<StateBuffer>> garbage;
  };

  explicit ReservationTable(Options options) : options_(std::move(options)) {}

  // Removes the entry of `request_id`, returning its charges; reports `status` to the listener
  // unless the entry was running.
  void EraseLocked(std::map<std::string, Entry>::iterator it, const absl::Status& status,
                   Aftermath* after) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(Aftermath after);
  absl::StatusOr<std::map<std::string, Entry>::iterator> FindLocked(const std::string& request_id,
                                                                    const std::string& ticket)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The end of a transfer, from InboundTransfer.
  absl::Status CompleteTransfer(const std::string& request_id, std::unique_ptr<StateBuffer> state,
                                const internal::v1::StateManifest& manifest, uint64_t bytes);
  void FailTransfer(const std::string& request_id, const absl::Status& status);

  const Options options_;
  mutable absl::Mutex mu_;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  int64_t slots_used_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t kv_tokens_used_ ABSL_GUARDED_BY(mu_) = 0;
  std::random_device random_ ABSL_GUARDED_BY(mu_);
};

// One state being received into its reservation: the receiving side of every transport. Made
// by ReservationTable::BeginTransfer; owns the reservation's state memory while it runs and
// writes into it through a StateAssembler. Its first error fails it, which frees the
// reservation; so does destroying it before Finish. Finish hands the verified state back to the
// table (Ready). Not thread-safe: one transport thread drives it (the table may cancel it
// concurrently).
class InboundTransfer {
 public:
  ~InboundTransfer();
  InboundTransfer(const InboundTransfer&) = delete;
  InboundTransfer& operator=(const InboundTransfer&) = delete;

  // StateAssembler::Consume, after checking for a cancellation.
  absl::Status Consume(uint32_t segment, uint64_t offset, std::span<const uint8_t> bytes,
                       std::optional<uint64_t> checksum = std::nullopt);
  // StateAssembler::ConsumeInPlace, after checking for a cancellation.
  absl::Status ConsumeInPlace(uint32_t segment,
                              const std::function<absl::Status(const std::vector<Span>&)>& fill);
  // Verifies that the whole state arrived and makes it ready; the error otherwise (the
  // reservation is then freed). Also fails when the lease ended meanwhile.
  absl::Status Finish();
  // Ends the transfer with `status` (not OK); the reservation is freed. No-op once ended.
  void Fail(const absl::Status& status);

  const internal::v1::StateManifest& manifest() const { return assembler_->manifest(); }
  uint64_t bytes_received() const { return assembler_->bytes_received(); }
  uint64_t bytes_total() const { return assembler_->bytes_total(); }

 private:
  friend class ReservationTable;
  InboundTransfer(ReservationTable* table, std::string request_id,
                  std::unique_ptr<StateBuffer> state, std::unique_ptr<StateAssembler> assembler,
                  std::shared_ptr<ReservationTable::Cancel> cancel);

  // The cancellation status, or `status`; fails the transfer when either is an error.
  absl::Status Check(absl::Status status);

  ReservationTable* const table_;
  const std::string request_id_;
  std::unique_ptr<StateBuffer> state_;
  std::unique_ptr<StateAssembler> assembler_;
  std::shared_ptr<ReservationTable::Cancel> cancel_;
  bool ended_ = false;
  absl::Status result_;
};

}  // namespace ringserve::state
