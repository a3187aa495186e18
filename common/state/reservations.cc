#include "common/state/reservations.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"

namespace ringserve::state {
namespace {

bool SameTicket(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReservationTable>> ReservationTable::Create(Options options) {
  if (options.limits.max_slots < 1 || options.limits.max_kv_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reservation limits need at least one slot and one KV token; got ",
        options.limits.max_slots, " slots and ", options.limits.max_kv_tokens, " tokens"));
  }
  if (!options.factory) return absl::InvalidArgumentError("the reservation table needs a factory");
  if (options.clock == nullptr)
    return absl::InvalidArgumentError("the reservation table needs a clock");
  return std::unique_ptr<ReservationTable>(new ReservationTable(std::move(options)));
}

const char* ReservationTable::PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kAllocating:
      return "allocating";
    case Phase::kReserved:
      return "reserved";
    case Phase::kReceiving:
      return "receiving";
    case Phase::kReady:
      return "ready";
    case Phase::kRunning:
      return "running";
  }
  return "unknown";
}

void ReservationTable::Run(Aftermath after) {
  after.garbage.clear();
  if (!options_.listener) return;
  for (const auto& [request_id, status] : after.events) options_.listener(request_id, status);
}

void ReservationTable::EraseLocked(std::map<std::string, Entry>::iterator it,
                                   const absl::Status& status, Aftermath* after) {
  Entry& e = it->second;
  --slots_used_;
  kv_tokens_used_ -= e.prompt_tokens + e.max_tokens;
  if (e.state) after->garbage.push_back(std::move(e.state));
  if (e.phase != Phase::kRunning) after->events.emplace_back(it->first, status);
  entries_.erase(it);
}

absl::StatusOr<std::map<std::string, ReservationTable::Entry>::iterator>
ReservationTable::FindLocked(const std::string& request_id, const std::string& ticket) {
  auto it = entries_.find(request_id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("no reservation for request '", request_id, "'"));
  }
  if (!SameTicket(it->second.ticket, ticket)) {
    return absl::PermissionDeniedError(
        absl::StrCat("the ticket does not match the reservation of request '", request_id, "'"));
  }
  return it;
}

absl::StatusOr<Reservation> ReservationTable::Reserve(const std::string& request_id,
                                                      int64_t prompt_tokens, int64_t max_tokens,
                                                      absl::Duration lease) {
  RETURN_IF_ERROR(Admit(request_id, prompt_tokens, max_tokens, lease));
  return Allocate(request_id);
}

absl::Status ReservationTable::Admit(const std::string& request_id, int64_t prompt_tokens,
                                     int64_t max_tokens, absl::Duration lease) {
  if (request_id.empty()) return absl::InvalidArgumentError("request_id is empty");
  if (prompt_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_tokens ", prompt_tokens, " must be at least 1"));
  }
  if (max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", max_tokens, " is negative"));
  }
  const int64_t capacity = prompt_tokens + max_tokens;
  if (capacity > options_.layout.max_positions) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompt_tokens ", prompt_tokens, " + max_tokens ", max_tokens, " = ", capacity,
                     " exceeds the model's ", options_.layout.max_positions, " positions"));
  }
  if (lease <= absl::ZeroDuration() || lease > options_.limits.max_lease) {
    return absl::InvalidArgumentError(
        absl::StrCat("lease ", absl::FormatDuration(lease), " is outside (0, ",
                     absl::FormatDuration(options_.limits.max_lease), "]"));
  }
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(request_id);
  if (it != entries_.end()) {
    return absl::AlreadyExistsError(absl::StrCat("request '", request_id,
                                                 "' already holds a reservation (",
                                                 PhaseName(it->second.phase), ")"));
  }
  if (slots_used_ >= options_.limits.max_slots) {
    return absl::ResourceExhaustedError(
        absl::StrCat("all ", options_.limits.max_slots, " state slots are in use"));
  }
  if (kv_tokens_used_ + capacity > options_.limits.max_kv_tokens) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV for ", capacity, " tokens does not fit: ", kv_tokens_used_, " of ",
                     options_.limits.max_kv_tokens, " KV tokens are reserved"));
  }
  Entry& e = entries_[request_id];
  e.prompt_tokens = prompt_tokens;
  e.max_tokens = max_tokens;
  e.lease = lease;
  e.ticket = absl::StrFormat("%08x%08x%08x%08x", random_(), random_(), random_(), random_());
  ++slots_used_;
  kv_tokens_used_ += capacity;
  return absl::OkStatus();
}

