#include "router/core/request_flow.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/base/logging.h"
#include "common/base/random.h"

namespace ringserve::router::core {

using ringserve::v1::FinishReason;
using ringserve::v1::GenerateRequest;
using ringserve::v1::GenerateResponse;

namespace {

// Failures after which another worker may succeed.
bool IsRetryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsAborted(s) || absl::IsInternal(s) || absl::IsUnknown(s);
}

std::string Outcome(FinishReason reason, const absl::Status& status) {
  std::string outcome = status.ok() ? std::string(ringserve::v1::FinishReason_Name(reason))
                                    : absl::StatusCodeToString(status.code());
  outcome = absl::AsciiStrToLower(outcome);
  absl::StrReplaceAll({{"finish_reason_", ""}}, &outcome);
  return outcome;
}

}  // namespace

std::shared_ptr<RequestFlow> RequestFlow::Create(const FlowEnv* env, std::string request_id,
                                                 GenerateRequest request,
                                                 std::shared_ptr<ClientStream> client,
                                                 absl::Time deadline) {
  return std::shared_ptr<RequestFlow>(
      new RequestFlow(env, std::move(request_id), std::move(request), std::move(client), deadline));
}

RequestFlow::RequestFlow(const FlowEnv* env, std::string request_id, GenerateRequest request,
                         std::shared_ptr<ClientStream> client, absl::Time deadline)
    : env_(env),
      options_(env->options),
      request_id_(std::move(request_id)),
      request_(std::move(request)),
      client_(std::move(client)),
      deadline_(deadline) {}

void RequestFlow::Post(std::function<void(RequestFlow*)> fn) {
  serializer_.Post([self = shared_from_this(), fn = std::move(fn)] { fn(self.get()); });
}

void RequestFlow::PostForAttempt(uint64_t attempt, std::function<void(RequestFlow*)> fn) {
  Post([attempt, fn = std::move(fn)](RequestFlow* f) {
    if (!f->finished_ && f->attempt_ == attempt) fn(f);
  });
}

absl::Time RequestFlow::Now() const { return env_->timers->Now(); }

void RequestFlow::SetState(State s) { state_ = s; }

std::string RequestFlow::StateName() const {
  switch (state_.load()) {
    case State::kAdmitted:
      return "admitted";
    case State::kQueued:
      return "queued";
    case State::kReserving:
      return "reserving";
    case State::kPrefilling:
      return "prefilling";
    case State::kDecoding:
      return "decoding";
    case State::kMigrating:
      return "migrating";
    case State::kFinished:
      return "finished";
  }
  return "unknown";
}

void RequestFlow::Start() {
  Post([](RequestFlow* f) {
    f->start_ = f->Now();
    RS_LOG(kInfo) << "event=admitted request_id=" << base::Quote(f->request_id_);
    if (f->deadline_ != absl::InfiniteFuture()) {
      f->deadline_timer_ = f->env_->timers->At(f->deadline_, [self = f->shared_from_this()] {
        self->Post([](RequestFlow* f) {
          if (f->finished_) return;
          f->Finish(ringserve::v1::FINISH_REASON_ERROR,
                    absl::DeadlineExceededError(
                        absl::StrCat("request deadline exceeded while ", f->StateName())));
        });
      });
    }
    if (f->request_.has_token_ids() || !f->env_->offload) {
      f->OnTokenized(PromptTokens(f->request_, f->options_.limits, f->env_->text));
      return;
    }
    f->env_->offload([self = f->shared_from_this()] {
      auto prompt = PromptTokens(self->request_, self->options_.limits, self->env_->text);
      self->Post([prompt = std::move(prompt)](RequestFlow* f) mutable {
        if (!f->finished_) f->OnTokenized(std::move(prompt));
      });
    });
  });
}

void RequestFlow::OnClientWriteDone() {
  Post([](RequestFlow* f) {
    --f->outstanding_;
    if (f->finished_ || !f->paused_ || f->outstanding_ >= f->options_.client_queue) return;
    f->paused_ = false;
    f->env_->timers->Cancel(f->stall_timer_);
    f->stall_timer_ = 0;
    f->ReadDecode();
  });
}

