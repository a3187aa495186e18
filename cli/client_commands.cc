// ringctl commands that talk to a running cluster: generate --router, status, cluster up.
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/cluster.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "cli/token_ids.h"
#include "common/base/flags.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "common/rpc/server.h"
#include "common/rpc/status.h"
#include "common/rpc/tls.h"
#include "ringserve/v1/generation.grpc.pb.h"

namespace ringserve::cli {
namespace {

using ringserve::v1::GenerateRequest;
using ringserve::v1::GenerateResponse;

void AddClientFlags(base::FlagSet* flags) {
  flags->String("router", "127.0.0.1:50051", "router address");
  flags->String("api-token-file", "", "file holding the bearer token");
  rpc::AddTlsFlags(flags);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const base::FlagSet& flags) {
  return rpc::MakeChannel(flags.Get("router"), rpc::TlsFromFlags(flags));
}

absl::Status AddToken(const base::FlagSet& flags, grpc::ClientContext* ctx) {
  if (flags.Get("api-token-file").empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string token, base::ReadFileToString(flags.Get("api-token-file")));
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  ctx->AddMetadata("authorization", "Bearer " + token);
  return absl::OkStatus();
}

void ProgressBar(uint32_t done, uint32_t total) {
  constexpr int kWidth = 40;
  const int filled = total == 0 ? kWidth : static_cast<int>(int64_t{kWidth} * done / total);
  std::fprintf(stderr, "\rprefill [%s%s] %u/%u tokens", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), done, total);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

absl::Status GenerateRemote(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl generate --router");
  AddClientFlags(&flags);
  flags.String("prompt", "", "prompt text");
  flags.String("prompt-file", "", "file holding the prompt text");
  AddTokenIdFlags(&flags, "prompt-tokens");
  flags.String("max-tokens", "64", "tokens to generate");
  flags.String("stop", "", "a stop string");
  flags.Bool("ignore-eos", false, "do not stop at the model's eos ids");
  flags.Bool("ids", false, "print the generated ids as JSON at the end");
  flags.Bool("quiet", false, "no progress bar or timings");
  flags.String("timeout-s", "0", "request deadline in seconds (0 = none)");
  flags.String("cache-salt", "",
               "prefix-cache namespace (prompts share cached prefixes only "
               "with the same salt)");
  AddSamplingFlags(&flags);
  RETURN_IF_ERROR(flags.Parse(args));
  GenerateRequest req;
  req.set_cache_salt(flags.Get("cache-salt"));
  if (HasTokenIds(flags, "prompt-tokens")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> ids, TokenIds(flags, "prompt-tokens"));
    for (int64_t id : ids) req.mutable_token_ids()->add_ids(static_cast<uint32_t>(id));
  } else if (!flags.Get("prompt-file").empty()) {
    ASSIGN_OR_RETURN(*req.mutable_text(), base::ReadFileToString(flags.Get("prompt-file")));
  } else if (!flags.Get("prompt").empty()) {
    req.set_text(flags.Get("prompt"));
  } else {
    return absl::InvalidArgumentError("give --prompt, --prompt-file or --prompt-tokens");
  }
  ASSIGN_OR_RETURN(const int64_t max_tokens, flags.GetInt("max-tokens"));
  ASSIGN_OR_RETURN(const double temperature, flags.GetDouble("temperature"));
  ASSIGN_OR_RETURN(const int64_t top_k, flags.GetInt("top-k"));
  ASSIGN_OR_RETURN(const double top_p, flags.GetDouble("top-p"));
  ASSIGN_OR_RETURN(const double min_p, flags.GetDouble("min-p"));
  ASSIGN_OR_RETURN(const int64_t seed, flags.GetInt("seed"));
  ASSIGN_OR_RETURN(const int64_t timeout_s, flags.GetInt("timeout-s"));
  req.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(max_tokens));
  req.mutable_stopping()->set_ignore_eos(flags.GetBool("ignore-eos"));
  if (!flags.Get("stop").empty()) req.mutable_stopping()->add_stop(flags.Get("stop"));
  req.mutable_sampling()->set_temperature(static_cast<float>(temperature));
  req.mutable_sampling()->set_top_k(static_cast<int32_t>(top_k));
  req.mutable_sampling()->set_top_p(static_cast<float>(top_p));
  req.mutable_sampling()->set_min_p(static_cast<float>(min_p));
  if (flags.IsSet("seed")) req.mutable_sampling()->set_seed(static_cast<uint64_t>(seed));
  const bool quiet = flags.GetBool("quiet");
  req.set_prefill_progress(!quiet);

