// The NCCL transport's control logic over in-memory pipe links (PipeByteLink has the shape of
// NCCL point-to-point), with a real gRPC server for the handshake and the manifests.
#include "common/state/link_transport.h"

#include <grpcpp/grpcpp.h>

#include <string>
#include <thread>
#include <vector>

#include "common/base/clock.h"
#include "common/rpc/status.h"
#include "common/state/grpc_stream.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/state/pipe_byte_link.h"
#include "tests/common/state/state_test_util.h"

namespace ringserve::state {
namespace {

using testing::ExpectEmpty;
using ::testing::HasSubstr;
using testing::ListenerLog;
using testing::LoadTinyModel;
using testing::MakeTable;
using testing::PipeLinkFactory;
using testing::RandomState;
using testing::TinyModel;

constexpr absl::Duration kLease = absl::Seconds(30);
constexpr char kSenderId[] = "prefill-0";

absl::Time Deadline() { return absl::Now() + absl::Seconds(30); }

TEST(PipeByteLinkTest, HasTheShapeOfNcclSendRecv) {
  PipeLinkFactory factory;
  auto id = factory.NewUniqueId();
  ASSERT_TRUE(id.ok());
  absl::StatusOr<std::unique_ptr<ByteLink>> receiver;
  std::thread join([&] { receiver = factory.Connect(*id, 1, Deadline()); });
  auto sender = factory.Connect(*id, 0, Deadline());
  join.join();
  ASSERT_TRUE(sender.ok() && receiver.ok());
  EXPECT_EQ(factory.connects(), 1);

  std::string a = "hello", b = "world!";
  std::string x(5, ' '), y(6, ' ');
  std::thread send([&] {
    EXPECT_TRUE((*sender)->Send({{a.data(), a.size()}, {b.data(), b.size()}}, Deadline()).ok());
  });
  ASSERT_TRUE((*receiver)->Recv({{x.data(), x.size()}, {y.data(), y.size()}}, Deadline()).ok());
  send.join();
  EXPECT_EQ(x + y, "helloworld!");

  EXPECT_EQ((*receiver)->Recv({{x.data(), x.size()}}, absl::Now()).code(),
            absl::StatusCode::kDeadlineExceeded);
  std::thread abort([&] { (*sender)->Abort(); });
  EXPECT_EQ((*receiver)->Recv({{x.data(), x.size()}}, Deadline()).code(),
            absl::StatusCode::kAborted);
  abort.join();
  EXPECT_EQ(factory.Connect("lonely", 0, absl::Now()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

// A Decode service whose table and link receiver can be replaced, as by a restart of the decode
// worker with a new epoch.
class RestartableDecode : public internal::v1::Decode::WithRawCallbackMethod_PushState<
                              internal::v1::Decode::CallbackService> {
 public:
  RestartableDecode(const TinyModel* model, ByteLinkFactory* factory, base::Clock* clock,
                    ListenerLog* log)
      : model_(model), factory_(factory), clock_(clock), log_(log) {}

  void Restart(uint64_t epoch, absl::Duration transfer_timeout = absl::Minutes(1),
               const StateMemory* memory = nullptr) {
    absl::MutexLock lock(&mu_);
    links_.reset();
    table_ = MakeTable(*model_, clock_, log_->Listener(), epoch, {16, 1 << 20}, memory);
    LinkReceiver::Options options;
    options.epoch = epoch;
    options.transfer_timeout = transfer_timeout;
    links_ = std::make_unique<LinkReceiver>(factory_, table_.get(), options);
  }

  ReservationTable* table() {
    absl::MutexLock lock(&mu_);
    return table_.get();
  }
  LinkReceiver* links() {
    absl::MutexLock lock(&mu_);
    return links_.get();
  }

  grpc::ServerReadReactor<grpc::ByteBuffer>* PushState(grpc::CallbackServerContext* context,
                                                       grpc::ByteBuffer* response) override {
    absl::MutexLock lock(&mu_);
    return NewPushStateReactor(context, table_.get(), links_.get(), response);
  }

  grpc::ServerUnaryReactor* OpenNcclLink(grpc::CallbackServerContext* context,
                                         const internal::v1::NcclLinkRequest* request,
                                         internal::v1::NcclLinkResponse* response) override {
    absl::MutexLock lock(&mu_);
    auto opened = links_->Open(*request);
    if (opened.ok()) *response = *opened;
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(rpc::ToGrpc(opened.status()));
    return reactor;
  }

 private:
  const TinyModel* const model_;
  ByteLinkFactory* const factory_;
  base::Clock* const clock_;
  ListenerLog* const log_;
  absl::Mutex mu_;
  std::unique_ptr<ReservationTable> table_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<LinkReceiver> links_ ABSL_GUARDED_BY(mu_);
};

class LinkTransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { model_ = LoadTinyModel().release(); }
  static void TearDownTestSuite() { delete model_; }

  void SetUp() override {
    service_ = std::make_unique<RestartableDecode>(model_, &factory_, &clock_, &log_);
    service_->Restart(100);
    server_ = testing::StartServer(service_.get());
    channels_ = std::make_unique<ChannelCache>(grpc::InsecureChannelCredentials());
    sender_ = MakeSender(7);
  }
  void TearDown() override { server_.server->Shutdown(); }

  std::unique_ptr<LinkStateSender> MakeSender(uint64_t epoch) {
    LinkStateSender::Options options;
    options.sender_id = kSenderId;
    options.epoch = epoch;
    options.kv_chunk_tokens = 48;
    return std::make_unique<LinkStateSender>(model_->layout, &factory_, channels_.get(), options);
  }

  TransferJob Job(const std::string& request_id, const Reservation& r, const StateBuffer& state,
                  uint64_t sender_epoch) {
    TransferJob job;
    job.request_id = request_id;
    job.ticket = r.ticket;
    job.decode_address = server_.address();
    job.sender_epoch = sender_epoch;
    job.first_token = 3;
    job.model_fingerprint = model_->fingerprint;
    job.state = &state;
    job.tokens = state.position();
    return job;
  }

  // Reserves, sends a random state of `tokens` tokens with `sender` and, when that worked,
  // checks the received state bit for bit and releases it.
  absl::Status Transfer(LinkStateSender* sender, uint64_t sender_epoch, const std::string& id,
                        int64_t tokens, uint64_t seed) {
    ReservationTable* table = service_->table();
    auto state = RandomState(*model_, tokens, tokens, seed);
    auto r = table->Reserve(id, tokens, 8, kLease);
    EXPECT_TRUE(r.ok()) << r.status();
    auto sent = sender->Send(Job(id, *r, *state, sender_epoch), Deadline());
    if (!sent.ok()) return sent.status();
    EXPECT_EQ(sent->bytes, ComputeStateSize(model_->layout, tokens).total());
    auto ready = table->TakeReady(id, r->ticket);
    EXPECT_TRUE(ready.ok()) << ready.status();
    EXPECT_EQ(testing::CompareStates(*state, *ready->state, tokens), "");
    EXPECT_TRUE(table->Release(id, r->ticket).ok());
    return absl::OkStatus();
  }

  static TinyModel* model_;
  PipeLinkFactory factory_;
  base::FakeClock clock_;
  ListenerLog log_;
  std::unique_ptr<RestartableDecode> service_;
  testing::TestServer server_;
  std::unique_ptr<ChannelCache> channels_;
  std::unique_ptr<LinkStateSender> sender_;
};
TinyModel* LinkTransportTest::model_ = nullptr;

TEST_F(LinkTransportTest, TransfersReuseOneLink) {
  ASSERT_TRUE(Transfer(sender_.get(), 7, "a", 64, 1).ok());
  ASSERT_TRUE(Transfer(sender_.get(), 7, "b", 300, 2).ok());
  ASSERT_TRUE(Transfer(sender_.get(), 7, "c", 1, 3).ok());
  EXPECT_EQ(factory_.connects(), 1);
  EXPECT_EQ(sender_->links(), 1);
  EXPECT_EQ(service_->links()->links(), 1);
  ExpectEmpty(*service_->table());
}

TEST_F(LinkTransportTest, ConcurrentTransfersShareTheLinkInTurn) {
  std::vector<absl::Status> results(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Transfer(sender_.get(), 7, absl::StrCat("r", i), 50 + 20 * i, 10 + i);
    });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& status : results) EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(factory_.connects(), 1);
  ExpectEmpty(*service_->table());
}

TEST_F(LinkTransportTest, BrokenLinkFailsOneTransferThenIsRebuilt) {
  ASSERT_TRUE(Transfer(sender_.get(), 7, "a", 64, 1).ok());
  factory_.AbortAll();
  const absl::Status status = Transfer(sender_.get(), 7, "b", 64, 2);
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_EQ(log_.WaitFor("b")[0].code(), absl::StatusCode::kAborted);
  ExpectEmpty(*service_->table());
  EXPECT_EQ(sender_->links(), 0);
  EXPECT_EQ(service_->links()->links(), 0);

  ASSERT_TRUE(Transfer(sender_.get(), 7, "c", 64, 3).ok());
  EXPECT_EQ(factory_.connects(), 2);
  EXPECT_EQ(sender_->links(), 1);
  EXPECT_EQ(service_->links()->links(), 1);
}

TEST_F(LinkTransportTest, RestartedReceiverGetsANewLink) {
  ASSERT_TRUE(Transfer(sender_.get(), 7, "a", 64, 1).ok());
  service_->Restart(200);
  // The manifest names receiver epoch 100: refused as UNAVAILABLE, reopened, sent again.
  ASSERT_TRUE(Transfer(sender_.get(), 7, "b", 64, 2).ok());
  EXPECT_EQ(factory_.connects(), 2);
  EXPECT_EQ(sender_->links(), 1);
  EXPECT_EQ(service_->links()->links(), 1);
  ExpectEmpty(*service_->table());
}

TEST_F(LinkTransportTest, StaleSenderEpochIsRefused) {
  ASSERT_TRUE(Transfer(sender_.get(), 7, "a", 64, 1).ok());
  // The prefill worker restarted: the same id with a newer epoch replaces the link.
  std::unique_ptr<LinkStateSender> restarted = MakeSender(8);
  ASSERT_TRUE(Transfer(restarted.get(), 8, "b", 64, 2).ok());

  ReservationTable* table = service_->table();
  auto state = RandomState(*model_, 64, 64, 3);
  auto r = table->Reserve("c", 64, 8, kLease);
  ASSERT_TRUE(r.ok());
  const absl::Status stale = sender_->Send(Job("c", *r, *state, 7), Deadline()).status();
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition) << stale;
  EXPECT_THAT(stale.message(), HasSubstr("epoch 7 is older than the epoch 8"));
  // Refused before the transfer began: the reservation waits for a valid sender.
  EXPECT_EQ(table->Stats().reservations, 1);
  EXPECT_EQ(table->Stats().transfers_in_flight, 0);
  EXPECT_EQ(sender_->links(), 0);
  auto sent = restarted->Send(Job("c", *r, *state, 8), Deadline());
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(factory_.connects(), 2);
}

TEST_F(LinkTransportTest, RefusedManifestDropsTheLinkOnBothSides) {
  ReservationTable* table = service_->table();
  auto state = RandomState(*model_, 64, 64, 1);
  auto r = table->Reserve("a", 64, 8, kLease);
  ASSERT_TRUE(r.ok());
  TransferJob job = Job("a", *r, *state, 7);
  job.model_fingerprint = "another-model";
  const absl::Status status = sender_->Send(job, Deadline()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  ExpectEmpty(*table);
  EXPECT_EQ(sender_->links(), 0);
  EXPECT_EQ(service_->links()->links(), 0);
  ASSERT_TRUE(Transfer(sender_.get(), 7, "b", 64, 2).ok());
}

TEST_F(LinkTransportTest, DeviceResidentStatesAreHashedThroughCopies) {
  testing::CopyingMemory receiver_memory;
  service_->Restart(400, absl::Minutes(1), &receiver_memory);
  testing::CopyingMemory sender_memory;
  ReservationTable* table = service_->table();
  auto state = RandomState(*model_, 100, 100, 5);
  auto r = table->Reserve("a", 100, 8, kLease);
  ASSERT_TRUE(r.ok());
  TransferJob job = Job("a", *r, *state, 7);
  job.memory = &sender_memory;
  auto sent = sender_->Send(job, Deadline());
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_GT(sender_memory.copies(), 0);    // the manifest's checksums
  EXPECT_GT(receiver_memory.copies(), 0);  // their verification
  auto ready = table->TakeReady("a", r->ticket);
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(testing::CompareStates(*state, *ready->state, 100), "");
}

TEST_F(LinkTransportTest, ReceiveTimeoutAbortsTheLink) {
  service_->Restart(300, /*transfer_timeout=*/absl::Milliseconds(300));
  ASSERT_TRUE(Transfer(sender_.get(), 7, "a", 16, 1).ok());
  // A manifest naming the link whose bytes never come.
  ReservationTable* table = service_->table();
  auto state = RandomState(*model_, 16, 16, 2);
  auto r = table->Reserve("b", 16, 8, kLease);
  ASSERT_TRUE(r.ok());
  auto manifest = BuildJobManifest(model_->layout, Job("b", *r, *state, 7), {});
  ASSERT_TRUE(manifest.ok());
  manifest->mutable_link()->set_sender_id(kSenderId);
  manifest->mutable_link()->set_receiver_epoch(300);
  internal::v1::StateMessage message;
  *message.mutable_manifest() = *manifest;
  auto stub = internal::v1::Decode::NewStub(channels_->Get(server_.address()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(Deadline()));
  internal::v1::PushStateResponse response;
  auto writer = stub->PushState(&context, &response);
  ASSERT_TRUE(writer->Write(message));
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  ExpectEmpty(*table);
  EXPECT_EQ(service_->links()->links(), 0);
  // The sender finds its link gone and opens another.
  ASSERT_TRUE(Transfer(sender_.get(), 7, "c", 16, 3).ok());
  EXPECT_EQ(factory_.connects(), 2);
}

}  // namespace
}  // namespace ringserve::state
