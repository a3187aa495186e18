#pragma once

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "cli/cluster.h"
#include "common/model/generate.h"
#include "common/model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "ringserve/internal/v1/worker.grpc.pb.h"
#include "ringserve/v1/generation.grpc.pb.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::testing {

// The result of one Generate call.
struct Answer {
  grpc::Status status;
  std::vector<uint32_t> ids;
  std::string text;
  std::optional<ringserve::v1::Finished> finished;
  int progress_events = 0;
  absl::Time first_token = absl::InfinitePast();
};

// Writes the default tiny model with `ringctl make-model` (a real process) into `dir`.
inline void MakeDefaultModel(const std::string& dir) {
  auto p = base::Subprocess::Start(
      {std::string(RINGSERVE_BIN_DIR) + "/ringctl", "make-model", "--preset", "tiny", "--out", dir},
      false);
  ASSERT_TRUE(p.ok()) << p.status();
  auto code = (*p)->Wait(absl::Minutes(2));
  ASSERT_TRUE(code.ok() && *code == 0) << "ringctl make-model failed";
}

inline cli::LocalCluster::Options ClusterOptions(const std::string& model_dir, int prefill,
                                                 int decode) {
  cli::LocalCluster::Options o;
  o.bin_dir = RINGSERVE_BIN_DIR;
  o.model_dir = model_dir;
  o.prefill = prefill;
  o.decode = decode;
  o.worker_args = {"--threads=1", "--metrics-port=-1", "--log-level=warning"};
  o.router_args = {"--metrics-port=-1", "--log-level=warning", "--poll-interval-ms=100"};
  return o;
}

inline Answer Generate(const std::string& router, const ringserve::v1::GenerateRequest& request,
                       absl::Duration timeout = absl::Minutes(10),
                       grpc::ClientContext* external = nullptr) {
  auto channel = grpc::CreateChannel(router, grpc::InsecureChannelCredentials());
  auto stub = ringserve::v1::Generation::NewStub(channel);
  grpc::ClientContext local;
  grpc::ClientContext* ctx = external != nullptr ? external : &local;
  if (external == nullptr) ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  auto reader = stub->Generate(ctx, request);
  Answer a;
  ringserve::v1::GenerateResponse r;
  while (reader->Read(&r)) {
    if (r.has_progress()) ++a.progress_events;
    if (r.has_delta()) {
      if (a.ids.empty()) a.first_token = absl::Now();
      a.ids.insert(a.ids.end(), r.delta().token_ids().begin(), r.delta().token_ids().end());
      a.text += r.delta().text();
    }
    if (r.has_finished()) a.finished = r.finished();
  }
  a.status = reader->Finish();
  return a;
}

inline ringserve::v1::GenerateRequest TokenRequest(const std::vector<uint32_t>& prompt,
                                                   uint32_t max_tokens, float temperature = 0,
                                                   std::optional<uint64_t> seed = std::nullopt) {
  ringserve::v1::GenerateRequest req;
  for (uint32_t t : prompt) req.mutable_token_ids()->add_ids(t);
  req.mutable_stopping()->set_max_tokens(max_tokens);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(temperature);
  if (seed.has_value()) req.mutable_sampling()->set_seed(*seed);
  return req;
}

// A suite that writes the default model once and loads it in this process: the reference
// every cluster answer is compared with.
class ReferenceModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    MakeDefaultModel(dir_->path());
    backend_ = new kernels::CpuBackend(1);
    auto m = model::HybridModel::Load(dir_->path(), backend_, {});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = m->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete backend_;
    delete dir_;
  }

  // What the model generates in this process for a token-id request.
  static std::vector<uint32_t> Offline(const ringserve::v1::GenerateRequest& req) {
    model::GenerateOptions options;
    options.max_tokens = req.stopping().max_tokens();
    options.ignore_eos = true;
    options.sampling.temperature = req.sampling().temperature();
    options.sampling.top_k = req.sampling().top_k();
    options.sampling.seed = req.sampling().seed();
    std::vector<int32_t> p(req.token_ids().ids().begin(), req.token_ids().ids().end());
    auto out = model::Generate(model_, p, options, nullptr);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::vector<uint32_t>(out->begin(), out->end()) : std::vector<uint32_t>{};
  }

  static inline TempDir* dir_ = nullptr;
  static inline kernels::CpuBackend* backend_ = nullptr;
  static inline model::HybridModel* model_ = nullptr;
};