  ASSIGN_OR_RETURN(auto channel, Connect(flags));
  auto stub = ringserve::v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  RETURN_IF_ERROR(AddToken(flags, &ctx));
  if (timeout_s > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  }
  // Ctrl-C cancels the request: a thread waits for the signal and cancels the call.
  std::mutex mu;
  bool finished = false;
  std::thread canceller([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    int sig;
    sigwait(&set, &sig);
    std::lock_guard<std::mutex> lock(mu);
    if (!finished) ctx.TryCancel();
  });
  auto reader = stub->Generate(&ctx, req);
  GenerateResponse resp;
  std::vector<uint32_t> ids;
  std::optional<ringserve::v1::Finished> end;
  uint32_t progress_total = 0;
  while (reader->Read(&resp)) {
    if (resp.has_progress()) {
      progress_total = resp.progress().tokens_total();
      if (!quiet) ProgressBar(resp.progress().tokens_done(), progress_total);
    } else if (resp.has_delta()) {
      // The prefill is over once the first token arrives: complete the bar.
      if (!quiet && ids.empty() && progress_total > 0) {
        ProgressBar(progress_total, progress_total);
      }
      ids.insert(ids.end(), resp.delta().token_ids().begin(), resp.delta().token_ids().end());
      std::fwrite(resp.delta().text().data(), 1, resp.delta().text().size(), stdout);
      std::fflush(stdout);
    } else if (resp.has_finished()) {
      end = resp.finished();
    }
  }
  const grpc::Status status = reader->Finish();
  {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
  }
  pthread_kill(canceller.native_handle(), SIGUSR1);
  canceller.join();
  std::printf("\n");
  std::fflush(stdout);
  if (flags.GetBool("ids")) std::printf("{\"ids\": [%s]}\n", absl::StrJoin(ids, ", ").c_str());
  if (!status.ok()) return rpc::FromGrpc(status);
  if (end.has_value() && !quiet) {
    const auto& t = end->timings();
    std::fprintf(stderr,
                 "finish=%s prompt_tokens=%u cached_prompt_tokens=%u completion_tokens=%u\n"
                 "timings_ms: queue=%.1f prefill=%.1f transfer=%.1f decode=%.1f total=%.1f\n",
                 ringserve::v1::FinishReason_Name(end->reason()).c_str(),
                 end->usage().prompt_tokens(), end->usage().cached_prompt_tokens(),
                 end->usage().completion_tokens(), t.queue_us() / 1e3, t.prefill_us() / 1e3,
                 t.transfer_us() / 1e3, t.decode_us() / 1e3, t.total_us() / 1e3);
  }
  return absl::OkStatus();
}

absl::Status Status(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl status");
  AddClientFlags(&flags);
  flags.Bool("watch", false, "refresh every second until interrupted");
  RETURN_IF_ERROR(flags.Parse(args));
  ASSIGN_OR_RETURN(auto channel, Connect(flags));
  auto stub = ringserve::v1::Admin::NewStub(channel);
  while (true) {
    grpc::ClientContext ctx;
    RETURN_IF_ERROR(AddToken(flags, &ctx));
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    ringserve::v1::ClusterStatus status;
    RETURN_IF_ERROR(rpc::FromGrpc(stub->GetClusterStatus(&ctx, {}, &status)));
    std::string out =
        absl::StrFormat("%-8s %-24s %-8s %-20s %12s %12s %8s %-28s  %s\n", "ROLE", "ADDRESS",
                        "HEALTH", "EPOCH", "LOAD", "CAPACITY", "RUNNING", "PREFIX CACHE", "ERROR");
    for (const auto& w : status.workers()) {
      // Prefill workers with a prefix cache: MiB used / bound, and the prefixes they listed.
      const std::string cache =
          w.prefix_cache_limit_bytes() == 0
              ? "-"
              : absl::StrFormat("%.1f/%.0f MiB %d prefixes", w.prefix_cache_bytes() / 1048576.0,
                                w.prefix_cache_limit_bytes() / 1048576.0,
                                w.prefix_cache_prefixes());
      absl::StrAppend(
          &out, absl::StrFormat("%-8s %-24s %-8s %-20d %12d %12d %8d %-28s  %s\n", w.role(),
                                w.address(), w.healthy() ? "healthy" : "DOWN", w.epoch(), w.load(),
                                w.capacity(), w.running(), cache, w.error()));
    }
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
    if (!flags.GetBool("watch")) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    std::fputs("\n", stdout);
  }
}