absl::StatusOr<Reservation> ReservationTable::Allocate(const std::string& request_id) {
  int64_t capacity = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(request_id);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("no reservation for request '", request_id, "'"));
    }
    if (it->second.phase != Phase::kAllocating || it->second.state != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "request '", request_id, "' is ", PhaseName(it->second.phase), ", not admitted"));
    }
    capacity = it->second.prompt_tokens + it->second.max_tokens;
  }
  // Allocation runs outside the lock; the entry is charged already and nobody else can reach it
  // without its ticket (and nobody can release it while it is allocating).
  absl::StatusOr<std::unique_ptr<StateBuffer>> state = options_.factory(capacity);
  if (state.ok() && (*state)->capacity() != capacity) {
    state = absl::InternalError(absl::StrCat("the state factory returned a capacity of ",
                                             (*state)->capacity(), " tokens, not ", capacity));
  }
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(request_id);
  if (!state.ok()) {
    --slots_used_;
    kv_tokens_used_ -= capacity;
    entries_.erase(it);
    return state.status();
  }
  Entry& e = it->second;
  e.state = std::move(*state);
  e.state_bytes = e.state->linear_bytes_total() +
                  static_cast<uint64_t>(capacity) * e.state->kv_bytes_per_token();
  e.phase = Phase::kReserved;
  e.deadline = options_.clock->Now() + e.lease;
  Reservation reservation;
  reservation.epoch = options_.epoch;
  reservation.ticket = e.ticket;
  reservation.lease_deadline = e.deadline;
  return reservation;
}

void ReservationTable::Abandon(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(request_id);
  if (it == entries_.end() || it->second.phase != Phase::kAllocating) return;
  --slots_used_;
  kv_tokens_used_ -= it->second.prompt_tokens + it->second.max_tokens;
  entries_.erase(it);
}

absl::StatusOr<std::unique_ptr<InboundTransfer>> ReservationTable::BeginTransfer(
    const internal::v1::StateManifest& manifest) {
  Aftermath after;
  absl::StatusOr<std::unique_ptr<InboundTransfer>> result;
  {
    absl::MutexLock lock(&mu_);
    result = [&]() -> absl::StatusOr<std::unique_ptr<InboundTransfer>> {
      ASSIGN_OR_RETURN(auto it, FindLocked(manifest.request_id(), manifest.ticket()));
      Entry& e = it->second;
      if (e.phase != Phase::kReserved) {
        return absl::FailedPreconditionError(absl::StrCat("request '", manifest.request_id(),
                                                          "' is ", PhaseName(e.phase),
                                                          "; its state cannot arrive again"));
      }
      const absl::Time now = options_.clock->Now();
      if (now > e.deadline) {
        const absl::Status expired = absl::DeadlineExceededError(
            absl::StrCat("the lease of request '", manifest.request_id(), "' ended at ",
                         absl::FormatTime(e.deadline), " before its state arrived"));
        EraseLocked(it, expired, &after);
        return expired;
      }
      if (manifest.token_count() != e.prompt_tokens) {
        const absl::Status mismatch = absl::InvalidArgumentError(absl::StrCat(
            "the state of request '", manifest.request_id(), "' holds ", manifest.token_count(),
            " tokens; the reservation is for ", e.prompt_tokens, " prompt tokens"));
        EraseLocked(it, mismatch, &after);
        return mismatch;
      }
      absl::StatusOr<std::unique_ptr<StateAssembler>> assembler = StateAssembler::Create(
          options_.layout, options_.model_fingerprint, manifest, e.state.get(), options_.memory);
      if (!assembler.ok()) {
        EraseLocked(it, assembler.status(), &after);
        return assembler.status();
      }
      e.phase = Phase::kReceiving;
      e.cancel = std::make_shared<Cancel>();
      e.transfer_start = now;
      return std::unique_ptr<InboundTransfer>(new InboundTransfer(
          this, manifest.request_id(), std::move(e.state), std::move(*assembler), e.cancel));
    }();
  }
  Run(std::move(after));
  return result;
}

