// ringctl bench: a serving benchmark against a router, in the manner of SGLang's bench_serving
// and vLLM's benchmark_serving. With --model it also times the engine in this process (prefill
// of the same prompt length, one decode step) so TTFT and inter-token latency are printed beside
// what the engine alone needs, measured in the same run. With --documents it runs a shared-prefix
// workload: each document is asked once (cold), then --requests questions on random documents
// (warm), reporting both TTFTs and the prefix-cache hit rate from usage.cached_prompt_tokens.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "common/base/flags.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "common/base/subprocess.h"
#include "common/rpc/server.h"
#include "common/rpc/status.h"
#include "nlohmann/json.hpp"
#include "ringserve/v1/generation.grpc.pb.h"

namespace ringserve::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Sample {
  bool ok = false;
  double ttft = 0;
  double e2e = 0;
  std::vector<double> itl;
  int output_tokens = 0;
  double transfer = 0;
  uint32_t cached = 0;  // prompt tokens restored from a prefix cache
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5));
  return v[i];
}

Sample RunOne(ringserve::v1::Generation::Stub* stub, const std::vector<uint32_t>& prompt,
              int output_len) {
  ringserve::v1::GenerateRequest req;
  for (uint32_t t : prompt) req.mutable_token_ids()->add_ids(t);
  req.mutable_stopping()->set_max_tokens(output_len);
  req.mutable_stopping()->set_ignore_eos(true);
  req.mutable_sampling()->set_temperature(0);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(30));
  const auto start = Clock::now();
  auto last = start;
  auto reader = stub->Generate(&ctx, req);
  ringserve::v1::GenerateResponse r;
  Sample s;
  while (reader->Read(&r)) {
    if (r.has_delta()) {
      const auto now = Clock::now();
      if (s.output_tokens == 0) {
        s.ttft = std::chrono::duration<double>(now - start).count();
      } else {
        s.itl.push_back(std::chrono::duration<double>(now - last).count());
      }
      last = now;
      s.output_tokens += r.delta().token_ids_size();
    }
    if (r.has_finished()) {
      s.transfer = r.finished().timings().transfer_us() / 1e6;
      s.cached = r.finished().usage().cached_prompt_tokens();
    }
  }
  s.ok = reader->Finish().ok();
  s.e2e = std::chrono::duration<double>(Clock::now() - start).count();
  return s;
}