// `dir` (made when missing), or a fresh directory under $TMPDIR (or /tmp) when empty.
absl::StatusOr<std::string> LogDirectory(const std::string& dir) {
  if (dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/ringserve-cluster-XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) {
      return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
    }
    return pattern;
  }
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-dir ", dir, " cannot be made: ", error.message()));
  }
  return dir;
}

absl::Status ClusterUp(const std::vector<std::string>& args) {
  const bool up = !args.empty() && args[0] == "up";
  base::FlagSet flags("ringctl cluster up");
  flags.String("model", "", "checkpoint directory");
  flags.String("prefill", "1", "prefill workers");
  flags.String("decode", "1", "decode workers");
  flags.String("port", "50051", "router port");
  flags.String("routers", "1", "router replicas (the first on --port, the others on free ports)");
  flags.String("threads", "0", "CPU threads per worker (0 = all cores)");
  flags.String("device", "cpu", "cpu or cuda");
  flags.String("log-dir", "",
               "directory for each process's log (<role>-<index>.log); default: a fresh one "
               "under $TMPDIR, printed at start");
  RETURN_IF_ERROR(flags.Parse(std::vector<std::string>(args.begin() + (up ? 1 : 0), args.end())));
  if (!up) return absl::InvalidArgumentError(absl::StrCat("the command is 'up'\n", flags.Usage()));
  if (flags.Get("model").empty()) return absl::InvalidArgumentError("--model is required");
  LocalCluster::Options options;
  options.bin_dir = SelfDirectory();
  options.model_dir = flags.Get("model");
  ASSIGN_OR_RETURN(const int64_t prefill, flags.GetInt("prefill"));
  ASSIGN_OR_RETURN(const int64_t decode, flags.GetInt("decode"));
  ASSIGN_OR_RETURN(const int64_t port, flags.GetInt("port"));
  ASSIGN_OR_RETURN(const int64_t routers, flags.GetInt("routers"));
  if (prefill < 1 || decode < 1 || routers < 1) {
    return absl::InvalidArgumentError("--prefill, --decode and --routers must be at least 1");
  }
  options.routers = static_cast<int>(routers);
  options.prefill = static_cast<int>(prefill);
  options.decode = static_cast<int>(decode);
  options.router_port = static_cast<int>(port);
  options.worker_args = {"--threads=" + flags.Get("threads"), "--device=" + flags.Get("device"),
                         "--metrics-port=0"};
  options.router_args = {"--metrics-port=0"};
  ASSIGN_OR_RETURN(options.log_dir, LogDirectory(flags.Get("log-dir")));
  std::printf("logs: %s\n", options.log_dir.c_str());
  std::fflush(stdout);
  rpc::BlockTerminationSignals();
  ASSIGN_OR_RETURN(auto cluster, LocalCluster::Start(options));
  for (const auto& m : cluster->members()) {
    std::printf("%-8s %d  pid=%d  grpc=%s  metrics=%s\n", m.role.c_str(), m.index, m.process->pid(),
                m.address.c_str(), m.metrics_url.empty() ? "-" : m.metrics_url.c_str());
  }
  std::printf("cluster up; router at %s (Ctrl-C stops it)\n",
              absl::StrJoin(cluster->router_addresses(), ", ").c_str());
  std::fflush(stdout);
  rpc::WaitForTerminationSignal();
  std::printf("stopping\n");
  cluster->Stop(absl::Seconds(30));
  std::printf("stopped; logs in %s\n", options.log_dir.c_str());
  return absl::OkStatus();
}

}  // namespace

int RunGenerateRemote(const std::vector<std::string>& args) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return Report(GenerateRemote(args));
}
int RunStatus(const std::vector<std::string>& args) { return Report(Status(args)); }
int RunCluster(const std::vector<std::string>& args) { return Report(ClusterUp(args)); }

}  // namespace ringserve::cli