void RequestFlow::OnClientCancelled() {
  Post([](RequestFlow* f) {
    if (f->finished_) return;
    f->Finish(ringserve::v1::FINISH_REASON_ERROR, absl::CancelledError("cancelled by the client"));
  });
}

void RequestFlow::OnTokenized(absl::StatusOr<std::vector<uint32_t>> prompt) {
  if (!prompt.ok()) {
    Finish(ringserve::v1::FINISH_REASON_ERROR, prompt.status());
    return;
  }
  prompt_ = std::move(*prompt);
  const auto& s = request_.sampling();
  sampling_.set_temperature(s.has_temperature() ? s.temperature() : 1.0f);
  sampling_.set_top_k(s.top_k());
  sampling_.set_top_p(s.has_top_p() ? s.top_p() : 1.0f);
  sampling_.set_min_p(s.min_p());
  sampling_.set_seed(s.has_seed() ? s.seed() : base::RandomU64());
  if (env_->text != nullptr) {
    text_ = env_->text->NewStream(std::vector<std::string>(request_.stopping().stop().begin(),
                                                           request_.stopping().stop().end()));
  }
  // First come, first served: a request never overtakes one already waiting for room.
  if (env_->queue->size() > 0) {
    EnterQueue(/*front=*/false);
    return;
  }
  BeginAttempt();
}

void RequestFlow::BeginAttempt() {
  if (generated_.size() >= request_.stopping().max_tokens()) {
    Finish(ringserve::v1::FINISH_REASON_LENGTH, absl::OkStatus());
    return;
  }
  ++attempt_;
  SetState(generated_.empty() ? State::kReserving : State::kMigrating);
  saw_full_ = false;
  RankDecode(/*refreshed=*/false);
}

void RequestFlow::RankDecode(bool refreshed) {
  decode_candidates_ = env_->policy->RankDecode(env_->decode->Snapshot());
  next_candidate_ = 0;
  if (decode_candidates_.empty() && !refreshed) {
    // Every worker looked down at the last poll: look again before giving up (one may have
    // just restarted).
    env_->decode->RefreshNow([self = shared_from_this(), a = attempt_.load()] {
      self->PostForAttempt(a, [](RequestFlow* f) { f->RankDecode(/*refreshed=*/true); });
    });
    return;
  }
  TryNextDecode();
}

void RequestFlow::TryNextDecode() {
  if (next_candidate_ >= decode_candidates_.size()) {
    if (saw_full_) {
      EnterQueue(/*front=*/queue_timer_ != 0);
      return;
    }
    Finish(ringserve::v1::FINISH_REASON_ERROR,
           decode_candidates_.empty()
               ? absl::UnavailableError("decode pool has no healthy worker")
               : absl::UnavailableError(absl::StrCat("decode pool: ", last_error_.message())));
    return;
  }
  const std::string address = decode_candidates_[next_candidate_++];
  const uint32_t remaining =
      request_.stopping().max_tokens() - static_cast<uint32_t>(generated_.size());
  internal::v1::ReserveRequest req;
  req.set_request_id(request_id_);
  req.set_prompt_tokens(static_cast<uint32_t>(prompt_.size() + generated_.size()));
  req.set_max_tokens(remaining);
  req.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(options_.lease)));
  *req.mutable_sampling() = sampling_;
  req.mutable_stopping()->set_max_tokens(remaining);
  *req.mutable_stopping()->mutable_stop_token_ids() = request_.stopping().stop_token_ids();
  req.mutable_stopping()->set_ignore_eos(request_.stopping().ignore_eos());
  env_->workers->Reserve(
      address, std::move(req), std::min(deadline_, Now() + options_.unary_timeout),
      [self = shared_from_this(), a = attempt_.load(),
       address](absl::StatusOr<internal::v1::ReserveResponse> answer) {
        self->Post([a, address, answer = std::move(answer)](RequestFlow* f) mutable {
          if (f->finished_ || f->attempt_ != a) {
            // The request moved on while the reservation was made: give it back.
            if (answer.ok()) {
              internal::v1::ReleaseRequest release;
              release.set_request_id(f->request_id_);
              release.set_ticket(answer->ticket());
              f->env_->workers->Release(address, std::move(release),
                                        [queue = f->env_->queue] { queue->Wake(); });
            }
            return;
          }
          f->OnReserved(address, std::move(answer));
        });
      });
}

