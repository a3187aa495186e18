// Round trips and faults of the in-process and gRPC-stream transports against a real
// ReservationTable and, for gRPC, a real server on a free loopback port.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "common/base/clock.h"
#include "common/state/grpc_stream.h"
#include "common/state/in_process.h"
#include "common/state/reservations.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/state/state_test_util.h"

namespace ringserve::state {
namespace {

using internal::v1::StateManifest;
using internal::v1::StateMessage;
using testing::ExpectEmpty;
using ::testing::HasSubstr;
using testing::ListenerLog;
using testing::LoadTinyModel;
using testing::MakeTable;
using testing::RandomState;
using testing::TinyModel;

constexpr absl::Duration kLease = absl::Seconds(30);
constexpr int64_t k128K = 131072;

enum class Transport { kInProcess, kGrpc };

std::string TransportName(Transport t) { return t == Transport::kInProcess ? "InProcess" : "Grpc"; }

// A prefilled state, a copy of it to send, and the logits of the next decode step taken from the
// original (the engine without a handoff).
struct Prefilled {
  std::unique_ptr<worker::ModelState> copy;
  int32_t first_token = 0;
  std::vector<float> next_logits;
};

class TransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = LoadTinyModel().release(); }
  static void TearDownTestSuite() {
    prefilled_.clear();
    big_.reset();
    delete model_;
  }

  void SetUp() override {
    table_ = MakeTable(*model_, &clock_, log_.Listener());
    service_ = std::make_unique<DecodeStateService>(table_.get(), nullptr);
    server_ = testing::StartServer(service_.get());
    channels_ = std::make_unique<ChannelCache>(grpc::InsecureChannelCredentials());
  }
  void TearDown() override { server_.server->Shutdown(); }

  const StateLayout& layout() const { return model_->layout; }

  std::unique_ptr<StateSender> Sender(Transport t) {
    if (t == Transport::kInProcess) {
      return std::make_unique<InProcessStateSender>(layout(), "in-process", table_.get());
    }
    return std::make_unique<GrpcStateSender>(layout(), channels_.get());
  }

  std::string Address(Transport t) const {
    return t == Transport::kInProcess ? "in-process" : server_.address();
  }

  TransferJob Job(Transport t, const std::string& request_id, const Reservation& r,
                  const StateBuffer& state, uint32_t first_token = 17) {
    TransferJob job;
    job.request_id = request_id;
    job.ticket = r.ticket;
    job.decode_address = Address(t);
    job.sender_epoch = 3;
    job.first_token = first_token;
    job.sampling.set_temperature(0.5f);
    job.sampling.set_seed(99);
    job.model_fingerprint = model_->fingerprint;
    job.state = &state;
    job.tokens = state.position();
    return job;
  }

  static absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

  // The prefill of `tokens` tokens, run once per size for the whole suite.
  static const Prefilled& Prefill(int64_t tokens) {
    auto& p = prefilled_[tokens];
    if (p.copy != nullptr) return p;
    std::vector<int32_t> prompt(tokens);
    for (int64_t i = 0; i < tokens; ++i) prompt[i] = static_cast<int32_t>((i * 37 + i * i) % 1000);
    auto state = model_->model->NewState(tokens + 8);
    EXPECT_TRUE(state.ok());
    std::vector<float> logits;
    EXPECT_TRUE(
        model_->model->Prefill(prompt, state->get(), 2048, model::LogitsMode::kLast, &logits).ok());
    p.first_token =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    p.copy = testing::CopyState(*model_, worker::ModelState(state->get()), tokens + 8, tokens);
    model::SequenceState* raw = state->get();
    EXPECT_TRUE(
        model_->model->DecodeStep({&raw, 1}, {&p.first_token, 1}, nullptr, nullptr, &p.next_logits)
            .ok());
    return p;
  }

  // A 128K-token state of random bytes, made once.
  static const StateBuffer& Big() {
    if (big_ == nullptr) big_ = RandomState(*model_, k128K, k128K, 128);
    return *big_;
  }

