#include "router/worker_pool.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/logging.h"
#include "common/base/status_macros.h"
#include "common/rpc/server.h"

namespace ringserve::router {

std::vector<std::string> SplitTargets(const std::string& list) {
  std::vector<std::string> out;
  for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    out.emplace_back(part);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const Options& options) {
  if (options.targets.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", options.role, " pool has no worker addresses"));
  }
  std::unique_ptr<WorkerPool> pool(new WorkerPool(options));
  ASSIGN_OR_RETURN(pool->creds_, rpc::ChannelCredentials(options.tls));
  pool->Refresh();
  pool->thread_ = std::thread([p = pool.get()] { p->Loop(); });
  return pool;
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<std::string> WorkerPool::Resolve() const {
  std::vector<std::string> out;
  for (const std::string& target : options_.targets) {
    constexpr absl::string_view kDns = "dns:///";
    if (!absl::StartsWith(target, kDns)) {
      out.push_back(target);
      continue;
    }
    const std::string hostport = target.substr(kDns.size());
    const size_t colon = hostport.rfind(':');
    if (colon == std::string::npos) continue;
    const std::string host = hostport.substr(0, colon);
    const std::string port = hostport.substr(colon + 1);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) {
      RS_LOG(kWarning) << "event=resolve_failed pool=" << options_.role << " target=" << target;
      continue;
    }
    std::set<std::string> seen;
    for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
      char ip[INET6_ADDRSTRLEN] = {0};
      if (a->ai_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, ip, sizeof(ip));
        seen.insert(absl::StrCat(ip, ":", port));
      } else if (a->ai_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, ip,
                  sizeof(ip));
        seen.insert(absl::StrCat("[", ip, "]:", port));
      }
    }
    freeaddrinfo(res);
    out.insert(out.end(), seen.begin(), seen.end());
  }
  return out;
}

void WorkerPool::Refresh() {
  std::lock_guard<std::mutex> refresh_lock(refresh_mu_);
  bool resolve;
  {
    std::lock_guard<std::mutex> lock(mu_);
    resolve = absl::Now() >= next_resolve_;
    if (resolve) next_resolve_ = absl::Now() + options_.resolve_interval;
  }
  if (resolve) {
    const std::vector<std::string> addresses = Resolve();
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, std::shared_ptr<WorkerHandle>> next;
    for (const std::string& address : addresses) {
      auto it = handles_.find(address);
      if (it != handles_.end()) {
        next[address] = it->second;
        continue;
      }
      auto h = std::make_shared<WorkerHandle>();
      h->address = address;
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(64 << 20);
      args.SetMaxSendMessageSize(64 << 20);
      // A restarted worker should be found within a poll or two, not after gRPC's default
      // reconnect backoff (which grows to minutes).
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
      h->channel = grpc::CreateCustomChannel(address, creds_, args);
      h->prefill = internal::v1::Prefill::NewStub(h->channel);
      h->decode = internal::v1::Decode::NewStub(h->channel);
      next[address] = h;
    }
    handles_.swap(next);
    std::erase_if(views_, [&](const auto& kv) { return handles_.count(kv.first) == 0; });
  }
  std::vector<std::shared_ptr<WorkerHandle>> handles;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [address, h] : handles_) handles.push_back(h);
  }
  for (const auto& h : handles) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     absl::ToChronoMilliseconds(options_.rpc_timeout));
    internal::v1::StatusRequest req;
    internal::v1::WorkerStatus status;
    const grpc::Status s = options_.role == "prefill" ? h->prefill->GetStatus(&ctx, req, &status)
                                                      : h->decode->GetStatus(&ctx, req, &status);
    std::lock_guard<std::mutex> lock(mu_);
    WorkerView& view = views_[h->address];
    const bool was_healthy = view.healthy;
    view.address = h->address;
    view.healthy = s.ok() && status.ready();
    view.error = s.ok() ? (status.ready() ? "" : "not ready") : s.error_message();
    if (s.ok()) {
      view.status = status;
      view.inflight_tokens = 0;
      if (view.epoch != 0 && view.epoch != status.epoch()) {
        RS_LOG(kInfo) << "event=worker_restarted pool=" << options_.role
                      << " address=" << h->address << " epoch=" << status.epoch();
      }
      view.epoch = status.epoch();
    }
    if (was_healthy != view.healthy) {
      RS_LOG(kInfo) << "event=worker_health pool=" << options_.role << " address=" << h->address
                    << " healthy=" << view.healthy << " error=" << base::Quote(view.error);
    }
  }
}

void WorkerPool::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.poll_interval), [&] { return stop_; });
      if (stop_) return;
    }
    Refresh();
  }
}

void WorkerPool::RefreshNow() { Refresh(); }

std::vector<WorkerView> WorkerPool::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerView> out;
  for (const auto& [address, h] : handles_) {
    auto it = views_.find(address);
    WorkerView view = it != views_.end() ? it->second : WorkerView{};
    view.address = address;
    out.push_back(std::move(view));
  }
  return out;
}

std::shared_ptr<WorkerHandle> WorkerPool::Handle(const std::string& address) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = handles_.find(address);
  return it == handles_.end() ? nullptr : it->second;
}

void WorkerPool::AddAssigned(const std::string& address, int64_t tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  views_[address].inflight_tokens += tokens;
}

void WorkerPool::ReportFailure(const std::string& address, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = views_.find(address);
  if (it == views_.end()) return;
  it->second.healthy = false;
  it->second.error = error;
}

}  // namespace ringserve::router
