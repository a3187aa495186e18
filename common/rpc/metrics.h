#pragma once

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace ringserve::rpc {

// The process's Prometheus registry, served as text at http://HOST:PORT/metrics. Every process
// exports ringserve_build_info. Metric objects returned by the helpers live as long as this.
// Thread-safe.
class Metrics {
 public:
  // port 0 picks a free one; port < 0 registers metrics without serving them.
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& host, int port,
                                                        const std::string& component);

  int port() const { return port_; }
  prometheus::Registry& registry() { return *registry_; }

  prometheus::Counter& Counter(const std::string& name, const std::string& help,
                               const prometheus::Labels& labels = {});
  prometheus::Gauge& Gauge(const std::string& name, const std::string& help,
                           const prometheus::Labels& labels = {});
  // Latency histogram with buckets from 1 ms to 5 min.
  prometheus::Histogram& Seconds(const std::string& name, const std::string& help,
                                 const prometheus::Labels& labels = {});
  // Size histogram with buckets from 1 KiB to 16 GiB.
  prometheus::Histogram& Bytes(const std::string& name, const std::string& help,
                               const prometheus::Labels& labels = {});

 private:
  Metrics() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = -1;
};

}  // namespace ringserve::rpc
