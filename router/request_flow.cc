#include "router/request_flow.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/base/logging.h"
#include "common/base/random.h"
#include "common/rpc/status.h"

namespace ringserve::router {

using ringserve::v1::FinishReason;
using ringserve::v1::GenerateRequest;
using ringserve::v1::GenerateResponse;

namespace {

bool IsRetryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::ABORTED ||
         s.error_code() == grpc::StatusCode::INTERNAL ||
         s.error_code() == grpc::StatusCode::UNKNOWN;
}

}  // namespace

RouterMetrics::RouterMetrics(rpc::Metrics* m)
    : metrics(m),
      ttft(m->Seconds("ringserve_router_time_to_first_token_seconds",
                      "Time from admission to the first streamed token")),
      inter_token(m->Seconds("ringserve_router_inter_token_latency_seconds",
                             "Time between consecutive streamed tokens")),
      e2e(m->Seconds("ringserve_router_request_duration_seconds", "Time of whole requests")),
      prefill_retries(m->Counter("ringserve_router_prefill_retries_total",
                                 "Prefills rerun on another worker after a failure")),
      migrations(m->Counter("ringserve_router_migrations_total",
                            "Streams moved to another decode worker after it was lost")),
      prompt_tokens(m->Counter("ringserve_router_prompt_tokens_total", "Prompt tokens admitted")),
      completion_tokens(
          m->Counter("ringserve_router_completion_tokens_total", "Tokens streamed to clients")) {}

prometheus::Counter& RouterMetrics::Outcome(const std::string& outcome) {
  return metrics->Counter("ringserve_router_requests_total", "Generate requests by outcome",
                          {{"outcome", outcome}});
}

RequestFlow::RequestFlow(RouterContext* context, std::string request_id, GenerateRequest request,
                         std::shared_ptr<rpc::StreamSink<GenerateResponse>> sink,
                         absl::Time deadline)
    : context_(context),
      request_id_(std::move(request_id)),
      request_(std::move(request)),
      sink_(std::move(sink)),
      deadline_(deadline),
      start_(absl::Now()) {}

void RequestFlow::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  for (grpc::ClientContext* call : calls_) call->TryCancel();
}

std::unique_ptr<grpc::ClientContext> RequestFlow::NewCall(absl::Duration limit) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(std::min(deadline_, absl::Now() + limit)));
  return ctx;
}

void RequestFlow::Finish(FinishReason reason, const absl::Status& status) {
  if (text_ != nullptr && status.ok()) {
    const std::string tail = text_->Flush();
    if (!tail.empty()) {
      GenerateResponse r;
      r.mutable_delta()->set_text(tail);
      sink_->Push(std::move(r));
    }
  }
  const absl::Time now = absl::Now();
  timings_.set_total_us(absl::ToInt64Microseconds(now - start_));
  if (first_token_time_ != absl::InfinitePast()) {
    timings_.set_decode_us(absl::ToInt64Microseconds(now - first_token_time_));
  }
  if (context_->metrics != nullptr) {
    RouterMetrics& m = *context_->metrics;
    std::string outcome =
        status.ok() ? absl::AsciiStrToLower(std::string(ringserve::v1::FinishReason_Name(reason)))
                    : absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
    absl::StrReplaceAll({{"finish_reason_", ""}}, &outcome);
    m.Outcome(outcome).Increment();
    m.e2e.Observe(absl::ToDoubleSeconds(now - start_));
    m.prompt_tokens.Increment(static_cast<double>(prompt_.size()));
    m.completion_tokens.Increment(static_cast<double>(generated_.size()));
  }
  RS_LOG(kInfo) << "event=finished request_id=" << base::Quote(request_id_)
                << " reason=" << ringserve::v1::FinishReason_Name(reason)
                << " prompt_tokens=" << prompt_.size() << " completion_tokens=" << generated_.size()
                << " total_us=" << timings_.total_us()
                << " status=" << base::Quote(status.ToString());
  if (!status.ok()) {
    sink_->Finish(rpc::ToGrpc(status));
    return;
  }
  GenerateResponse r;
  auto* f = r.mutable_finished();
  f->set_reason(reason);
  f->set_request_id(request_id_);
  f->mutable_usage()->set_prompt_tokens(static_cast<uint32_t>(prompt_.size()));
  f->mutable_usage()->set_completion_tokens(static_cast<uint32_t>(generated_.size()));
  *f->mutable_timings() = timings_;
  sink_->Push(std::move(r));
  sink_->Finish(grpc::Status::OK);
}