void RequestFlow::OnReserved(const std::string& address,
                             absl::StatusOr<internal::v1::ReserveResponse> answer) {
  if (!answer.ok()) {
    const absl::Status& s = answer.status();
    last_error_ = s;
    if (absl::IsResourceExhausted(s)) {
      saw_full_ = true;
      TryNextDecode();
      return;
    }
    if (IsRetryable(s) || (absl::IsDeadlineExceeded(s) && Now() < deadline_)) {
      // A worker that does not answer in time is passed over like a dead one.
      env_->decode->ReportFailure(address, std::string(s.message()));
      TryNextDecode();
      return;
    }
    Finish(ringserve::v1::FINISH_REASON_ERROR, s);
    return;
  }
  reservation_ = Reservation{address, answer->ticket(), answer->epoch()};
  const uint32_t remaining =
      request_.stopping().max_tokens() - static_cast<uint32_t>(generated_.size());
  env_->decode->AddAssigned(address,
                            static_cast<int64_t>(prompt_.size() + generated_.size()) + remaining);
  if (queue_timer_ != 0) {
    env_->timers->Cancel(queue_timer_);
    queue_timer_ = 0;
    const absl::Duration wait = Now() - queued_at_;
    timings_.set_queue_us(timings_.queue_us() + absl::ToInt64Microseconds(wait));
    if (env_->observer != nullptr) env_->observer->QueueWait(wait);
  }
  // There may be room for more: the next waiter tries too.
  if (env_->queue->size() > 0) env_->queue->Wake();
  RS_LOG(kInfo) << "event=reserved request_id=" << base::Quote(request_id_) << " decode=" << address
                << " tokens=" << prompt_.size() + generated_.size() << " max_tokens=" << remaining;
  // The decode stream is opened before prefill so that no token waits for it; it is read once
  // prefill has returned the first token.
  internal::v1::DecodeRequest dreq;
  dreq.set_request_id(request_id_);
  dreq.set_ticket(reservation_->ticket);
  decode_stream_ = env_->workers->OpenDecode(
      address, std::move(dreq), std::min(deadline_, Now() + absl::Hours(24)),
      CallbacksFor<internal::v1::DecodeEvent>(&RequestFlow::OnDecodeEvent,
                                              &RequestFlow::OnDecodeEnd));
  StartPrefill(/*refreshed=*/false);
}

