// A real decode worker (with a prefill worker to hand it a state) and a raw gRPC client that
// opens the token stream and never reads it: the sequence pauses, the worker's memory stays flat,
// and after --stalled-stream-timeout-ms the sequence ends and everything is freed.
#include <grpcpp/grpcpp.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "cli/cluster.h"
#include "gtest/gtest.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::decode {
namespace {

using internal::v1::WorkerStatus;

constexpr uint32_t kPromptTokens = 8;
constexpr uint32_t kMaxTokens = 100000;

// Resident memory of `pid` in KiB (VmRSS), or -1.
int64_t RssKiB(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) != 0) continue;
    int64_t kib = -1;
    const std::string digits = line.substr(6, line.find("kB") - 6);
    if (absl::SimpleAtoi(std::string(absl::StripAsciiWhitespace(digits)), &kib)) return kib;
  }
  return -1;
}

// The worker's status (asked at most every 20 ms: the test polls another process).
WorkerStatus Status(internal::v1::Decode::Stub* stub) {
  absl::SleepFor(absl::Milliseconds(20));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  WorkerStatus status;
  EXPECT_TRUE(stub->GetStatus(&ctx, {}, &status).ok());
  return status;
}

TEST(StalledStreamTest, AClientThatNeverReadsPausesItsSequenceThenFreesIt) {
  ringserve::testing::TempDir model_dir;
  ringserve::testing::WriteTinyModel(model_dir.path());
  cli::LocalCluster::Options options;
  options.bin_dir = RINGSERVE_BIN_DIR;
  options.model_dir = model_dir.path();
  options.worker_args = {"--threads=1", "--metrics-port=-1", "--log-level=warning"};
  options.decode_args = {"--stalled-stream-timeout-ms=3000"};
  options.router_args = {"--metrics-port=-1", "--log-level=warning"};
  auto cluster = cli::LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  cli::LocalCluster::Member* decode = (*cluster)->Find("decode", 0);
  cli::LocalCluster::Member* prefill = (*cluster)->Find("prefill", 0);
  ASSERT_NE(decode, nullptr);
  ASSERT_NE(prefill, nullptr);
  auto decode_stub = internal::v1::Decode::NewStub(
      grpc::CreateChannel(decode->address, grpc::InsecureChannelCredentials()));
  const int64_t rss_idle = RssKiB(decode->process->pid());

  internal::v1::ReserveRequest reserve;
  reserve.set_request_id("never-reads");
  reserve.set_prompt_tokens(kPromptTokens);
  reserve.set_max_tokens(kMaxTokens);
  reserve.mutable_stopping()->set_ignore_eos(true);
  internal::v1::ReserveResponse reserved;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    const grpc::Status s = decode_stub->Reserve(&ctx, reserve, &reserved);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  // The token stream, on a channel that takes little data ahead of the reader.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 1024);
  auto reader_stub = internal::v1::Decode::NewStub(
      grpc::CreateCustomChannel(decode->address, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext stream_ctx;
  stream_ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
  internal::v1::DecodeRequest open;
  open.set_request_id(reserve.request_id());
  open.set_ticket(reserved.ticket());
  auto reader = reader_stub->Generate(&stream_ctx, open);

  // The state, from a real prefill worker.
  {
    auto prefill_stub = internal::v1::Prefill::NewStub(
        grpc::CreateChannel(prefill->address, grpc::InsecureChannelCredentials()));
    internal::v1::PrefillRequest job;
    job.set_request_id(reserve.request_id());
    for (uint32_t i = 0; i < kPromptTokens; ++i) job.add_tokens(10 + i);
    job.mutable_sampling()->set_temperature(0);
    job.set_decode_address(decode->address);
    job.set_ticket(reserved.ticket());
    job.set_sample_position(kPromptTokens);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    auto events = prefill_stub->Run(&ctx, job);
    internal::v1::PrefillEvent event;
    bool done = false;
    while (events->Read(&event)) done = done || event.has_done();
    const grpc::Status s = events->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_TRUE(done);
  }

  // Paused: out of the batch, still holding its slot.
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  WorkerStatus status;
  do {
    status = Status(decode_stub.get());
  } while (status.paused() == 0 && absl::Now() < give_up);
  ASSERT_EQ(status.paused(), 1u);
  EXPECT_EQ(status.running(), 0u);
  EXPECT_EQ(status.state_slots_used(), 1u);
  const int64_t rss_paused = RssKiB(decode->process->pid());
  int64_t rss_max = rss_paused;

  // Freed after the stall timeout; memory flat meanwhile.
  do {
    status = Status(decode_stub.get());
    rss_max = std::max(rss_max, RssKiB(decode->process->pid()));
  } while ((status.paused() != 0 || status.state_slots_used() != 0) && absl::Now() < give_up);
  EXPECT_EQ(status.paused(), 0u);
  EXPECT_EQ(status.running(), 0u);
  EXPECT_EQ(status.state_slots_used(), 0u);
  EXPECT_EQ(status.reservations(), 0u);
  EXPECT_LT(rss_max - rss_paused, 4 * 1024) << "decode RSS grew while the sequence was paused";
  std::printf("decode RSS: idle %lld KiB, paused %lld KiB, max while paused %lld KiB\n",
              static_cast<long long>(rss_idle), static_cast<long long>(rss_paused),
              static_cast<long long>(rss_max));

  // The stream ended without its client reading; what it holds is far less than max_tokens.
  internal::v1::DecodeEvent event;
  int tokens = 0;
  bool finished = false;
  while (reader->Read(&event)) {
    tokens += event.tokens().token_ids_size();
    finished = finished || event.has_finished();
  }
  const grpc::Status end = reader->Finish();
  EXPECT_FALSE(end.ok());
  EXPECT_FALSE(finished);
  EXPECT_LT(tokens, static_cast<int>(kMaxTokens) / 4);
  std::printf("tokens generated before the pause: %d of %u\n", tokens, kMaxTokens);

  // The worker still serves.
  reserve.set_request_id("after");
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  EXPECT_TRUE(decode_stub->Reserve(&ctx, reserve, &reserved).ok());
}

}  // namespace
}  // namespace ringserve::decode
