#include "common/rpc/metrics.h"

#include "absl/strings/str_cat.h"

namespace ringserve::rpc {

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& host, int port,
                                                        const std::string& component) {
  std::unique_ptr<Metrics> m(new Metrics());
  m->registry_ = std::make_shared<prometheus::Registry>();
  if (port >= 0) {
    try {
      m->exposer_ = std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port));
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", e.what()));
    }
    m->exposer_->RegisterCollectable(m->registry_);
    const auto ports = m->exposer_->GetListeningPorts();
    m->port_ = ports.empty() ? port : ports.front();
  }
  m->Gauge("ringserve_build_info", "Build and component of this process",
           {{"component", component}, {"version", "0.1.0"}})
      .Set(1);
  return m;
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
  return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_).Add(labels,
                                                                                     kBuckets);
}

prometheus::Histogram& Metrics::Bytes(const std::string& name, const std::string& help,
                                      const prometheus::Labels& labels) {
  prometheus::Histogram::BucketBoundaries buckets;
  for (double b = 1024; b <= 16.0 * (1ull << 30); b *= 4) buckets.push_back(b);
  return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_).Add(labels,
                                                                                     buckets);
}

}  // namespace ringserve::rpc
