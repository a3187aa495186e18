// A bounded soak: 200 concurrent client streams through a router with 2 prefill and 2 decode
// workers (real processes on loopback) for a fixed time. Every answer must be correct (status
// OK, the requested number of tokens, the same tokens as the engine run in this process), the
// resident memory of every server process, sampled at idle points after the warm-up, halfway and
// at the end, must not grow with the request count, and no worker may hold a reservation, slot,
// KV token, transfer or job at any of them. Throughput and latency figures are printed and recorded
// as test properties, never asserted (the machines running this are shared and noisy).
//
// RINGSERVE_SOAK_SECONDS overrides the length of the measured phase (default 45) for a longer
// soak by hand.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <latch>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model/generate.h"
#include "common/model/model.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

constexpr int kStreams = 200;
// Each stream runs this many requests before the measured phase; the cluster then goes idle
// and the "before" memory is sampled. 1000 requests at full concurrency touch the buffer pools,
// thread stacks and malloc arenas the servers use at 200 streams (measured here: after 400
// warm-up requests the workers still grew ~5 MiB early in the measured phase, then stayed flat
// over 4 minutes).
constexpr int kWarmupRequestsPerStream = 5;
// Distinct requests the streams draw from: repeats let the test check that one request gets
// the same tokens whatever else is batched with it, and keep the offline check cheap.
constexpr int kSpecs = 64;
// Channels (separate HTTP/2 connections) the streams are spread over.
constexpr int kChannels = 4;

uint64_t Mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Spec {
  std::vector<uint32_t> prompt;  // 16..256 tokens
  uint32_t max_tokens;           // 8..32
  float temperature;             // even specs greedy, odd ones seeded sampling
  uint64_t seed;
  ringserve::v1::GenerateRequest request;
};

Spec MakeSpec(int j) {
  Spec s;
  const uint64_t h = Mix(static_cast<uint64_t>(j) + 12345);
  s.prompt = PromptOf(16 + static_cast<int>(h % 241), j);
  s.max_tokens = 8 + static_cast<uint32_t>((h >> 16) % 25);
  s.temperature = j % 2 == 0 ? 0.0f : 0.8f;
  s.seed = 1000 + j;
  s.request = TokenRequest(s.prompt, s.max_tokens, s.temperature, s.seed);
  if (j % 2 == 1) s.request.mutable_sampling()->set_top_k(20);
  return s;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

// What one stream saw.
struct StreamLog {
  int64_t requests[2] = {0, 0};  // per half of the measured phase
  int64_t tokens = 0;
  std::vector<double> ttft_ms, total_ms;
  std::vector<std::string> errors;  // every request counts, warm-up included
};

class SoakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MakeDefaultModel(dir_.path());
    for (int j = 0; j < kSpecs; ++j) specs_.push_back(MakeSpec(j));
  }

  // One request on `stub`; checks the answer and logs it.
  // `half` is the half of the measured phase, or -1 during the warm-up.
  void RunOne(ringserve::v1::Generation::Stub* stub, int spec_index, int half, StreamLog* log) {
    const Spec& spec = specs_[spec_index];
    grpc::ClientContext ctx;
    // Far above any latency of a healthy run; a stuck request ends as an error, not a hang.
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
    const absl::Time start = absl::Now();
    absl::Time first = absl::InfinitePast();
    auto reader = stub->Generate(&ctx, spec.request);
    std::vector<uint32_t> ids;
    std::optional<ringserve::v1::Finished> finished;
    ringserve::v1::GenerateResponse r;
    while (reader->Read(&r)) {
      if (r.has_delta() && r.delta().token_ids_size() > 0) {
        if (ids.empty()) first = absl::Now();
        ids.insert(ids.end(), r.delta().token_ids().begin(), r.delta().token_ids().end());
      }
      if (r.has_finished()) finished = r.finished();
    }
    const grpc::Status status = reader->Finish();
    const absl::Time end = absl::Now();
    std::string error;
    if (!status.ok()) {
      error = absl::StrCat("status ", status.error_code(), ": ", status.error_message());
    } else if (!finished.has_value()) {
      error = "stream ended without Finished";
    } else if (ids.size() != spec.max_tokens ||
               finished->usage().completion_tokens() != spec.max_tokens ||
               finished->reason() != ringserve::v1::FINISH_REASON_LENGTH) {
      error = absl::StrCat(ids.size(), " tokens, usage ", finished->usage().completion_tokens(),
                           ", reason ", finished->reason(), "; wanted ", spec.max_tokens,
                           " and LENGTH (ignore_eos is set)");
    } else if (finished->usage().prompt_tokens() != spec.prompt.size()) {
      error = absl::StrCat("usage.prompt_tokens ", finished->usage().prompt_tokens(),
                           " != ", spec.prompt.size());
    } else {
      std::lock_guard<std::mutex> lock(mu_);
      auto [it, inserted] = answers_.emplace(spec_index, ids);
      if (!inserted && it->second != ids) {
        error = absl::StrCat("spec ", spec_index, " answered [", absl::StrJoin(ids, ","),
                             "], earlier [", absl::StrJoin(it->second, ","), "]");
      }
    }
    if (!error.empty()) {
      log->errors.push_back(absl::StrCat("spec ", spec_index, ": ", error));
      return;
    }
    if (half < 0) return;
    ++log->requests[half];
    log->tokens += static_cast<int64_t>(ids.size());
    log->ttft_ms.push_back(absl::ToDoubleMilliseconds(first - start));
    log->total_ms.push_back(absl::ToDoubleMilliseconds(end - start));
  }

  std::vector<uint32_t> Offline(model::HybridModel* model, const Spec& spec) {
    model::GenerateOptions options;
    options.max_tokens = spec.max_tokens;
    options.ignore_eos = true;
    options.sampling.temperature = spec.temperature;
    options.sampling.top_k = spec.request.sampling().top_k();
    options.sampling.seed = spec.seed;
    std::vector<int32_t> p(spec.prompt.begin(), spec.prompt.end());
    auto out = model::Generate(model, p, options, nullptr);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::vector<uint32_t>(out->begin(), out->end()) : std::vector<uint32_t>{};
  }

  TempDir dir_;
  std::vector<Spec> specs_;
  std::mutex mu_;
  std::map<int, std::vector<uint32_t>> answers_;  // first answer seen per spec
};