void RequestFlow::StartPrefill(bool refreshed) {
  std::vector<uint32_t> context = prompt_;
  context.insert(context.end(), generated_.begin(), generated_.end());
  const PrefillRanking ranking = env_->policy->RankPrefill(
      env_->prefill->Snapshot(), PrefillQuery{request_.cache_salt(), context, Now()});
  const std::vector<std::string>& ranked = ranking.addresses;
  if (ranked.empty() && !refreshed) {
    env_->prefill->RefreshNow([self = shared_from_this(), a = attempt_.load()] {
      self->PostForAttempt(a, [](RequestFlow* f) { f->StartPrefill(/*refreshed=*/true); });
    });
    return;
  }
  if (ranked.empty()) {
    Finish(ringserve::v1::FINISH_REASON_ERROR,
           absl::UnavailableError("prefill pool has no healthy worker"));
    return;
  }
  prefill_address_ = ranked.front();
  if (env_->observer != nullptr) env_->observer->PrefillRouted(ranking.reason);
  env_->prefill->AddAssigned(prefill_address_,
                             static_cast<int64_t>(context.size()) - ranking.cached_tokens);
  SetState(State::kPrefilling);
  internal::v1::PrefillRequest req;
  req.set_request_id(request_id_);
  req.set_cache_salt(request_.cache_salt());
  req.mutable_tokens()->Reserve(static_cast<int>(context.size()));
  for (uint32_t t : context) req.add_tokens(t);
  *req.mutable_sampling() = sampling_;
  req.set_decode_address(reservation_->address);
  req.set_ticket(reservation_->ticket);
  // Progress is always asked for: it shows the worker is alive during long prompts.
  req.set_progress(true);
  req.set_sample_position(static_cast<uint32_t>(context.size()));
  RS_LOG(kInfo) << "event=prefill_start request_id=" << base::Quote(request_id_)
                << " prefill=" << prefill_address_ << " tokens=" << context.size()
                << " route=" << RouteReasonName(ranking.reason)
                << " predicted_cached=" << ranking.cached_tokens;
  prefill_stream_ = env_->workers->StartPrefill(
      prefill_address_, std::move(req), std::min(deadline_, Now() + absl::Hours(24)),
      CallbacksFor<internal::v1::PrefillEvent>(&RequestFlow::OnPrefillEvent,
                                               &RequestFlow::OnPrefillEnd));
  prefill_stream_->Read();
  ArmSilenceTimer();
}

void RequestFlow::OnPrefillEvent(internal::v1::PrefillEvent event) {
  if (prefill_stream_ == nullptr) return;  // after Done: the call is only being read to its end
  last_life_ = Now();
  if (event.has_progress()) {
    if (request_.prefill_progress() && outstanding_ < options_.client_queue) {
      GenerateResponse r;
      r.mutable_progress()->set_tokens_done(event.progress().tokens_done());
      r.mutable_progress()->set_tokens_total(event.progress().tokens_total());
      Write(std::move(r));
    }
    prefill_stream_->Read();
    return;
  }
  if (!event.has_done() || prefill_done_) {
    prefill_stream_->Read();
    return;
  }
  const internal::v1::PrefillDone& done = event.done();
  prefill_done_ = true;
  timings_.set_queue_us(timings_.queue_us() + done.queue_us());
  timings_.set_prefill_us(done.prefill_us());
  timings_.set_transfer_us(done.transfer_us());
  cached_tokens_ = done.cached_tokens();
  RS_LOG(kInfo) << "event=prefill_end request_id=" << base::Quote(request_id_)
                << " first_token=" << done.first_token() << " prefill_us=" << done.prefill_us()
                << " transfer_us=" << done.transfer_us();
  SetState(State::kDecoding);
  // The call ends by itself now: read to its end, never cancel it.
  prefill_stream_->Read();
  prefill_stream_ = nullptr;
  if (Emit({done.first_token()})) {
    Finish(ringserve::v1::FINISH_REASON_STOP, absl::OkStatus());
    return;
  }
  ReadDecode();
}

void RequestFlow::OnPrefillEnd(const absl::Status& status) {
  prefill_stream_ = nullptr;
  if (prefill_done_) return;
  RS_LOG(kWarning) << "event=prefill_failed request_id=" << base::Quote(request_id_)
                   << " prefill=" << prefill_address_
                   << " status=" << base::Quote(status.ToString());
  if (!IsRetryable(status) && !status.ok()) {
    Finish(ringserve::v1::FINISH_REASON_ERROR, status);
    return;
  }
  env_->prefill->ReportFailure(prefill_address_, std::string(status.message()));
  if (env_->observer != nullptr) env_->observer->PrefillRetry();
  Retry(status.ok() ? absl::UnavailableError("prefill ended without a first token") : status);
}