absl::Status Bench(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl bench");
  flags.String("router", "127.0.0.1:50051",
               "router address; a comma list sends request i to router i modulo their number");
  flags.String("requests", "32", "requests to measure");
  flags.String("warmup", "2", "requests run first and not measured");
  flags.String("concurrency", "4", "requests in flight at once (when --rate is 0)");
  flags.String("rate", "0", "Poisson arrival rate in requests/s (0 = fixed concurrency)");
  flags.String("input-len", "512", "prompt tokens");
  flags.String("input-len-max", "0", "when above --input-len, prompt lengths are uniform in range");
  flags.String("output-len", "128", "generated tokens");
  flags.String("slo-ttft-ms", "0", "TTFT bound for goodput (0 = none)");
  flags.String("slo-itl-ms", "0", "inter-token latency (p99 per request) bound for goodput");
  flags.String("seed", "1", "prompt seed");
  flags.String("documents", "0",
               "shared-prefix workload: this many documents, each asked once first (cold), then "
               "--requests questions on random documents (warm); 0 = independent prompts");
  flags.String("document-len", "4096", "tokens of each document (with --documents)");
  flags.String("question-len", "128", "tokens of each question (with --documents)");
  flags.String("model", "", "also time the engine on this checkpoint for the ratios");
  flags.String("threads", "0", "engine threads for --model");
  flags.String("samples-out", "",
               "also write every measured request's TTFT, inter-token latencies, TPOT and "
               "end-to-end time (ms) to this JSON file");
  flags.String("router-pid", "0",
               "pid of a router on this machine: report its threads and resident memory, idle "
               "and at the peak of the run, and the memory per open stream");
  flags.Bool("json", false, "print one JSON object");
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(const int64_t requests, flags.GetInt("requests"));
  ASSIGN_OR_RETURN(const int64_t warmup, flags.GetInt("warmup"));
  ASSIGN_OR_RETURN(const int64_t concurrency, flags.GetInt("concurrency"));
  ASSIGN_OR_RETURN(const double rate, flags.GetDouble("rate"));
  ASSIGN_OR_RETURN(const int64_t input_len, flags.GetInt("input-len"));
  ASSIGN_OR_RETURN(const int64_t input_max, flags.GetInt("input-len-max"));
  ASSIGN_OR_RETURN(const int64_t output_len, flags.GetInt("output-len"));
  ASSIGN_OR_RETURN(const double slo_ttft, flags.GetDouble("slo-ttft-ms"));
  ASSIGN_OR_RETURN(const double slo_itl, flags.GetDouble("slo-itl-ms"));
  ASSIGN_OR_RETURN(const int64_t seed, flags.GetInt("seed"));
  ASSIGN_OR_RETURN(const int64_t router_pid, flags.GetInt("router-pid"));
  ASSIGN_OR_RETURN(const int64_t documents, flags.GetInt("documents"));
  ASSIGN_OR_RETURN(const int64_t document_len, flags.GetInt("document-len"));
  ASSIGN_OR_RETURN(const int64_t question_len, flags.GetInt("question-len"));
  if (documents < 0 || (documents > 0 && (document_len < 1 || question_len < 1))) {
    return absl::InvalidArgumentError(
        "--documents must be at least 0, --document-len and --question-len positive");
  }
  if (requests < 1 || concurrency < 1 || input_len < 1 || output_len < 1) {
    return absl::InvalidArgumentError(
        "--requests, --concurrency, --input-len and --output-len must be positive");
  }
  std::vector<std::unique_ptr<ringserve::v1::Generation::Stub>> stubs;
  for (absl::string_view router : absl::StrSplit(flags.Get("router"), ',', absl::SkipEmpty())) {
    ASSIGN_OR_RETURN(auto channel, rpc::MakeChannel(std::string(router), {}));
    stubs.push_back(ringserve::v1::Generation::NewStub(channel));
  }
  if (stubs.empty()) return absl::InvalidArgumentError("--router is empty");
  ringserve::v1::Generation::Stub* const stub = stubs.front().get();
  ringserve::v1::ModelInfo info;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    RETURN_IF_ERROR(rpc::FromGrpc(stub->GetModelInfo(&ctx, {}, &info)));
  }
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  auto random_tokens = [&](int64_t n) {
    std::vector<uint32_t> p(n);
    for (auto& t : p) t = static_cast<uint32_t>(rng() % info.vocab_size());
    return p;
  };
  std::vector<std::vector<uint32_t>> docs;
  for (int64_t d = 0; d < documents; ++d) docs.push_back(random_tokens(document_len));
  // A question on document `d`: the document, then fresh tokens.
  auto question = [&](size_t d) {
    std::vector<uint32_t> p = docs[d];
    const std::vector<uint32_t> q = random_tokens(question_len);
    p.insert(p.end(), q.begin(), q.end());
    return p;
  };
  auto prompt = [&]() {
    if (documents > 0) return question(rng() % docs.size());
    return random_tokens(input_max > input_len
                             ? std::uniform_int_distribution<int64_t>(input_len, input_max)(rng)
                             : input_len);
  };
  // Runs `ps` at the fixed concurrency or the arrival rate; each request's sample.
  auto run_all = [&](const std::vector<std::vector<uint32_t>>& ps) {
    std::vector<Sample> out(ps.size());
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    if (rate <= 0) {
      for (int64_t c = 0; c < concurrency; ++c) {
        threads.emplace_back([&] {
          for (size_t i; (i = next.fetch_add(1)) < ps.size();) {
            out[i] = RunOne(stubs[i % stubs.size()].get(), ps[i], static_cast<int>(output_len));
          }
        });
      }
    } else {
      std::exponential_distribution<double> gap(rate);
      for (size_t i = 0; i < ps.size(); ++i) {
        threads.emplace_back([&, i] {
          out[i] = RunOne(stubs[i % stubs.size()].get(), ps[i], static_cast<int>(output_len));
        });
        std::this_thread::sleep_for(std::chrono::duration<double>(gap(rng)));
      }
    }
    for (auto& t : threads) t.join();
    return out;
  };
  std::vector<Sample> cold;
  if (documents > 0) {
    // Every document once, in the measured phase's manner: the cold TTFTs.
    std::vector<std::vector<uint32_t>> first;
    for (size_t d = 0; d < docs.size(); ++d) first.push_back(question(d));
    cold = run_all(first);
  } else {
    for (int64_t i = 0; i < warmup; ++i) {
      RunOne(stub, prompt(), static_cast<int>(output_len));
    }
  }
  std::vector<std::vector<uint32_t>> prompts;
  for (int64_t i = 0; i < requests; ++i) prompts.push_back(prompt());
  // The router's threads and memory: idle now, and the largest seen while the streams run.
  const base::ProcessUsage router_idle =
      router_pid > 0 ? base::UsageOf(static_cast<pid_t>(router_pid)) : base::ProcessUsage{};
  base::ProcessUsage router_peak = router_idle;
  std::atomic<bool> running{true};
  std::thread sampler;
  if (router_pid > 0) {
    sampler = std::thread([&] {
      while (running) {
        const base::ProcessUsage u = base::UsageOf(static_cast<pid_t>(router_pid));
        router_peak.rss_kib = std::max(router_peak.rss_kib, u.rss_kib);
        router_peak.threads = std::max(router_peak.threads, u.threads);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  const auto start = Clock::now();
  const std::vector<Sample> samples = run_all(prompts);
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  running = false;
  if (sampler.joinable()) sampler.join();

  std::vector<double> ttft, itl, tpot, e2e, transfer;
  int64_t ok = 0, good = 0, out_tokens = 0, in_tokens = 0;
  for (int64_t i = 0; i < requests; ++i) {
    const Sample& s = samples[i];
    if (!s.ok) continue;
    ++ok;
    ttft.push_back(s.ttft);
    e2e.push_back(s.e2e);
    transfer.push_back(s.transfer);
    itl.insert(itl.end(), s.itl.begin(), s.itl.end());
    if (s.output_tokens > 1) tpot.push_back((s.e2e - s.ttft) / (s.output_tokens - 1));
    out_tokens += s.output_tokens;
    in_tokens += static_cast<int64_t>(prompts[i].size());
    const bool ttft_ok = slo_ttft <= 0 || s.ttft * 1e3 <= slo_ttft;
    const bool itl_ok = slo_itl <= 0 || Percentile(s.itl, 99) * 1e3 <= slo_itl;
    good += ttft_ok && itl_ok;
  }
  nlohmann::ordered_json out, samples_json;
  out["requests"] = requests;
  out["succeeded"] = ok;
  out["wall_seconds"] = wall;
  out["request_throughput"] = ok / wall;
  out["input_token_throughput"] = in_tokens / wall;
  out["output_token_throughput"] = out_tokens / wall;
  out["goodput"] = good / wall;
  for (const auto& [name, v] : {std::pair<const char*, std::vector<double>*>{"ttft_ms", &ttft},
                                {"itl_ms", &itl},
                                {"tpot_ms", &tpot},
                                {"e2e_ms", &e2e}}) {
    out[name] = {{"p50", Percentile(*v, 50) * 1e3},
                 {"p90", Percentile(*v, 90) * 1e3},
                 {"p99", Percentile(*v, 99) * 1e3}};
    std::vector<double> ms(*v);
    for (double& x : ms) x *= 1e3;
    samples_json[name] = ms;
  }
  if (documents > 0) {
    // Warm: the measured phase. Hit rate: restored tokens over the documents' tokens.
    std::vector<double> cold_ttft;
    for (const Sample& s : cold) {
      if (s.ok) cold_ttft.push_back(s.ttft);
    }
    int64_t cached = 0, hits = 0;
    for (const Sample& s : samples) {
      cached += s.ok ? s.cached : 0;
      hits += s.ok && s.cached > 0;
    }
    out["documents"] = documents;
    out["cold_requests_succeeded"] = static_cast<int64_t>(cold_ttft.size());
    out["cold_ttft_ms"] = {{"p50", Percentile(cold_ttft, 50) * 1e3},
                           {"p90", Percentile(cold_ttft, 90) * 1e3}};
    out["warm_ttft_ms"] = {{"p50", Percentile(ttft, 50) * 1e3},
                           {"p90", Percentile(ttft, 90) * 1e3}};
    out["warm_ttft_p50_over_cold"] = Percentile(ttft, 50) / Percentile(cold_ttft, 50);
    out["warm_requests_with_hits"] = hits;
    out["hit_rate_of_document_tokens"] =
        ok > 0 ? static_cast<double>(cached) / static_cast<double>(ok * document_len) : 0.0;
  }
  if (router_pid > 0) {
    const int64_t streams = rate <= 0 ? std::min(concurrency, requests) : requests;
    out["router_threads_idle"] = router_idle.threads;
    out["router_threads_peak"] = router_peak.threads;
    out["router_rss_idle_kib"] = router_idle.rss_kib;
    out["router_rss_peak_kib"] = router_peak.rss_kib;
    out["router_rss_kib_per_open_stream"] =
        static_cast<double>(router_peak.rss_kib - router_idle.rss_kib) / streams;
  }
  if (!flags.Get("samples-out").empty()) {
    RETURN_IF_ERROR(base::WriteStringToFile(flags.Get("samples-out"), samples_json.dump()));
  }
  if (!flags.Get("model").empty()) {
    // The engine alone, in this process: one prefill of the median prompt length and decode
    // steps at batch 1.
    base::FlagSet engine_flags("engine");
    AddEngineFlags(&engine_flags);
    RETURN_IF_ERROR(
        engine_flags.Parse({"--model=" + flags.Get("model"), "--threads=" + flags.Get("threads")}));
    ASSIGN_OR_RETURN(Engine engine, LoadEngine(engine_flags));
    std::vector<int32_t> p(prompts[0].begin(), prompts[0].end());
    ASSIGN_OR_RETURN(auto state, engine.model->NewState(static_cast<int64_t>(p.size()) + 64));
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(engine.model->Prefill(p, state.get(), 2048, model::LogitsMode::kLast, nullptr));
    const double prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<double> steps;
    model::SequenceState* states[] = {state.get()};
    int32_t token = 1;
    kernels::SamplingParams params{.temperature = 0};
    for (int i = 0; i < 32; ++i) {
      const auto s0 = Clock::now();
      RETURN_IF_ERROR(engine.model->DecodeStep(states, std::span<const int32_t>(&token, 1), &params,
                                               &token, nullptr));
      steps.push_back(std::chrono::duration<double>(Clock::now() - s0).count());
    }
    const double step = Percentile(steps, 50);
    const double limit_ttft = prefill_s + Percentile(transfer, 50);
    out["engine_prefill_ms"] = prefill_s * 1e3;
    out["median_transfer_ms"] = Percentile(transfer, 50) * 1e3;
    out["engine_decode_step_ms"] = step * 1e3;
    out["ttft_p50_over_engine_prefill_plus_transfer"] = Percentile(ttft, 50) / limit_ttft;
    out["itl_p50_over_engine_decode_step"] = Percentile(itl, 50) / step;
  }
  if (flags.GetBool("json")) {
    std::printf("%s\n", out.dump().c_str());
    return absl::OkStatus();
  }
  std::printf("%s\n", out.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace

int RunBench(const std::vector<std::string>& args) { return Report(Bench(args)); }

}  // namespace ringserve::cli