inline std::vector<uint32_t> PromptOf(int n, int salt = 0) {
  std::vector<uint32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<uint32_t>((i * 7919 + salt * 104729 + 17) % 900);
  return t;
}

// A worker's own view of what it holds.
inline internal::v1::WorkerStatus WorkerStatusOf(const std::string& address, bool prefill) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  internal::v1::WorkerStatus status;
  grpc::Status s = prefill ? internal::v1::Prefill::NewStub(channel)->GetStatus(&ctx, {}, &status)
                           : internal::v1::Decode::NewStub(channel)->GetStatus(&ctx, {}, &status);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return status;
}

// Whether a worker holds nothing for any request: no reservation, slot, KV, transfer or job.
inline bool WorkerIsIdle(const std::string& address, bool prefill) {
  const internal::v1::WorkerStatus s = WorkerStatusOf(address, prefill);
  if (prefill) return s.running() == 0 && s.queued_prompt_tokens() == 0;
  return s.reservations() == 0 && s.state_slots_used() == 0 && s.kv_tokens_used() == 0 &&
         s.transfers_in_flight() == 0 && s.running() == 0 && s.buffered_bytes() == 0;
}

// Every worker of the cluster is idle. Releases happen asynchronously after a stream ends, so
// this re-reads the workers' status until they settle (bounded; each read is a real RPC).
inline bool ClusterSettlesIdle(cli::LocalCluster* cluster,
                               absl::Duration limit = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + limit;
  while (true) {
    bool idle = true;
    for (auto& m : cluster->members()) {
      if (m.role == "router" || m.process == nullptr || !m.process->running()) continue;
      idle = idle && WorkerIsIdle(m.address, m.role == "prefill");
    }
    if (idle) return true;
    if (absl::Now() > deadline) {
      for (auto& m : cluster->members()) {
        if (m.role == "router" || m.process == nullptr || !m.process->running()) continue;
        ADD_FAILURE() << m.role << " " << m.address << " still holds: "
                      << WorkerStatusOf(m.address, m.role == "prefill").ShortDebugString();
      }
      return false;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// Re-reads the router's GetClusterStatus until `done` holds for it (bounded): the router polls
// its workers, so what they report appears after a poll.
inline bool RouterStatusUntil(const std::string& router,
                              const std::function<bool(const ringserve::v1::ClusterStatus&)>& done,
                              absl::Duration limit = absl::Seconds(20)) {
  auto stub = ringserve::v1::Admin::NewStub(
      grpc::CreateChannel(router, grpc::InsecureChannelCredentials()));
  const absl::Time deadline = absl::Now() + limit;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    ringserve::v1::ClusterStatus status;
    if (stub->GetClusterStatus(&ctx, {}, &status).ok() && done(status)) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

// Whether the router's own view shows `count` healthy workers of `role` (a restarted one
// appears after a poll).
inline bool RouterSeesHealthy(const std::string& router, const std::string& role, int count,
                              absl::Duration limit = absl::Seconds(20)) {
  return RouterStatusUntil(
      router,
      [&](const ringserve::v1::ClusterStatus& status) {
        int healthy = 0;
        for (const auto& w : status.workers()) healthy += w.role() == role && w.healthy();
        return healthy == count;
      },
      limit);
}

// GET of http://127.0.0.1:PORT/metrics, body only.
inline std::string Scrape(const std::string& url) {
  const std::string hostport = url.substr(std::string("http://").size());
  const int port = std::stoi(hostport.substr(hostport.find(':') + 1));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  EXPECT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  ::close(fd);
  const size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? out : out.substr(body + 4);
}

// The value of the sample `series` (name with its labels, as printed), or -1.
inline double Value(const std::string& text, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, series + " ")) {
      double v;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
    }
  }
  return -1;
}

}  // namespace ringserve::testing