void RequestFlow::OnDecodeEvent(internal::v1::DecodeEvent event) {
  if (decode_stream_ == nullptr) return;
  decode_read_pending_ = false;
  last_life_ = Now();
  if (event.has_tokens()) {
    const std::vector<uint32_t> tokens(event.tokens().token_ids().begin(),
                                       event.tokens().token_ids().end());
    if (!tokens.empty() && Emit(tokens)) {
      Finish(ringserve::v1::FINISH_REASON_STOP, absl::OkStatus());
      return;
    }
    ReadDecode();
    return;
  }
  if (!event.has_finished()) {
    ReadDecode();
    return;
  }
  // The worker ended the sequence and freed its reservation itself; its call ends by itself.
  reservation_.reset();
  decode_stream_->Read();
  decode_stream_ = nullptr;
  env_->queue->Wake();
  const auto& f = event.finished();
  if (f.reason() == ringserve::v1::FINISH_REASON_ERROR) {
    Finish(ringserve::v1::FINISH_REASON_ERROR,
           absl::InternalError(absl::StrCat("decode failed: ", f.error_message())));
    return;
  }
  Finish(static_cast<FinishReason>(f.reason()), absl::OkStatus());
}

void RequestFlow::OnDecodeEnd(const absl::Status& status) {
  decode_stream_ = nullptr;
  decode_read_pending_ = false;
  const std::string address = reservation_.has_value() ? reservation_->address : "";
  RS_LOG(kWarning) << "event=decode_lost request_id=" << base::Quote(request_id_)
                   << " decode=" << address << " status=" << base::Quote(status.ToString())
                   << " generated=" << generated_.size();
  if (absl::IsDeadlineExceeded(status) && Now() >= deadline_) {
    Finish(ringserve::v1::FINISH_REASON_ERROR,
           absl::DeadlineExceededError("request deadline exceeded during decode"));
    return;
  }
  // A worker that restarted (a new epoch) lost the reservation, whatever it answers now.
  bool restarted = false;
  if (reservation_.has_value() && reservation_->epoch != 0) {
    for (const WorkerView& w : env_->decode->Snapshot()) {
      if (w.address == address && w.epoch != 0 && w.epoch != reservation_->epoch) {
        restarted = true;
      }
    }
  }
  if (!status.ok() && !IsRetryable(status) && !restarted) {
    Finish(ringserve::v1::FINISH_REASON_ERROR, status);
    return;
  }
  env_->decode->ReportFailure(address, std::string(status.message()));
  if (env_->observer != nullptr) {
    if (prefill_done_) {
      env_->observer->Migration();
    } else {
      env_->observer->PrefillRetry();
    }
  }
  Retry(status.ok() ? absl::UnavailableError("decode stream ended without finishing") : status);
}

void RequestFlow::ArmSilenceTimer() {
  last_life_ = Now();
  if (silence_timer_ != 0) return;
  silence_timer_ = env_->timers->At(
      last_life_ + options_.worker_timeout, [self = shared_from_this(), a = attempt_.load()] {
        self->PostForAttempt(a, [](RequestFlow* f) { f->OnSilence(); });
      });
}

void RequestFlow::OnSilence() {
  silence_timer_ = 0;
  const bool watching_decode = prefill_done_;
  if (watching_decode && !decode_read_pending_) return;  // paused by the client: silence is ours
  WorkerDirectory* pool = watching_decode ? env_->decode : env_->prefill;
  const std::string address =
      watching_decode ? (reservation_.has_value() ? reservation_->address : "") : prefill_address_;
  // A worker that answers its status polls is alive, only busy (a prefill queued behind long
  // prompts says nothing until its first chunk).
  absl::Time life = last_life_;
  for (const WorkerView& w : pool->Snapshot()) {
    if (w.address == address) life = std::max(life, w.last_seen);
  }
  if (Now() - life < options_.worker_timeout) {
    silence_timer_ = env_->timers->At(
        life + options_.worker_timeout, [self = shared_from_this(), a = attempt_.load()] {
          self->PostForAttempt(a, [](RequestFlow* f) { f->OnSilence(); });
        });
    return;
  }
  const std::string why =
      absl::StrCat(pool->role(), " worker ", address, " sent nothing and answered no poll for ",
                   absl::ToInt64Milliseconds(Now() - life), " ms (--worker-timeout-ms ",
                   absl::ToInt64Milliseconds(options_.worker_timeout), ")");
  RS_LOG(kWarning) << "event=worker_hung request_id=" << base::Quote(request_id_)
                   << " pool=" << pool->role() << " address=" << address;
  pool->ReportFailure(address, why);
  if (env_->observer != nullptr) {
    env_->observer->HungWorker(pool->role());
    if (watching_decode) {
      env_->observer->Migration();
    } else {
      env_->observer->PrefillRetry();
    }
  }
  Retry(absl::UnavailableError(why));
}

