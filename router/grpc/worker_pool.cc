#include "router/grpc/worker_pool.h"

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

absl::StatusOr<std::unique_ptr<WorkerPool>> WorkerPool::Create(const Options& options,
                                                               core::Timers* timers,
                                                               TaskRunner* blocking) {
  if (options.targets.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", options.role, " pool has no worker addresses"));
  }
  std::unique_ptr<WorkerPool> pool(new WorkerPool(options, timers, blocking));
  ASSIGN_OR_RETURN(pool->creds_, rpc::ChannelCredentials(options.tls));
  return pool;
}

WorkerPool::~WorkerPool() {
  core::Timers::Id tick;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    tick = tick_;
  }
  timers_->Cancel(tick);
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return !polling_; });
}

void WorkerPool::Start(std::function<void()> on_poll) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_poll_ = std::move(on_poll);
    started_ = true;
  }
  RefreshNow(nullptr);
}

void WorkerPool::RefreshAndWait() {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  RefreshNow([&] {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done; });
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

void WorkerPool::UpdateHandles(const std::vector<std::string>& addresses) {
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

void WorkerPool::RefreshNow(std::function<void()> done) {
  bool start = false;
  bool resolve = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      if (done) blocking_->Post(std::move(done));
      return;
    }
    if (done) waiters_.push_back(std::move(done));
    if (!polling_) {
      polling_ = true;
      start = true;
      resolve = absl::Now() >= next_resolve_;
      if (resolve) next_resolve_ = absl::Now() + options_.resolve_interval;
    }
  }
  if (!start) return;  // joins the poll in flight
  if (resolve) {
    blocking_->Post([this] {
      UpdateHandles(Resolve());
      PollAll();
    });
    return;
  }
  PollAll();
}

namespace {

// One asynchronous GetStatus call.
struct StatusCall {
  grpc::ClientContext ctx;
  internal::v1::StatusRequest request;
  internal::v1::WorkerStatus response;
};

}  // namespace

void WorkerPool::PollAll() {
  std::vector<std::shared_ptr<WorkerHandle>> handles;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [address, h] : handles_) handles.push_back(h);
    pending_ = static_cast<int>(handles.size());
  }
  if (handles.empty()) {
    EndPoll();
    return;
  }
  for (const auto& h : handles) {
    auto* call = new StatusCall;
    call->ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    auto on_done = [this, call, address = h->address](grpc::Status s) {
      OnStatus(address, s, call->response);
      delete call;
      bool last;
      {
        std::lock_guard<std::mutex> lock(mu_);
        last = --pending_ == 0;
      }
      if (last) EndPoll();
    };
    if (options_.role == "prefill") {
      h->prefill->async()->GetStatus(&call->ctx, &call->request, &call->response, on_done);
    } else {
      h->decode->async()->GetStatus(&call->ctx, &call->request, &call->response, on_done);
    }
  }
}

void WorkerPool::OnStatus(const std::string& address, const grpc::Status& s,
                          const internal::v1::WorkerStatus& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (handles_.count(address) == 0) return;
  core::WorkerView& view = views_[address];
  const bool was_healthy = view.healthy;
  view.address = address;
  view.healthy = s.ok() && status.ready();
  view.error = s.ok() ? (status.ready() ? "" : "not ready") : s.error_message();
  if (s.ok()) {
    view.status = status;
    view.inflight_tokens = 0;
    view.last_seen = timers_->Now();
    if (view.epoch != 0 && view.epoch != status.epoch()) {
      RS_LOG(kInfo) << "event=worker_restarted pool=" << options_.role << " address=" << address
                    << " epoch=" << status.epoch();
    }
    view.epoch = status.epoch();
  }
  if (was_healthy != view.healthy) {
    RS_LOG(kInfo) << "event=worker_health pool=" << options_.role << " address=" << address
                  << " healthy=" << view.healthy << " error=" << base::Quote(view.error);
  }
}

void WorkerPool::EndPoll() {
  std::vector<std::function<void()>> waiters;
  std::function<void()> on_poll;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiters.swap(waiters_);
    on_poll = on_poll_;
    if (!stop_ && started_ && tick_ == 0) {
      tick_ = timers_->At(absl::Now() + options_.poll_interval, [this] {
        {
          std::lock_guard<std::mutex> lock(mu_);
          tick_ = 0;
        }
        RefreshNow(nullptr);
      });
    }
    polling_ = false;
    idle_cv_.notify_all();
  }
  for (auto& w : waiters) w();
  if (on_poll) on_poll();
}

std::vector<core::WorkerView> WorkerPool::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<core::WorkerView> out;
  for (const auto& [address, h] : handles_) {
    auto it = views_.find(address);
    core::WorkerView view = it != views_.end() ? it->second : core::WorkerView{};
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
