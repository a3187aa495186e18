#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace ringserve::rpc {

// The process's Prometheus registry, served as text at http://HOST:PORT/metrics by a small
// HTTP/1.0 server of its own (one thread, one connection at a time; scrapes are rare and
// small). Every process exports ringserve_build_info. Metric objects returned by the helpers
// live as long as this. Gauges that mirror a component's state are set by a refresh function
// that runs just before each scrape, so a scrape always reads current values. Thread-safe.
class Metrics {
 public:
  // port 0 picks a free one; port < 0 registers metrics without serving them.
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& host, int port,
                                                        const std::string& component);
  ~Metrics();

  int port() const { return port_; }
  prometheus::Registry& registry() { return *registry_; }

  prometheus::Counter& Counter(const std::string& name, const std::string& help,
                               const prometheus::Labels& labels = {});
  prometheus::Gauge& Gauge(const std::string& name, const std::string& help,
                           const prometheus::Labels& labels = {});
  // `refresh` runs on the serving thread before every scrape; it may set gauges and increment
  // counters (it is never called concurrently with itself). Pass nullptr before anything it
  // reads is destroyed.
  void SetRefresh(std::function<void()> refresh);

  // Latency histogram with buckets from 1 ms to 5 min.
  prometheus::Histogram& Seconds(const std::string& name, const std::string& help,
                                 const prometheus::Labels& labels = {});
  // Size histogram with buckets from 1 KiB to 16 GiB.
  prometheus::Histogram& Bytes(const std::string& name, const std::string& help,
                               const prometheus::Labels& labels = {});

 private:
  Metrics() = default;
  void Serve();

  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int port_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  absl::Mutex refresh_mu_;
  std::function<void()> refresh_ ABSL_GUARDED_BY(refresh_mu_);
};

}  // namespace ringserve::rpc