void RequestFlow::ReadDecode() {
  if (decode_stream_ == nullptr || decode_read_pending_) return;
  if (outstanding_ >= options_.client_queue) {
    // The client is behind: stop reading, so the decode worker holds the sequence back.
    if (!paused_) {
      paused_ = true;
      paused_since_ = Now();
      stall_timer_ = env_->timers->At(
          Now() + options_.client_timeout, [self = shared_from_this(), a = attempt_.load()] {
            self->PostForAttempt(a, [](RequestFlow* f) { f->OnClientStalled(); });
          });
    }
    return;
  }
  decode_read_pending_ = true;
  decode_stream_->Read();
  ArmSilenceTimer();
}

void RequestFlow::OnClientStalled() {
  // A timer of an earlier pause may fire after the client caught up and fell behind again.
  if (!paused_ || Now() - paused_since_ < options_.client_timeout) return;
  stall_timer_ = 0;
  Finish(ringserve::v1::FINISH_REASON_ERROR,
         absl::DeadlineExceededError(absl::StrCat(
             "the client read nothing for ", absl::ToInt64Milliseconds(options_.client_timeout),
             " ms with ", outstanding_, " messages waiting (--client-timeout-ms)")),
         /*abort_client=*/true);
}

void RequestFlow::EnterQueue(bool front) {
  SetState(State::kQueued);
  if (queue_timer_ == 0) {
    queued_at_ = Now();
    queue_timer_ =
        env_->timers->At(queued_at_ + options_.queue_timeout, [self = shared_from_this()] {
          self->Post([](RequestFlow* f) {
            // A timer of an earlier wait may fire after the request was placed.
            if (f->finished_ || f->queue_timer_ == 0 ||
                f->Now() - f->queued_at_ < f->options_.queue_timeout) {
              return;
            }
            f->Finish(ringserve::v1::FINISH_REASON_ERROR,
                      absl::ResourceExhaustedError(absl::StrCat(
                          "no decode worker had room for ",
                          absl::ToInt64Milliseconds(f->options_.queue_timeout),
                          " ms (--queue-timeout-ms); last answer: ", f->last_error_.message())));
          });
        });
  }
  RS_LOG(kInfo) << "event=queued request_id=" << base::Quote(request_id_)
                << " waiting=" << env_->queue->size();
  queue_id_ = env_->queue->Push(
      [self = shared_from_this()] { self->Post([](RequestFlow* f) { f->OnQueueTurn(); }); }, front);
}

void RequestFlow::OnQueueTurn() {
  queue_id_ = 0;
  if (finished_) {
    env_->queue->Wake();  // the turn passes on
    return;
  }
  BeginAttempt();
}

void RequestFlow::Retry(const absl::Status& why) {
  last_error_ = why;
  EndAttempt();
  if (++attempts_ >= options_.max_attempts) {
    Finish(ringserve::v1::FINISH_REASON_ERROR,
           absl::UnavailableError(
               absl::StrCat("gave up after ", attempts_, " attempts: ", why.message())));
    return;
  }
  RS_LOG(kInfo) << "event=retry request_id=" << base::Quote(request_id_)
                << " attempt=" << attempts_ + 1 << " generated=" << generated_.size();
  BeginAttempt();
}