bool RequestFlow::Emit(uint32_t token) {
  generated_.push_back(token);
  const absl::Time now = absl::Now();
  if (first_token_time_ == absl::InfinitePast()) {
    first_token_time_ = now;
    if (context_->metrics != nullptr) {
      context_->metrics->ttft.Observe(absl::ToDoubleSeconds(now - start_));
    }
  } else if (context_->metrics != nullptr) {
    context_->metrics->inter_token.Observe(absl::ToDoubleSeconds(now - last_token_time_));
  }
  last_token_time_ = now;
  GenerateResponse r;
  r.mutable_delta()->add_token_ids(token);
  bool stop = false;
  if (text_ != nullptr) r.mutable_delta()->set_text(text_->Add(token, &stop));
  sink_->Push(std::move(r));
  stopped_by_string_ = stop;
  return stop;
}

void RequestFlow::Release(const std::string& decode_address, const std::string& ticket) {
  auto handle = context_->decode->Handle(decode_address);
  if (handle == nullptr) return;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + context_->unary_timeout));
  internal::v1::ReleaseRequest req;
  req.set_request_id(request_id_);
  req.set_ticket(ticket);
  internal::v1::ReleaseResponse resp;
  handle->decode->Release(&ctx, req, &resp);
}

RequestFlow::Outcome RequestFlow::Attempt(const std::vector<uint32_t>& context_tokens) {
  const uint32_t remaining =
      request_.stopping().max_tokens() - static_cast<uint32_t>(generated_.size());
  // 1. A decode reservation.
  std::string decode_address, ticket;
  grpc::Status last =
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode pool has no healthy worker");
  std::vector<std::string> decodes = context_->policy->RankDecode(context_->decode->Snapshot());
  if (decodes.empty()) {
    // Every worker looked down at the last poll: look again before giving up (a worker may
    // have just restarted).
    context_->decode->RefreshNow();
    decodes = context_->policy->RankDecode(context_->decode->Snapshot());
  }
  for (const std::string& address : decodes) {
    auto handle = context_->decode->Handle(address);
    if (handle == nullptr) continue;
    auto ctx = NewCall(context_->unary_timeout);
    internal::v1::ReserveRequest req;
    req.set_request_id(request_id_);
    req.set_prompt_tokens(static_cast<uint32_t>(context_tokens.size()));
    req.set_max_tokens(remaining);
    req.set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(context_->lease)));
    *req.mutable_sampling() = sampling_;
    req.mutable_stopping()->set_max_tokens(remaining);
    *req.mutable_stopping()->mutable_stop_token_ids() = request_.stopping().stop_token_ids();
    req.mutable_stopping()->set_ignore_eos(request_.stopping().ignore_eos());
    internal::v1::ReserveResponse resp;
    last = handle->decode->Reserve(ctx.get(), req, &resp);
    if (last.ok()) {
      decode_address = address;
      ticket = resp.ticket();
      context_->decode->AddAssigned(address, context_tokens.size() + remaining);
      break;
    }
    if (IsRetryable(last)) context_->decode->ReportFailure(address, last.error_message());
    if (last.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
        last.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      break;
    }
  }
  if (decode_address.empty()) {
    if (last.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return {true, absl::UnavailableError(absl::StrCat("decode pool: ", last.error_message()))};
    }
    return {true, rpc::FromGrpc(last)};
  }
  RS_LOG(kInfo) << "event=reserved request_id=" << base::Quote(request_id_)
                << " decode=" << decode_address << " tokens=" << context_tokens.size()
                << " max_tokens=" << remaining;
  auto decode = context_->decode->Handle(decode_address);
  // 2. The decode stream, opened before prefill so no token waits for it.
  auto dctx = NewCall(absl::Hours(24));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) {
      Release(decode_address, ticket);
      return {true, absl::CancelledError("cancelled by the client")};
    }
    calls_.push_back(dctx.get());
  }
  auto forget = [&](grpc::ClientContext* c) {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase(calls_, c);
  };
  internal::v1::DecodeRequest dreq;
  dreq.set_request_id(request_id_);
  dreq.set_ticket(ticket);
  auto reader = decode->decode->Generate(dctx.get(), dreq);

  // 3. Prefill on the least loaded prefill worker.
  internal::v1::PrefillRequest preq;
  preq.set_request_id(request_id_);
  for (uint32_t t : context_tokens) preq.add_tokens(t);
  *preq.mutable_sampling() = sampling_;
  preq.set_decode_address(decode_address);
  preq.set_ticket(ticket);
  preq.set_progress(request_.prefill_progress());
  preq.set_sample_position(static_cast<uint32_t>(context_tokens.size()));
  auto abandon = [&](const absl::Status& status, bool done) -> Outcome {
    dctx->TryCancel();
    reader->Finish();
    forget(dctx.get());
    Release(decode_address, ticket);
    return {done, status};
  };
  std::vector<std::string> prefills = context_->policy->RankPrefill(context_->prefill->Snapshot());
  if (prefills.empty()) {
    context_->prefill->RefreshNow();
    prefills = context_->policy->RankPrefill(context_->prefill->Snapshot());
  }
  if (prefills.empty()) {
    return abandon(absl::UnavailableError("prefill pool has no healthy worker"), true);
  }
  const std::string prefill_address = prefills.front();
  auto prefill = context_->prefill->Handle(prefill_address);
  if (prefill == nullptr) return abandon(absl::UnavailableError("prefill worker vanished"), false);
  context_->prefill->AddAssigned(prefill_address, context_tokens.size());
  auto pctx = NewCall(absl::Hours(24));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return abandon(absl::CancelledError("cancelled by the client"), true);
    calls_.push_back(pctx.get());
  }
  RS_LOG(kInfo) << "event=prefill_start request_id=" << base::Quote(request_id_)
                << " prefill=" << prefill_address << " tokens=" << context_tokens.size();
  auto preader = prefill->prefill->Run(pctx.get(), preq);
  internal::v1::PrefillEvent event;
  std::optional<internal::v1::PrefillDone> done;
  while (preader->Read(&event)) {
    if (event.has_progress()) {
      GenerateResponse r;
      r.mutable_progress()->set_tokens_done(event.progress().tokens_done());
      r.mutable_progress()->set_tokens_total(event.progress().tokens_total());
      if (request_.prefill_progress()) sink_->Push(std::move(r));
    } else if (event.has_done()) {
      done = event.done();
    }
  }
  const grpc::Status pstatus = preader->Finish();
  forget(pctx.get());
  if (!pstatus.ok() || !done.has_value()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) return abandon(absl::CancelledError("cancelled by the client"), true);
    }
    RS_LOG(kWarning) << "event=prefill_failed request_id=" << base::Quote(request_id_)
                     << " prefill=" << prefill_address
                     << " status=" << base::Quote(pstatus.error_message());
    if (IsRetryable(pstatus)) {
      context_->prefill->ReportFailure(prefill_address, pstatus.error_message());
      if (context_->metrics != nullptr) context_->metrics->prefill_retries.Increment();
      return abandon(rpc::FromGrpc(pstatus), false);
    }
    return abandon(rpc::FromGrpc(pstatus), true);
  }
  timings_.set_queue_us(done->queue_us());
  timings_.set_prefill_us(done->prefill_us());
  timings_.set_transfer_us(done->transfer_us());
  RS_LOG(kInfo) << "event=prefill_end request_id=" << base::Quote(request_id_)
                << " first_token=" << done->first_token() << " prefill_us=" << done->prefill_us()
                << " transfer_us=" << done->transfer_us();
  if (Emit(done->first_token())) {
    return abandon(absl::OkStatus(), true);
  }
  // 4. Tokens from the decode worker.
  internal::v1::DecodeEvent devent;
  while (reader->Read(&devent)) {
    if (devent.has_tokens()) {
      for (uint32_t t : devent.tokens().token_ids()) {
        if (Emit(t)) return abandon(absl::OkStatus(), true);
      }
    } else if (devent.has_finished()) {
      const auto& f = devent.finished();
      reader->Finish();
      forget(dctx.get());
      if (f.reason() == ringserve::v1::FINISH_REASON_ERROR) {
        return {true, absl::InternalError(absl::StrCat("decode failed: ", f.error_message()))};
      }
      finish_reason_ = static_cast<FinishReason>(f.reason());
      return {true, absl::OkStatus()};
    }
  }
  const grpc::Status dstatus = reader->Finish();
  forget(dctx.get());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) {
      Release(decode_address, ticket);
      return {true, absl::CancelledError("cancelled by the client")};
    }
  }
  RS_LOG(kWarning) << "event=decode_lost request_id=" << base::Quote(request_id_)
                   << " decode=" << decode_address
                   << " status=" << base::Quote(dstatus.error_message())
                   << " generated=" << generated_.size();
  if (dstatus.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    Release(decode_address, ticket);
    return {true, absl::DeadlineExceededError("request deadline exceeded during decode")};
  }
  if (IsRetryable(dstatus) || dstatus.ok()) {
    context_->decode->ReportFailure(decode_address, dstatus.error_message());
    if (context_->metrics != nullptr) context_->metrics->migrations.Increment();
    Release(decode_address, ticket);
    return {false, rpc::FromGrpc(dstatus)};
  }
  Release(decode_address, ticket);
  return {true, rpc::FromGrpc(dstatus)};
}

