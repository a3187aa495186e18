#include "common/rpc/server_stream.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"

namespace ringserve::rpc {
namespace {

using internal::v1::DecodeEvent;

DecodeEvent Tokens(int count) {
  DecodeEvent event;
  for (int i = 0; i < count; ++i) event.mutable_tokens()->add_token_ids(static_cast<uint32_t>(i));
  return event;
}

TEST(StreamSinkTest, TryPushRefusesBeyondTheBoundAndPushDoesNot) {
  StreamSink<DecodeEvent> sink(2);
  EXPECT_TRUE(sink.HasRoom());
  EXPECT_TRUE(sink.TryPush(Tokens(1)));
  EXPECT_TRUE(sink.TryPush(Tokens(1)));
  EXPECT_FALSE(sink.HasRoom());
  EXPECT_FALSE(sink.TryPush(Tokens(1)));
  EXPECT_EQ(sink.queued(), 2u);
  EXPECT_TRUE(sink.Push(Tokens(1)));  // a stream's last message ignores the bound
  EXPECT_EQ(sink.queued(), 3u);
  sink.Finish(grpc::Status::OK);
  EXPECT_FALSE(sink.TryPush(Tokens(1)));
  EXPECT_FALSE(sink.Push(Tokens(1)));
  EXPECT_FALSE(sink.HasRoom());
}

TEST(StreamSinkTest, AbortDropsTheQueue) {
  StreamSink<DecodeEvent> sink(4);
  EXPECT_TRUE(sink.TryPush(Tokens(1)));
  sink.Abort(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "stalled"));
  EXPECT_EQ(sink.queued(), 0u);
  EXPECT_FALSE(sink.TryPush(Tokens(1)));
}

// A Decode service whose Generate hands each call's sink (of `capacity` messages) to the test.
class SinkService final : public internal::v1::Decode::CallbackService {
 public:
  explicit SinkService(size_t capacity) : capacity_(capacity) {}

  grpc::ServerWriteReactor<DecodeEvent>* Generate(grpc::CallbackServerContext* ctx,
                                                  const internal::v1::DecodeRequest*) override {
    auto sink = std::make_shared<StreamSink<DecodeEvent>>(capacity_);
    sink->OnCancel([this] { cancelled_.Notify(); });
    auto* reactor = new ServerStreamReactor<DecodeEvent>(sink, ctx);
    {
      absl::MutexLock lock(&mu_);
      sink_ = sink;
    }
    return reactor;
  }

  std::shared_ptr<StreamSink<DecodeEvent>> WaitForSink() {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(
        absl::Condition(
            +[](std::shared_ptr<StreamSink<DecodeEvent>>* s) { return *s != nullptr; }, &sink_),
        absl::Seconds(30));
    return sink_;
  }
  absl::Notification& cancelled() { return cancelled_; }

 private:
  const size_t capacity_;
  absl::Mutex mu_;
  std::shared_ptr<StreamSink<DecodeEvent>> sink_ ABSL_GUARDED_BY(mu_);
  absl::Notification cancelled_;
};

class StreamSinkServerTest : public ::testing::Test {
 protected:
  void StartServer(size_t capacity) {
    service_ = std::make_unique<SinkService>(capacity);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    // A client that asks for little data at a time, so writes it does not read soon stall.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
    stub_ = internal::v1::Decode::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args));
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  std::unique_ptr<SinkService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<internal::v1::Decode::Stub> stub_;
};

TEST_F(StreamSinkServerTest, WritableRunsWhenARefusedQueueDrains) {
  StartServer(2);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub_->Generate(&ctx, {});
  auto sink = service_->WaitForSink();
  ASSERT_NE(sink, nullptr);
  absl::Notification writable;
  sink->OnWritable([&] {
    if (!writable.HasBeenNotified()) writable.Notify();
  });
  int pushed = 0;
  for (int i = 0; i < 100000 && sink->TryPush(Tokens(1)); ++i) ++pushed;
  ASSERT_LT(pushed, 100000) << "the queue never filled";
  EXPECT_LE(sink->queued(), 2u);
  // The client reads (the flow-control windows may be full by now): the queue drains.
  int read = 0;
  std::thread client([&] {
    DecodeEvent event;
    while (reader->Read(&event)) ++read;
  });
  EXPECT_TRUE(writable.WaitForNotificationWithTimeout(absl::Seconds(30)));
  sink->Finish(grpc::Status::OK);
  client.join();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(read, pushed);
}

TEST_F(StreamSinkServerTest, AbortEndsAStreamWhoseClientNeverReads) {
  StartServer(4);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub_->Generate(&ctx, {});
  auto sink = service_->WaitForSink();
  ASSERT_NE(sink, nullptr);
  // Large messages fill the flow-control windows until a write cannot complete.
  for (int i = 0; i < 64; ++i) sink->Push(Tokens(64 * 1024));
  sink->Abort(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the client stopped reading"));
  EXPECT_EQ(sink->queued(), 0u);
  EXPECT_TRUE(service_->cancelled().WaitForNotificationWithTimeout(absl::Seconds(30)));
  DecodeEvent event;
  int read = 0;
  while (reader->Read(&event)) ++read;
  const grpc::Status status = reader->Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_LT(read, 64);
}

}  // namespace
}  // namespace ringserve::rpc