void RequestFlow::EndAttempt() {
  ++attempt_;
  if (prefill_stream_ != nullptr) prefill_stream_->Cancel();
  if (decode_stream_ != nullptr) decode_stream_->Cancel();
  prefill_stream_ = nullptr;
  decode_stream_ = nullptr;
  prefill_done_ = false;
  decode_read_pending_ = false;
  paused_ = false;
  env_->timers->Cancel(silence_timer_);
  env_->timers->Cancel(stall_timer_);
  silence_timer_ = 0;
  stall_timer_ = 0;
  ReleaseReservation();
}

void RequestFlow::ReleaseReservation() {
  if (!reservation_.has_value()) return;
  internal::v1::ReleaseRequest req;
  req.set_request_id(request_id_);
  req.set_ticket(reservation_->ticket);
  env_->workers->Release(reservation_->address, std::move(req),
                         [queue = env_->queue] { queue->Wake(); });
  reservation_.reset();
}

void RequestFlow::Write(GenerateResponse message) {
  ++outstanding_;
  client_->Write(std::move(message));
}

bool RequestFlow::Emit(const std::vector<uint32_t>& tokens) {
  const absl::Time now = Now();
  GenerateResponse r;
  bool stop = false;
  std::string text;
  for (uint32_t t : tokens) {
    if (first_token_time_ == absl::InfinitePast()) {
      first_token_time_ = now;
      if (env_->observer != nullptr) env_->observer->FirstToken(now - start_);
    } else if (env_->observer != nullptr) {
      env_->observer->InterToken(now - last_token_time_);
    }
    last_token_time_ = now;
    generated_.push_back(t);
    r.mutable_delta()->add_token_ids(t);
    if (text_ != nullptr) absl::StrAppend(&text, text_->Add(t, &stop));
    if (stop) break;
  }
  if (text_ != nullptr) r.mutable_delta()->set_text(std::move(text));
  Write(std::move(r));
  return stop;
}

void RequestFlow::Finish(FinishReason reason, const absl::Status& status, bool abort_client) {
  if (finished_) return;
  const std::string last_state = StateName();
  finished_ = true;
  SetState(State::kFinished);
  env_->timers->Cancel(deadline_timer_);
  env_->timers->Cancel(queue_timer_);
  deadline_timer_ = 0;
  queue_timer_ = 0;
  if (queue_id_ != 0) env_->queue->Remove(queue_id_);
  queue_id_ = 0;
  EndAttempt();
  const absl::Time now = Now();
  timings_.set_total_us(absl::ToInt64Microseconds(now - start_));
  if (first_token_time_ != absl::InfinitePast()) {
    timings_.set_decode_us(absl::ToInt64Microseconds(now - first_token_time_));
  }
  if (env_->observer != nullptr) {
    env_->observer->Finished(Outcome(reason, status), now - start_, prompt_.size(),
                             generated_.size());
  }
  RS_LOG(kInfo) << "event=finished request_id=" << base::Quote(request_id_)
                << " reason=" << ringserve::v1::FinishReason_Name(reason) << " state=" << last_state
                << " prompt_tokens=" << prompt_.size() << " completion_tokens=" << generated_.size()
                << " total_us=" << timings_.total_us()
                << " status=" << base::Quote(status.ToString());
  if (!status.ok()) {
    if (abort_client) {
      client_->Abort(status);
    } else {
      client_->Finish(status);
    }
    return;
  }
  if (text_ != nullptr) {
    const std::string tail = text_->Flush();
    if (!tail.empty()) {
      GenerateResponse r;
      r.mutable_delta()->set_text(tail);
      Write(std::move(r));
    }
  }
  GenerateResponse r;
  auto* f = r.mutable_finished();
  f->set_reason(reason);
  f->set_request_id(request_id_);
  f->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(prompt_.size()));
  f->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(generated_.size()));
  f->mutable_usage()->set_cached_prompt_tokens(cached_tokens_);
  *f->mutable_timings() = timings_;
  Write(std::move(r));
  client_->Finish(absl::OkStatus());
}

}  // namespace ringserve::router::core