absl::Status ReservationTable::CompleteTransfer(const std::string& request_id,
                                                std::unique_ptr<StateBuffer> state,
                                                const internal::v1::StateManifest& manifest,
                                                uint64_t bytes) {
  Aftermath after;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(request_id);
    Entry& e = it->second;
    const absl::Time now = options_.clock->Now();
    if (e.cancel->cancelled.load()) {
      absl::MutexLock cancel_lock(&e.cancel->mu);
      status = e.cancel->status;
    } else if (now > e.deadline) {
      status = absl::DeadlineExceededError(absl::StrCat("the state of request '", request_id,
                                                        "' completed after its lease ended at ",
                                                        absl::FormatTime(e.deadline)));
    }
    if (!status.ok()) {
      after.garbage.push_back(std::move(state));
      EraseLocked(it, status, &after);
    } else {
      e.phase = Phase::kReady;
      e.state = std::move(state);
      e.cancel.reset();
      e.ready.tokens = manifest.token_count();
      e.ready.max_tokens = e.max_tokens;
      e.ready.first_token = manifest.first_token();
      e.ready.sampling = manifest.sampling();
      e.ready.sender_epoch = manifest.sender_epoch();
      e.ready.bytes = bytes;
      e.ready.transfer_time = now - e.transfer_start;
      after.events.emplace_back(request_id, absl::OkStatus());
    }
  }
  Run(std::move(after));
  return status;
}

void ReservationTable::FailTransfer(const std::string& request_id, const absl::Status& status) {
  Aftermath after;
  {
    absl::MutexLock lock(&mu_);
    EraseLocked(entries_.find(request_id), status, &after);
  }
  Run(std::move(after));
}

absl::StatusOr<ReadyState> ReservationTable::TakeReady(const std::string& request_id,
                                                       const std::string& ticket) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(auto it, FindLocked(request_id, ticket));
  Entry& e = it->second;
  if (e.phase != Phase::kReady) {
    return absl::FailedPreconditionError(
        absl::StrCat("request '", request_id, "' is ", PhaseName(e.phase), ", not ready"));
  }
  ReadyState ready = std::move(e.ready);
  ready.state = std::move(e.state);
  e.phase = Phase::kRunning;
  e.state_bytes = 0;
  return ready;
}

absl::Status ReservationTable::Release(const std::string& request_id, const std::string& ticket) {
  Aftermath after;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(auto it, FindLocked(request_id, ticket));
      Entry& e = it->second;
      const absl::Status released = absl::CancelledError(
          absl::StrCat("request '", request_id, "' was released while ", PhaseName(e.phase)));
      if (e.phase == Phase::kAllocating) {
        return absl::FailedPreconditionError(
            absl::StrCat("request '", request_id, "' is still being allocated"));
      }
      if (e.phase == Phase::kReceiving) {
        absl::MutexLock cancel_lock(&e.cancel->mu);
        if (!e.cancel->cancelled.load()) e.cancel->status = released;
        e.cancel->cancelled.store(true);
        return absl::OkStatus();
      }
      EraseLocked(it, released, &after);
      return absl::OkStatus();
    }();
  }
  Run(std::move(after));
  return status;
}

absl::Status ReservationTable::Renew(const std::string& request_id, const std::string& ticket,
                                     absl::Duration lease) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(auto it, FindLocked(request_id, ticket));
  if (it->second.phase == Phase::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrCat("request '", request_id, "' is running; its lease is over"));
  }
  it->second.deadline = options_.clock->Now() + std::min(lease, options_.limits.max_lease);
  return absl::OkStatus();
}