  // The messages of a valid transfer: the manifest, then pieces of at most `piece` bytes.
  std::vector<StateMessage> Messages(const std::string& request_id, const Reservation& r,
                                     const StateBuffer& state, size_t piece) {
    TransferJob job = Job(Transport::kGrpc, request_id, r, state);
    auto manifest = BuildJobManifest(layout(), job, {});
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    std::vector<StateMessage> messages(1);
    *messages[0].mutable_manifest() = *manifest;
    for (int i = 0; i < manifest->segments_size(); ++i) {
      std::string bytes;
      for (const Span& s : SegmentSpans(layout(), state, manifest->segments(i))) {
        bytes.append(static_cast<const char*>(s.data), s.bytes);
      }
      for (size_t at = 0; at < bytes.size(); at += piece) {
        StateMessage m;
        m.mutable_data()->set_segment(i);
        m.mutable_data()->set_offset(at);
        m.mutable_data()->set_bytes(bytes.substr(at, piece));
        messages.push_back(std::move(m));
      }
    }
    return messages;
  }

  // Writes `messages` on a PushState stream and half-closes it, or cancels it in place of
  // writing message `cancel_at`.
  grpc::Status Push(const std::vector<StateMessage>& messages, int cancel_at = -1) {
    auto stub = internal::v1::Decode::NewStub(channels_->Get(server_.address()));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(Deadline()));
    internal::v1::PushStateResponse response;
    auto writer = stub->PushState(&context, &response);
    for (int i = 0; i < static_cast<int>(messages.size()); ++i) {
      if (i == cancel_at) {
        context.TryCancel();
        break;
      }
      if (!writer->Write(messages[i])) break;
    }
    if (cancel_at < 0) writer->WritesDone();
    return writer->Finish();
  }

  static TinyModel* model_;
  static std::map<int64_t, Prefilled> prefilled_;
  static std::unique_ptr<worker::ModelState> big_;
  base::FakeClock clock_;
  ListenerLog log_;
  std::unique_ptr<ReservationTable> table_;
  std::unique_ptr<DecodeStateService> service_;
  testing::TestServer server_;
  std::unique_ptr<ChannelCache> channels_;
};
TinyModel* TransportTest::model_ = nullptr;
std::map<int64_t, Prefilled> TransportTest::prefilled_;
std::unique_ptr<worker::ModelState> TransportTest::big_;

class RoundTripTest : public TransportTest,
                      public ::testing::WithParamInterface<std::tuple<Transport, int64_t>> {};

TEST_P(RoundTripTest, DecodeContinuesBitExact) {
  const auto [transport, tokens] = GetParam();
  const Prefilled& p = Prefill(tokens);
  auto r = table_->Reserve("req", tokens, 8, kLease);
  ASSERT_TRUE(r.ok()) << r.status();
  auto sent =
      Sender(transport)->Send(Job(transport, "req", *r, *p.copy, p.first_token), Deadline());
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(sent->bytes, ComputeStateSize(layout(), tokens).total());
  EXPECT_TRUE(log_.WaitFor("req")[0].ok());
  auto ready = table_->TakeReady("req", r->ticket);
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(ready->tokens, tokens);
  EXPECT_EQ(ready->first_token, static_cast<uint32_t>(p.first_token));
  EXPECT_EQ(ready->sampling.seed(), 99u);
  EXPECT_EQ(ready->sender_epoch, 3u);
  EXPECT_EQ(testing::CompareStates(*p.copy, *ready->state, tokens), "");

  std::vector<float> logits;
  model::SequenceState* raw = static_cast<worker::ModelState&>(*ready->state).sequence();
  const int32_t next = static_cast<int32_t>(ready->first_token);
  ASSERT_TRUE(model_->model->DecodeStep({&raw, 1}, {&next, 1}, nullptr, nullptr, &logits).ok());
  EXPECT_EQ(logits, p.next_logits);
  ASSERT_TRUE(table_->Release("req", r->ticket).ok());
  ExpectEmpty(*table_);
}

INSTANTIATE_TEST_SUITE_P(Transports, RoundTripTest,
                         ::testing::Combine(::testing::Values(Transport::kInProcess,
                                                              Transport::kGrpc),
                                            ::testing::Values(1, 64, 4096)),
                         [](const ::testing::TestParamInfo<RoundTripTest::ParamType>& info) {
                           return TransportName(std::get<0>(info.param)) + "_" +
                                  std::to_string(std::get<1>(info.param));
                         });

class BigStateTest : public TransportTest, public ::testing::WithParamInterface<Transport> {};

