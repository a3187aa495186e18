#include "common/state/reservations.h"

#include <string>
#include <vector>

#include "common/base/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/state/state_test_util.h"

namespace ringserve::state {
namespace {

using internal::v1::StateManifest;
using testing::ExpectEmpty;
using ::testing::HasSubstr;
using testing::ListenerLog;
using testing::LoadTinyModel;
using testing::MakeTable;
using ::testing::MatchesRegex;
using testing::RandomState;
using testing::TinyModel;

constexpr absl::Duration kLease = absl::Seconds(30);

class ReservationTableTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = LoadTinyModel().release(); }
  static void TearDownTestSuite() { delete model_; }

  void SetUp() override {
    table_ = MakeTable(*model_, &clock_, log_.Listener(), /*epoch=*/42, {4, 1000});
  }

  // A manifest of a random state of `tokens` tokens for the reservation.
  StateManifest ManifestFor(const std::string& request_id, const Reservation& r, int64_t tokens) {
    source_ = RandomState(*model_, tokens, tokens, 11);
    ManifestHeader header{request_id, r.ticket, model_->fingerprint, 7, 99, {}};
    header.sampling.set_seed(1234);
    auto m = BuildManifest(model_->layout, *source_, tokens, header, {});
    EXPECT_TRUE(m.ok()) << m.status();
    return *m;
  }

  // Feeds the whole source state to `transfer`.
  absl::Status FeedAll(const StateManifest& m, InboundTransfer* transfer) {
    for (int i = 0; i < m.segments_size(); ++i) {
      uint64_t offset = 0;
      for (const Span& s : SegmentSpans(model_->layout, *source_, m.segments(i))) {
        absl::Status status = transfer->Consume(
            i, offset, std::span<const uint8_t>(static_cast<const uint8_t*>(s.data), s.bytes));
        if (!status.ok()) return status;
        offset += s.bytes;
      }
    }
    return absl::OkStatus();
  }

  static TinyModel* model_;
  base::FakeClock clock_;
  ListenerLog log_;
  std::unique_ptr<ReservationTable> table_;
  std::unique_ptr<worker::ModelState> source_;
};
TinyModel* ReservationTableTest::model_ = nullptr;

TEST_F(ReservationTableTest, ReserveAllocatesUnderALease) {
  auto r = table_->Reserve("a", 10, 20, kLease);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->ticket, MatchesRegex("[0-9a-f]{32}"));
  EXPECT_EQ(r->lease_deadline, clock_.Now() + kLease);
  EXPECT_EQ(r->epoch, 42u);
  const ReservationStats s = table_->Stats();
  EXPECT_EQ(s.slots_used, 1);
  EXPECT_EQ(s.slots_total, 4);
  EXPECT_EQ(s.kv_tokens_used, 30);
  EXPECT_EQ(s.kv_tokens_total, 1000);
  EXPECT_EQ(s.reservations, 1);
  // Memory for 30 tokens is held from the start.
  EXPECT_EQ(s.state_bytes, ComputeStateSize(model_->layout, 30).total());
  auto other = table_->Reserve("b", 10, 20, kLease);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->ticket, r->ticket);
}