void RequestFlow::Run() {
  RS_LOG(kInfo) << "event=admitted request_id=" << base::Quote(request_id_);
  auto prompt = PromptTokens(request_, context_->limits, context_->text);
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
  if (context_->text != nullptr) {
    text_ = context_->text->NewStream(std::vector<std::string>(request_.stopping().stop().begin(),
                                                               request_.stopping().stop().end()));
  }
  absl::Status last = absl::UnavailableError("no attempt was made");
  for (int attempt = 0; attempt < context_->max_attempts; ++attempt) {
    if (generated_.size() >= request_.stopping().max_tokens()) {
      Finish(ringserve::v1::FINISH_REASON_LENGTH, absl::OkStatus());
      return;
    }
    std::vector<uint32_t> context_tokens = prompt_;
    context_tokens.insert(context_tokens.end(), generated_.begin(), generated_.end());
    const Outcome outcome = Attempt(context_tokens);
    if (outcome.done) {
      if (!outcome.status.ok()) {
        Finish(ringserve::v1::FINISH_REASON_ERROR, outcome.status);
      } else if (stopped_by_string_) {
        Finish(ringserve::v1::FINISH_REASON_STOP, absl::OkStatus());
      } else {
        Finish(finish_reason_, absl::OkStatus());
      }
      return;
    }
    last = outcome.status;
    RS_LOG(kInfo) << "event=retry request_id=" << base::Quote(request_id_)
                  << " attempt=" << attempt + 1 << " generated=" << generated_.size();
  }
  Finish(ringserve::v1::FINISH_REASON_ERROR,
         absl::UnavailableError(absl::StrCat("gave up after ", context_->max_attempts,
                                             " attempts: ", last.message())));
}

}  // namespace ringserve::router