TEST_P(BigStateTest, Moves128KTokensBitExact) {
  const StateBuffer& big = Big();
  auto r = table_->Reserve("big", k128K, 0, kLease);
  ASSERT_TRUE(r.ok()) << r.status();
  auto sent = Sender(GetParam())->Send(Job(GetParam(), "big", *r, big), Deadline());
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(sent->bytes, ComputeStateSize(layout(), k128K).total());
  auto ready = table_->TakeReady("big", r->ticket);
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(testing::CompareStates(big, *ready->state, k128K), "");
  ASSERT_TRUE(table_->Release("big", r->ticket).ok());
  ExpectEmpty(*table_);
}

INSTANTIATE_TEST_SUITE_P(Transports, BigStateTest,
                         ::testing::Values(Transport::kInProcess, Transport::kGrpc),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return TransportName(info.param);
                         });

class FaultTest : public TransportTest, public ::testing::WithParamInterface<Transport> {};

TEST_P(FaultTest, WrongFingerprintIsFailedPrecondition) {
  auto state = RandomState(*model_, 16, 16, 1);
  auto r = table_->Reserve("a", 16, 4, kLease);
  ASSERT_TRUE(r.ok());
  TransferJob job = Job(GetParam(), "a", *r, *state);
  job.model_fingerprint = "another-model";
  const absl::Status status = Sender(GetParam())->Send(job, Deadline()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("fingerprint 'another-model' does not match"));
  ExpectEmpty(*table_);
}