TEST_F(SoakTest, TwoHundredStreamsZeroErrorsFlatMemoryIdleAtTheEnd) {
  absl::Duration measured = absl::Seconds(45);
  if (const char* env = std::getenv("RINGSERVE_SOAK_SECONDS"); env != nullptr) {
    int64_t s;
    if (absl::SimpleAtoi(env, &s) && s > 0) measured = absl::Seconds(s);
  }

  auto options = ClusterOptions(dir_.path(), 2, 2);
  // Admission limits well above 200 streams: the router's in-flight set and a decode worker's
  // reservations are released a moment after the client sees its stream end, so a stream's
  // next request can briefly overlap its previous one; each decode worker alone can hold every
  // stream (--max-seqs; the defaults are 256 in flight and 64 slots per worker). KV: 256
  // reservations of at most 256 + 32 tokens fit well within the default 1M tokens.
  options.decode_args = {"--max-seqs=256"};
  options.router_args.push_back("--max-inflight=512");
  auto started = cli::LocalCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  cli::LocalCluster* cluster = started->get();

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int c = 0; c < kChannels; ++c) {
    grpc::ChannelArguments args;
    // A channel of its own subchannel pool is a connection of its own.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(grpc::CreateCustomChannel(cluster->router_address(),
                                                 grpc::InsecureChannelCredentials(), args));
  }

  // Warm-up, then the measured phase in two halves. Between phases every stream stops, the
  // cluster goes idle and memory is sampled: `arrived[h]` counts the streams done with the
  // phase before half h, `go[h]` opens half h.
  std::vector<StreamLog> logs(kStreams);
  std::latch done_before_half0(kStreams), done_before_half1(kStreams);
  std::latch go0(1), go1(1);
  std::latch* arrived[2] = {&done_before_half0, &done_before_half1};
  std::latch* go[2] = {&go0, &go1};
  absl::Time half_end[2];  // each written before its `go` opens
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      auto stub = ringserve::v1::Generation::NewStub(channels[s % kChannels]);
      uint64_t k = 0;
      auto next_spec = [&] { return static_cast<int>(Mix((uint64_t(s) << 32) | k++) % kSpecs); };
      for (int i = 0; i < kWarmupRequestsPerStream; ++i) {
        RunOne(stub.get(), next_spec(), /*half=*/-1, &logs[s]);
      }
      for (int h = 0; h < 2; ++h) {
        arrived[h]->count_down();
        go[h]->wait();
        while (absl::Now() < half_end[h]) RunOne(stub.get(), next_spec(), h, &logs[s]);
      }
    });
  }

  std::vector<cli::LocalCluster::Member*> members;
  for (auto& m : cluster->members()) members.push_back(&m);
  auto sample = [&] {
    std::vector<base::ProcessUsage> out;
    for (auto* m : members) out.push_back(base::UsageOf(m->process->pid()));
    return out;
  };

  std::vector<base::ProcessUsage> idle[3];  // after the warm-up, after half 0, after half 1
  absl::Duration elapsed;                   // of the two halves, without the pauses between them
  for (int h = 0; h < 2; ++h) {
    arrived[h]->wait();
    EXPECT_TRUE(ClusterSettlesIdle(cluster));
    idle[h] = sample();
    const absl::Time start = absl::Now();
    half_end[h] = start + measured / 2;
    go[h]->count_down();
    if (h == 1) {
      for (auto& t : threads) t.join();
    } else {
      arrived[1]->wait();
    }
    elapsed += absl::Now() - start;  // arrived[1] is open now; its wait above returns at once
  }
  EXPECT_TRUE(ClusterSettlesIdle(cluster));
  idle[2] = sample();
  const std::vector<base::ProcessUsage>& before = idle[0];
  const std::vector<base::ProcessUsage>& after = idle[2];

  // Zero errors.
  int64_t requests = 0, tokens = 0, errors = 0;
  int64_t half_requests[2] = {0, 0};
  std::vector<double> ttft, total;
  std::vector<std::string> first_errors;
  for (const StreamLog& l : logs) {
    requests += l.requests[0] + l.requests[1];
    half_requests[0] += l.requests[0];
    half_requests[1] += l.requests[1];
    tokens += l.tokens;
    errors += static_cast<int64_t>(l.errors.size());
    ttft.insert(ttft.end(), l.ttft_ms.begin(), l.ttft_ms.end());
    total.insert(total.end(), l.total_ms.begin(), l.total_ms.end());
    for (const auto& e : l.errors) {
      if (first_errors.size() < 10) first_errors.push_back(e);
    }
  }
  EXPECT_EQ(errors, 0) << "first errors:\n  " << absl::StrJoin(first_errors, "\n  ");
  EXPECT_GT(requests, kStreams) << "every stream should finish at least one measured request";

  // The answers equal the engine run in this process, token for token (batching, the choice of
  // worker and the load must not change them).
  {
    kernels::CpuBackend backend(1);
    auto model = model::HybridModel::Load(dir_.path(), &backend, {});
    ASSERT_TRUE(model.ok()) << model.status();
    for (const auto& [j, ids] : answers_) {
      EXPECT_EQ(ids, Offline(model->get(), specs_[j])) << "spec " << j;
    }
  }

  // Memory, from three idle samples: after the warm-up (`before`), between the halves
  // (`middle`) and at the end (`after`), all taken with the cluster idle after the same
  // full-concurrency load. Idle RSS moves for two reasons:
  //  - a leak, which grows with the request count, in both halves;
  //  - glibc malloc keeping what a peak used: freed chunks inside an arena stay resident (only
  //    an arena's top is given back), so idle RSS sits on the highest peak of live memory so
  //    far, and a half whose load reaches a new peak (on a decode worker: more sequence states,
  //    up to ~120 KiB each, alive at once) steps it up once. Measured with malloc's own count
  //    (mallinfo2 read at idle in a decode worker fed by `ringctl bench` at 150 streams, 1000 to
  //    9000 requests): heap in use 1.29, 1.41, 1.45, 1.39, 1.39 MB, i.e. no growth per request,
  //    while the free bytes its arenas kept went 25.0 -> 27.6 MB and its RSS 51.9 -> 54.8 MiB in
  //    one step, then stayed within 0.5 MiB. In this test (5 runs on 2 shared cores, ~2200 to 2500
  //    requests a half), a half moved idle RSS by -3.9 to +8.8 MiB per decode worker, -0.7 to +4.2
  //    MiB in the router and +0.1 to +1.0 MiB per prefill worker, in steps: the other half of a
  //    step was at most +2.2 MiB (and fell by up to 3.9 MiB, which no leak does). A bound on the
  //    second half alone failed 1 run in 5 here (a decode worker +0.5 then +7.2 MiB) and once in CI
  //    (+6.1 MiB).
  // Checks:
  //  - Overall, `after` <= `before` + 10% + 8 MiB: a loose ceiling on anything that grows
  //    (measured up to +8.4 MiB, in a decode worker whose ceiling was +12.4 MiB).
  //  - At least one half adds at most 3 MiB + 1 KiB per request of that half. A peak step lands
  //    in one half, a leak grows both. With ~2300 requests a half, of which each worker serves
  //    about half, it fails a leak of more than ~2.4 KiB per request in the router and ~4.7 KiB
  //    per request served in a worker: 6 KiB leaked per sequence in the decode workers (tried by
  //    hand) grew them +6.4 to +9.7 MiB in every half against bounds of 5.0 and 5.1 MiB, and
  //    failed both checks. The leak this test found (the router kept every finished request, ~3.4
  //    KiB each, alive through a shared_ptr cycle between its stream sink and request flow) grew
  //    the router +6.3 MiB in the second half and +15 MiB overall: it fails both checks. A longer
  //    RINGSERVE_SOAK_SECONDS makes the second check proportionally sharper.
  const std::vector<base::ProcessUsage>& middle = idle[1];
  std::vector<std::string> memory_lines;
  for (size_t i = 0; i < members.size(); ++i) {
    const auto* m = members[i];
    const std::string name = absl::StrCat(m->role, m->index);
    ASSERT_GT(before[i].rss_kib, 0) << name;
    ASSERT_GT(middle[i].rss_kib, 0) << name;
    ASSERT_GT(after[i].rss_kib, 0) << name;
    EXPECT_LE(after[i].rss_kib, before[i].rss_kib + before[i].rss_kib / 10 + 8 * 1024)
        << name << " grew from " << before[i].rss_kib << " KiB to " << after[i].rss_kib
        << " KiB over " << requests << " requests";
    bool a_half_within = false;
    std::vector<std::string> halves;
    for (int h = 0; h < 2; ++h) {
      const int64_t growth = idle[h + 1][i].rss_kib - idle[h][i].rss_kib;
      const int64_t bound = 3 * 1024 + half_requests[h];
      a_half_within = a_half_within || growth <= bound;
      halves.push_back(absl::StrCat(growth, " KiB over ", half_requests[h], " requests (bound ",
                                    bound, " KiB)"));
    }
    EXPECT_TRUE(a_half_within) << name << " grew in both halves, as a leak does: "
                               << absl::StrJoin(halves, ", then ");
    memory_lines.push_back(absl::StrFormat(
        "%s %.1f->%.1f->%.1f MiB (peak %.1f, threads %d->%d)", name, before[i].rss_kib / 1024.0,
        middle[i].rss_kib / 1024.0, after[i].rss_kib / 1024.0, after[i].hwm_kib / 1024.0,
        before[i].threads, after[i].threads));
    RecordProperty(name + "_rss_kib_before", std::to_string(before[i].rss_kib));
    RecordProperty(name + "_rss_kib_middle", std::to_string(middle[i].rss_kib));
    RecordProperty(name + "_rss_kib_after", std::to_string(after[i].rss_kib));
    RecordProperty(name + "_rss_kib_peak", std::to_string(after[i].hwm_kib));
  }

  const double seconds = absl::ToDoubleSeconds(elapsed);
  const double rps = static_cast<double>(requests) / seconds;
  const double tps = static_cast<double>(tokens) / seconds;
  const std::string summary = absl::StrFormat(
      "soak: %d streams, %.1f s: %d requests (%d errors), %.1f req/s, %.0f tokens/s; "
      "TTFT p50 %.0f ms p99 %.0f ms; total p50 %.0f ms p99 %.0f ms; halves %d+%d requests; "
      "RSS %s",
      kStreams, seconds, requests, errors, rps, tps, Percentile(ttft, 0.5), Percentile(ttft, 0.99),
      Percentile(total, 0.5), Percentile(total, 0.99), half_requests[0], half_requests[1],
      absl::StrJoin(memory_lines, ", "));
  std::printf("%s\n", summary.c_str());
  std::fflush(stdout);
  RecordProperty("streams", kStreams);
  RecordProperty("requests", std::to_string(requests));
  RecordProperty("errors", std::to_string(errors));
  RecordProperty("seconds", absl::StrFormat("%.1f", seconds));
  RecordProperty("requests_per_s", absl::StrFormat("%.1f", rps));
  RecordProperty("tokens_per_s", absl::StrFormat("%.0f", tps));
  RecordProperty("ttft_ms_p50", absl::StrFormat("%.0f", Percentile(ttft, 0.5)));
  RecordProperty("ttft_ms_p99", absl::StrFormat("%.0f", Percentile(ttft, 0.99)));
  RecordProperty("total_ms_p50", absl::StrFormat("%.0f", Percentile(total, 0.5)));
  RecordProperty("total_ms_p99", absl::StrFormat("%.0f", Percentile(total, 0.99)));
}

}  // namespace
}  // namespace ringserve::testing
