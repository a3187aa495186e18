#include "common/rpc/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ringserve::rpc {

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& host, int port,
                                                        const std::string& component) {
  std::unique_ptr<Metrics> m(new Metrics());
  m->registry_ = std::make_shared<prometheus::Registry>();
  if (port >= 0) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError("cannot create the metrics socket");
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
      addr.sin_addr.s_addr = htonl(INADDR_ANY);
    }
    socklen_t len = sizeof(addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd, 16) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      const int err = errno;
      ::close(fd);
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", std::strerror(err)));
    }
    m->listen_fd_ = fd;
    m->port_ = ntohs(addr.sin_port);
    m->thread_ = std::thread([p = m.get()] { p->Serve(); });
  }
  m->Gauge("ringserve_build_info", "Build and component of this process",
           {{"component", component}, {"version", "0.1.0"}})
      .Set(1);
  return m;
}

Metrics::~Metrics() {
  stop_ = true;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void Metrics::Serve() {
  while (!stop_.load()) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (::poll(&pfd, 1, 200) <= 0) continue;
    const int conn = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) continue;
    // Read the request head (bounded in size and time), then answer with the text format.
    std::string head;
    char buf[1024];
    while (head.size() < 8192 && head.find("\r\n\r\n") == std::string::npos) {
      pollfd cfd{conn, POLLIN, 0};
      if (::poll(&cfd, 1, 1000) <= 0) break;
      const ssize_t n = ::read(conn, buf, sizeof(buf));
      if (n <= 0) break;
      head.append(buf, static_cast<size_t>(n));
    }
    const bool metrics = head.rfind("GET /metrics", 0) == 0;
    if (metrics) {
      absl::MutexLock lock(&refresh_mu_);
      if (refresh_) refresh_();
    }
    const std::string body =
        metrics ? prometheus::TextSerializer().Serialize(registry_->Collect()) : "not found\n";
    const std::string response =
        absl::StrCat("HTTP/1.0 ", metrics ? "200 OK" : "404 Not Found",
                     "\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: ", body.size(),
                     "\r\nConnection: close\r\n\r\n", body);
    size_t sent = 0;
    while (sent < response.size()) {
      const ssize_t n = ::send(conn, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    ::close(conn);
  }
}

void Metrics::SetRefresh(std::function<void()> refresh) {
  absl::MutexLock lock(&refresh_mu_);
  refresh_ = std::move(refresh);
}

prometheus::Counter& Metrics::Counter(const std::string& name, const std::string& help,
                                      const prometheus::Labels& labels) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels);
}

prometheus::Gauge& Metrics::Gauge(const std::string& name, const std::string& help,
                                  const prometheus::Labels& labels) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels);
}

prometheus::Histogram& Metrics::Seconds(const std::string& name, const std::string& help,
                                        const prometheus::Labels& labels) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Register(*registry_)
      .Add(labels, kBuckets);
}

prometheus::Histogram& Metrics::Bytes(const std::string& name, const std::string& help,
                                      const prometheus::Labels& labels) {
  prometheus::Histogram::BucketBoundaries buckets;
  for (double b = 1024; b <= 16.0 * (1ull << 30); b *= 4) buckets.push_back(b);
  return prometheus::BuildHistogram()
      .Name(name)
      .Help(help)
      .Register(*registry_)
      .Add(labels, buckets);
}

}  // namespace ringserve::rpc