TEST_P(FaultTest, ForgedTicketIsPermissionDeniedAndLeavesTheReservation) {
  auto state = RandomState(*model_, 16, 16, 1);
  auto r = table_->Reserve("a", 16, 4, kLease);
  ASSERT_TRUE(r.ok());
  TransferJob job = Job(GetParam(), "a", *r, *state);
  job.ticket = "0123456789abcdef0123456789abcdef";
  const absl::Status status = Sender(GetParam())->Send(job, Deadline()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  const ReservationStats s = table_->Stats();
  EXPECT_EQ(s.reservations, 1);
  EXPECT_EQ(s.transfers_in_flight, 0);
  // The real ticket still works.
  ASSERT_TRUE(Sender(GetParam())->Send(Job(GetParam(), "a", *r, *state), Deadline()).ok());
  ASSERT_TRUE(table_->Release("a", r->ticket).ok());
  ExpectEmpty(*table_);
}

TEST_P(FaultTest, StateAfterTheLeaseIsDeadlineExceeded) {
  auto state = RandomState(*model_, 16, 16, 1);
  auto r = table_->Reserve("a", 16, 4, kLease);
  ASSERT_TRUE(r.ok());
  clock_.Advance(kLease + absl::Seconds(1));
  const absl::Status status =
      Sender(GetParam())->Send(Job(GetParam(), "a", *r, *state), Deadline()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(status.message(), HasSubstr("lease"));
  ExpectEmpty(*table_);
}

TEST_P(FaultTest, UnknownRequestIsNotFound) {
  auto state = RandomState(*model_, 16, 16, 1);
  Reservation r{"0123456789abcdef0123456789abcdef", {}, 1};
  const absl::Status status =
      Sender(GetParam())->Send(Job(GetParam(), "nobody", r, *state), Deadline()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  ExpectEmpty(*table_);
}

TEST_P(FaultTest, SixteenConcurrentTransfersToOneReceiver) {
  constexpr int kTransfers = 16;
  std::vector<std::unique_ptr<worker::ModelState>> states;
  std::vector<Reservation> reservations;
  for (int i = 0; i < kTransfers; ++i) {
    const int64_t tokens = 200 + 13 * i;
    states.push_back(RandomState(*model_, tokens, tokens, 1000 + i));
    auto r = table_->Reserve(absl::StrCat("r", i), tokens, 16, kLease);
    ASSERT_TRUE(r.ok()) << r.status();
    reservations.push_back(*r);
  }
  std::unique_ptr<StateSender> sender = Sender(GetParam());
  std::vector<absl::Status> results(kTransfers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kTransfers; ++i) {
    threads.emplace_back([&, i] {
      results[i] =
          sender
              ->Send(Job(GetParam(), absl::StrCat("r", i), reservations[i], *states[i]), Deadline())
              .status();
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kTransfers; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i];
    auto ready = table_->TakeReady(absl::StrCat("r", i), reservations[i].ticket);
    ASSERT_TRUE(ready.ok()) << ready.status();
    EXPECT_EQ(testing::CompareStates(*states[i], *ready->state, states[i]->position()), "") << i;
    ASSERT_TRUE(table_->Release(absl::StrCat("r", i), reservations[i].ticket).ok());
  }
  ExpectEmpty(*table_);
}

INSTANTIATE_TEST_SUITE_P(Transports, FaultTest,
                         ::testing::Values(Transport::kInProcess, Transport::kGrpc),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return TransportName(info.param);
                         });

// States off the host (device memory) go through StateMemory copies on both sides.
class DeviceMemoryTest : public TransportTest, public ::testing::WithParamInterface<Transport> {
 protected:
  // Reserves `id` in `table` and sends `state`, read through `sender_memory`, to it over the
  // transport under test.
  absl::Status SendTo(const StateMemory* sender_memory, ReservationTable* table,
                      const std::string& id, const StateBuffer& state, int32_t first_token,
                      Reservation* reservation) {
    DecodeStateService service(table, nullptr);
    testing::TestServer server = testing::StartServer(&service);
    std::unique_ptr<StateSender> sender;
    if (GetParam() == Transport::kInProcess) {
      sender = std::make_unique<InProcessStateSender>(layout(), "in-process", table);
    } else {
      sender = std::make_unique<GrpcStateSender>(layout(), channels_.get());
    }
    auto r = table->Reserve(id, state.position(), 8, kLease);
    EXPECT_TRUE(r.ok()) << r.status();
    *reservation = *r;
    TransferJob job = Job(GetParam(), id, *r, state, static_cast<uint32_t>(first_token));
    job.memory = sender_memory;
    if (GetParam() == Transport::kGrpc) job.decode_address = server.address();
    const absl::Status status = sender->Send(job, Deadline()).status();
    server.server->Shutdown();
    return status;
  }
};

TEST_P(DeviceMemoryTest, StatesOffTheHostRoundTripThroughCopies) {
  const Prefilled& p = Prefill(64);
  testing::CopyingMemory sender_memory, receiver_memory;
  auto table = MakeTable(*model_, &clock_, {}, 1, {4, 1 << 20}, &receiver_memory);
  Reservation r;
  ASSERT_TRUE(SendTo(&sender_memory, table.get(), "d", *p.copy, p.first_token, &r).ok());
  EXPECT_GT(sender_memory.copies(), 0);
  EXPECT_GT(receiver_memory.copies(), 0);
  auto ready = table->TakeReady("d", r.ticket);
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_EQ(testing::CompareStates(*p.copy, *ready->state, 64), "");
  std::vector<float> logits;
  model::SequenceState* raw = static_cast<worker::ModelState&>(*ready->state).sequence();
  ASSERT_TRUE(
      model_->model->DecodeStep({&raw, 1}, {&p.first_token, 1}, nullptr, nullptr, &logits).ok());
  EXPECT_EQ(logits, p.next_logits);
}

TEST_P(DeviceMemoryTest, AFailedDeviceCopyFailsTheTransfer) {
  auto state = RandomState(*model_, 64, 64, 4);
  testing::CopyingMemory failing_receiver(/*fail_at=*/3);
  auto table = MakeTable(*model_, &clock_, {}, 1, {4, 1 << 20}, &failing_receiver);
  Reservation r;
  absl::Status status = SendTo(StateMemory::Host(), table.get(), "d", *state, 0, &r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(status.message(), HasSubstr("the device copy failed"));
  ExpectEmpty(*table);

  testing::CopyingMemory failing_sender(/*fail_at=*/2);
  auto host_table = MakeTable(*model_, &clock_);
  status = SendTo(&failing_sender, host_table.get(), "e", *state, 0, &r);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_THAT(status.message(), HasSubstr("the device copy failed"));
  ExpectEmpty(*host_table);
}

INSTANTIATE_TEST_SUITE_P(Transports, DeviceMemoryTest,
                         ::testing::Values(Transport::kInProcess, Transport::kGrpc),
                         [](const ::testing::TestParamInfo<Transport>& info) {
                           return TransportName(info.param);
                         });

// Faults that only a hand-made stream can produce.
class StreamFaultTest : public TransportTest {
 protected:
  void SetUp() override {
    TransportTest::SetUp();
    state_ = RandomState(*model_, 64, 64, 5);
    auto r = table_->Reserve("a", 64, 4, kLease);
    ASSERT_TRUE(r.ok());
    reservation_ = *r;
    messages_ = Messages("a", reservation_, *state_, 1000);
  }

  std::unique_ptr<worker::ModelState> state_;
  Reservation reservation_;
  std::vector<StateMessage> messages_;
};

TEST_F(StreamFaultTest, HandMadeStreamRoundTrips) {
  const grpc::Status status = Push(messages_);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto ready = table_->TakeReady("a", reservation_.ticket);
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(testing::CompareStates(*state_, *ready->state, 64), "");
}

TEST_F(StreamFaultTest, CorruptedSegmentIsDataLossNamingIt) {
  auto first_of_segment_2 = std::find_if(messages_.begin(), messages_.end(), [](const auto& m) {
    return m.has_data() && m.data().segment() == 2;
  });
  ASSERT_NE(first_of_segment_2, messages_.end());
  (*first_of_segment_2->mutable_data()->mutable_bytes())[5] ^= 0x40;
  const grpc::Status status = Push(messages_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(status.error_message(), HasSubstr("segment 2 (key of layer 7"));
  EXPECT_EQ(log_.WaitFor("a")[0].code(), absl::StatusCode::kDataLoss);
  ExpectEmpty(*table_);
}

TEST_F(StreamFaultTest, TruncatedStreamIsDataLoss) {
  messages_.pop_back();
  const grpc::Status status = Push(messages_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_THAT(status.error_message(), HasSubstr("the state is incomplete"));
  ExpectEmpty(*table_);
}

TEST_F(StreamFaultTest, UnknownFormatVersionIsUnimplemented) {
  messages_[0].mutable_manifest()->set_format_version(kFormatVersion + 1);
  const grpc::Status status = Push(messages_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
  EXPECT_THAT(status.error_message(), HasSubstr("state format version 2 is not supported"));
  ExpectEmpty(*table_);
}

TEST_F(StreamFaultTest, OutOfOrderPieceIsInvalidArgument) {
  std::swap(messages_[3], messages_[4]);
  const grpc::Status status = Push(messages_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("offset 3000"));
  ExpectEmpty(*table_);
}

TEST_F(StreamFaultTest, OversizedPieceIsInvalidArgument) {
  messages_[1].mutable_data()->mutable_bytes()->append(std::string(10000, 'x'));
  const grpc::Status status = Push(messages_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("overruns segment 0"));
  ExpectEmpty(*table_);
}

TEST_F(StreamFaultTest, DataBeforeTheManifestIsInvalidArgument) {
  std::swap(messages_[0], messages_[1]);
  const grpc::Status status = Push(messages_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("must begin with its manifest"));
  EXPECT_EQ(table_->Stats().reservations, 1);  // nothing authenticated, nothing freed
}

TEST_F(StreamFaultTest, LinkManifestWithoutLinksIsUnimplemented) {
  messages_[0].mutable_manifest()->mutable_link()->set_sender_id("prefill-0");
  const grpc::Status status = Push({messages_[0]});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(TransportTest, SenderVanishingMidStreamFreesTheReservation) {
  // Enough bytes that the flow-control window and socket buffers cannot hold them all: by the
  // time the writes before the cancel have returned, the receiver has begun the transfer.
  const StateBuffer& big = Big();
  auto r = table_->Reserve("big", k128K, 0, kLease);
  ASSERT_TRUE(r.ok());
  std::vector<StateMessage> messages = Messages("big", *r, big, 1 << 20);
  const grpc::Status status = Push(messages, static_cast<int>(messages.size()) - 1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED);
  const absl::Status heard = log_.WaitFor("big")[0];
  EXPECT_EQ(heard.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(heard.message(), HasSubstr("the sender cancelled the state stream"));
  ExpectEmpty(*table_);
}

TEST_F(TransportTest, DuplicateRequestIdIsAlreadyExists) {
  ASSERT_TRUE(table_->Reserve("a", 8, 8, kLease).ok());
  EXPECT_EQ(table_->Reserve("a", 8, 8, kLease).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(table_->Stats().reservations, 1);
}

TEST_F(TransportTest, InProcessSenderNeedsItsAddress) {
  auto state = RandomState(*model_, 4, 4, 1);
  Reservation r{"x", {}, 1};
  TransferJob job = Job(Transport::kInProcess, "a", r, *state);
  job.decode_address = "elsewhere:1";
  EXPECT_EQ(Sender(Transport::kInProcess)->Send(job, Deadline()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ringserve::state