int ReservationTable::ExpireLeases() {
  Aftermath after;
  int ended = 0;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = options_.clock->Now();
    for (auto it = entries_.begin(); it != entries_.end();) {
      auto current = it++;
      Entry& e = current->second;
      if (now <= e.deadline || e.phase == Phase::kAllocating || e.phase == Phase::kRunning) {
        continue;
      }
      const absl::Status expired = absl::DeadlineExceededError(
          absl::StrCat("the lease of request '", current->first, "' ended at ",
                       absl::FormatTime(e.deadline), " while ", PhaseName(e.phase)));
      if (e.phase == Phase::kReceiving) {
        absl::MutexLock cancel_lock(&e.cancel->mu);
        if (e.cancel->cancelled.load()) continue;
        e.cancel->status = expired;
        e.cancel->cancelled.store(true);
      } else {
        EraseLocked(current, expired, &after);
      }
      ++ended;
    }
  }
  Run(std::move(after));
  return ended;
}

ReservationStats ReservationTable::Stats() const {
  ReservationStats s;
  s.slots_total = options_.limits.max_slots;
  s.kv_tokens_total = options_.limits.max_kv_tokens;
  absl::MutexLock lock(&mu_);
  s.slots_used = slots_used_;
  s.kv_tokens_used = kv_tokens_used_;
  for (const auto& [id, e] : entries_) {
    if (e.phase == Phase::kRunning) {
      ++s.running;
    } else {
      ++s.reservations;
      s.state_bytes += e.state_bytes;
    }
    if (e.phase == Phase::kReceiving) ++s.transfers_in_flight;
  }
  return s;
}

InboundTransfer::InboundTransfer(ReservationTable* table, std::string request_id,
                                 std::unique_ptr<StateBuffer> state,
                                 std::unique_ptr<StateAssembler> assembler,
                                 std::shared_ptr<ReservationTable::Cancel> cancel)
    : table_(table),
      request_id_(std::move(request_id)),
      state_(std::move(state)),
      assembler_(std::move(assembler)),
      cancel_(std::move(cancel)) {}

InboundTransfer::~InboundTransfer() {
  Fail(absl::AbortedError(absl::StrCat("the transfer of request '", request_id_,
                                       "' was abandoned after ", bytes_received(), " of ",
                                       bytes_total(), " bytes")));
}

absl::Status InboundTransfer::Check(absl::Status status) {
  if (ended_) {
    return result_.ok() ? absl::FailedPreconditionError(absl::StrCat("the transfer of request '",
                                                                     request_id_, "' has finished"))
                        : result_;
  }
  if (cancel_->cancelled.load()) {
    absl::MutexLock lock(&cancel_->mu);
    status = cancel_->status;
  }
  if (!status.ok()) Fail(status);
  return status;
}

absl::Status InboundTransfer::Consume(uint32_t segment, uint64_t offset,
                                      std::span<const uint8_t> bytes,
                                      std::optional<uint64_t> checksum) {
  RETURN_IF_ERROR(Check(absl::OkStatus()));
  return Check(assembler_->Consume(segment, offset, bytes, checksum));
}

absl::Status InboundTransfer::ConsumeInPlace(
    uint32_t segment, const std::function<absl::Status(const std::vector<Span>&)>& fill) {
  RETURN_IF_ERROR(Check(absl::OkStatus()));
  return Check(assembler_->ConsumeInPlace(segment, fill));
}

absl::Status InboundTransfer::Finish() {
  RETURN_IF_ERROR(Check(absl::OkStatus()));
  RETURN_IF_ERROR(Check(assembler_->Finish()));
  ended_ = true;
  result_ = table_->CompleteTransfer(request_id_, std::move(state_), assembler_->manifest(),
                                     assembler_->bytes_received());
  return result_;
}

void InboundTransfer::Fail(const absl::Status& status) {
  if (ended_) return;
  ended_ = true;
  result_ = status;
  state_.reset();
  table_->FailTransfer(request_id_, status);
}

}  // namespace ringserve::state