TEST_F(ReservationTableTest, ReserveRefusesWhatDoesNotFit) {
  ASSERT_TRUE(table_->Reserve("a", 500, 100, kLease).ok());
  auto dup = table_->Reserve("a", 1, 1, kLease);
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(dup.status().message(), HasSubstr("'a' already holds a reservation (reserved)"));
  auto kv = table_->Reserve("b", 400, 1, kLease);
  EXPECT_EQ(kv.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(kv.status().message(), HasSubstr("KV for 401 tokens does not fit: 600 of 1000"));
  for (const char* id : {"c", "d", "e"}) ASSERT_TRUE(table_->Reserve(id, 1, 1, kLease).ok());
  auto slots = table_->Reserve("f", 1, 1, kLease);
  EXPECT_EQ(slots.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(slots.status().message(), HasSubstr("all 4 state slots are in use"));

  EXPECT_EQ(table_->Reserve("g", 0, 1, kLease).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(table_->Reserve("g", 131000, 100, kLease).status().message(),
              HasSubstr("exceeds the model's 131072 positions"));
  EXPECT_THAT(table_->Reserve("g", 1, 1, absl::Hours(1)).status().message(),
              HasSubstr("lease 1h is outside (0, 10m]"));
  EXPECT_EQ(table_->Stats().slots_used, 4);
}

TEST_F(ReservationTableTest, FactoryFailureChargesNothing) {
  ReservationTable::Options options;
  options.layout = model_->layout;
  options.model_fingerprint = model_->fingerprint;
  options.limits = {4, 1000};
  options.factory = [](int64_t capacity) -> absl::StatusOr<std::unique_ptr<StateBuffer>> {
    return absl::ResourceExhaustedError("no memory");
  };
  options.clock = &clock_;
  auto table = ReservationTable::Create(std::move(options));
  ASSERT_TRUE(table.ok());
  EXPECT_EQ((*table)->Reserve("a", 1, 1, kLease).status().message(), "no memory");
  ExpectEmpty(**table);
}

TEST_F(ReservationTableTest, AdmitChargesAndAllocateStartsTheLease) {
  ASSERT_TRUE(table_->Admit("a", 10, 20, kLease).ok());
  EXPECT_EQ(table_->Admit("a", 1, 1, kLease).code(), absl::StatusCode::kAlreadyExists);
  ReservationStats s = table_->Stats();
  EXPECT_EQ(s.slots_used, 1);
  EXPECT_EQ(s.kv_tokens_used, 30);
  EXPECT_EQ(s.state_bytes, 0u);  // nothing allocated yet
  EXPECT_EQ(table_->ExpireLeases(), 0);

  clock_.Advance(kLease * 2);  // the lease runs from the allocation, not the admission
  auto r = table_->Allocate("a");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->lease_deadline, clock_.Now() + kLease);
  EXPECT_EQ(table_->Stats().state_bytes, ComputeStateSize(model_->layout, 30).total());
  EXPECT_EQ(table_->Allocate("a").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table_->Allocate("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(table_->Release("a", r->ticket).ok());
  ExpectEmpty(*table_);
}

TEST_F(ReservationTableTest, AbandonFreesAnAdmittedReservation) {
  ASSERT_TRUE(table_->Admit("a", 10, 20, kLease).ok());
  table_->Abandon("a");
  ExpectEmpty(*table_);
  ASSERT_TRUE(table_->Reserve("b", 1, 1, kLease).ok());
  table_->Abandon("b");  // allocated: left alone
  EXPECT_EQ(table_->Stats().slots_used, 1);
}

TEST_F(ReservationTableTest, StateGoesReservedReceivingReadyRunningReleased) {
  auto r = table_->Reserve("a", 24, 8, kLease);
  ASSERT_TRUE(r.ok());
  const StateManifest m = ManifestFor("a", *r, 24);
  auto transfer = table_->BeginTransfer(m);
  ASSERT_TRUE(transfer.ok()) << transfer.status();
  EXPECT_EQ(table_->Stats().transfers_in_flight, 1);
  EXPECT_EQ(table_->TakeReady("a", r->ticket).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table_->BeginTransfer(m).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(FeedAll(m, transfer->get()).ok());
  clock_.Advance(absl::Milliseconds(5));
  ASSERT_TRUE((*transfer)->Finish().ok());
  EXPECT_TRUE(log_.WaitFor("a")[0].ok());
  EXPECT_EQ(table_->Stats().transfers_in_flight, 0);

  EXPECT_EQ(table_->TakeReady("a", "forged").status().code(), absl::StatusCode::kPermissionDenied);
  auto ready = table_->TakeReady("a", r->ticket);
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->tokens, 24);
  EXPECT_EQ(ready->max_tokens, 8);
  EXPECT_EQ(ready->first_token, 99u);
  EXPECT_EQ(ready->sampling.seed(), 1234u);
  EXPECT_EQ(ready->sender_epoch, 7u);
  EXPECT_EQ(ready->transfer_time, absl::Milliseconds(5));
  EXPECT_EQ(ready->state->capacity(), 32);
  EXPECT_EQ(testing::CompareStates(*source_, *ready->state, 24), "");
  ReservationStats s = table_->Stats();
  EXPECT_EQ(s.running, 1);
  EXPECT_EQ(s.reservations, 0);
  EXPECT_EQ(s.slots_used, 1);
  EXPECT_EQ(s.state_bytes, 0u);

  EXPECT_EQ(table_->Release("a", "forged").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(table_->Release("a", r->ticket).ok());
  EXPECT_EQ(table_->Release("a", r->ticket).code(), absl::StatusCode::kNotFound);
  ExpectEmpty(*table_);
}

TEST_F(ReservationTableTest, BeginTransferChecksTheReservation) {
  auto r = table_->Reserve("a", 8, 8, kLease);
  ASSERT_TRUE(r.ok());
  StateManifest m = ManifestFor("a", *r, 8);

  StateManifest unknown = m;
  unknown.set_request_id("zzz");
  EXPECT_EQ(table_->BeginTransfer(unknown).status().code(), absl::StatusCode::kNotFound);

  StateManifest forged = m;
  forged.set_ticket("00000000000000000000000000000000");
  const absl::Status denied = table_->BeginTransfer(forged).status();
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(table_->Stats().reservations, 1);  // the real reservation stays

  auto bad = ManifestFor("a", *r, 7);  // 7 tokens for a reservation of 8
  const absl::Status mismatch = table_->BeginTransfer(bad).status();
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.message(), HasSubstr("holds 7 tokens; the reservation is for 8"));
  EXPECT_EQ(log_.WaitFor("a")[0], mismatch);
  ExpectEmpty(*table_);
}

TEST_F(ReservationTableTest, LateStateIsRefusedAndFreed) {
  auto r = table_->Reserve("a", 8, 8, kLease);
  ASSERT_TRUE(r.ok());
  const StateManifest m = ManifestFor("a", *r, 8);
  clock_.Advance(kLease + absl::Milliseconds(1));
  const absl::Status late = table_->BeginTransfer(m).status();
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(late.message(), HasSubstr("before its state arrived"));
  ExpectEmpty(*table_);
}

TEST_F(ReservationTableTest, ExpireLeasesFreesReservedReadyAndReceiving) {
  auto reserved = table_->Reserve("reserved", 8, 8, kLease);
  auto ready = table_->Reserve("ready", 8, 8, kLease);
  auto receiving = table_->Reserve("receiving", 8, 8, kLease);
  auto running = table_->Reserve("running", 8, 8, kLease);
  ASSERT_TRUE(reserved.ok() && ready.ok() && receiving.ok() && running.ok());
  for (auto* p : {&ready, &running}) {
    const std::string id = p == &ready ? "ready" : "running";
    const StateManifest m = ManifestFor(id, **p, 8);
    auto t = table_->BeginTransfer(m);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(FeedAll(m, t->get()).ok());
    ASSERT_TRUE((*t)->Finish().ok());
  }
  ASSERT_TRUE(table_->TakeReady("running", running->ticket).ok());
  const StateManifest m = ManifestFor("receiving", *receiving, 8);
  auto in_flight = table_->BeginTransfer(m);
  ASSERT_TRUE(in_flight.ok());

  EXPECT_EQ(table_->ExpireLeases(), 0);
  clock_.Advance(kLease + absl::Milliseconds(1));
  EXPECT_EQ(table_->ExpireLeases(), 3);
  EXPECT_EQ(log_.WaitFor("reserved")[0].code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(log_.WaitFor("ready", 2)[1].code(), absl::StatusCode::kDeadlineExceeded);
  // The transfer in flight fails at its next step, which frees its reservation.
  EXPECT_EQ(table_->Stats().transfers_in_flight, 1);
  const absl::Status status = FeedAll(m, in_flight->get());
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(status.message(), HasSubstr("ended at"));
  EXPECT_EQ(log_.WaitFor("receiving")[0], status);
  ReservationStats s = table_->Stats();
  EXPECT_EQ(s.reservations, 0);
  EXPECT_EQ(s.running, 1);
  EXPECT_EQ(s.slots_used, 1);
  EXPECT_EQ(s.kv_tokens_used, 16);
}

TEST_F(ReservationTableTest, ReleaseCancelsATransferInFlight) {
  auto r = table_->Reserve("a", 8, 8, kLease);
  ASSERT_TRUE(r.ok());
  const StateManifest m = ManifestFor("a", *r, 8);
  auto transfer = table_->BeginTransfer(m);
  ASSERT_TRUE(transfer.ok());
  ASSERT_TRUE(table_->Release("a", r->ticket).ok());
  EXPECT_EQ(table_->Stats().transfers_in_flight, 1);
  EXPECT_EQ((*transfer)->Finish().code(), absl::StatusCode::kCancelled);
  ExpectEmpty(*table_);
}

TEST_F(ReservationTableTest, AbandonedTransferFreesItsReservation) {
  auto r = table_->Reserve("a", 8, 8, kLease);
  ASSERT_TRUE(r.ok());
  const StateManifest m = ManifestFor("a", *r, 8);
  {
    auto transfer = table_->BeginTransfer(m);
    ASSERT_TRUE(transfer.ok());
    const std::vector<uint8_t> some(64, 1);
    ASSERT_TRUE((*transfer)->Consume(0, 0, some).ok());
  }
  const absl::Status status = log_.WaitFor("a")[0];
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(status.message(), HasSubstr("abandoned after 64 of"));
  ExpectEmpty(*table_);
}

TEST_F(ReservationTableTest, ReadyStateOutlivesNothing) {
  auto r = table_->Reserve("a", 8, 8, kLease);
  ASSERT_TRUE(r.ok());
  const StateManifest m = ManifestFor("a", *r, 8);
  auto transfer = table_->BeginTransfer(m);
  ASSERT_TRUE(transfer.ok());
  ASSERT_TRUE(FeedAll(m, transfer->get()).ok());
  ASSERT_TRUE((*transfer)->Finish().ok());
  ASSERT_TRUE(table_->Release("a", r->ticket).ok());
  EXPECT_EQ(log_.WaitFor("a", 2)[1].code(), absl::StatusCode::kCancelled);
  ExpectEmpty(*table_);
}

}  // namespace
}  // namespace ringserve::state
