// Operators' view: Prometheus metrics of a running cluster move as requests flow, and ringctl
// status reports each worker's health, also after one is killed.
#include <signal.h>

#include <regex>

#include "common/base/mapped_file.h"
#include "gtest/gtest.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

TEST(MetricsTest, CountersGaugesAndHistogramsMoveWithRequests) {
  TempDir dir;
  MakeDefaultModel(dir.path());
  auto options = ClusterOptions(dir.path(), 1, 1);
  options.worker_args = {"--threads=1", "--metrics-port=0", "--log-level=warning"};
  options.router_args = {"--metrics-port=0", "--log-level=warning", "--poll-interval-ms=100"};
  auto cluster = cli::LocalCluster::Start(options);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto* router = (*cluster)->Find("router", 0);
  auto* prefill = (*cluster)->Find("prefill", 0);
  auto* decode = (*cluster)->Find("decode", 0);
  ASSERT_FALSE(router->metrics_url.empty());

  const std::string before = Scrape(router->metrics_url);
  EXPECT_NE(before.find("ringserve_build_info{component=\"router\""), std::string::npos);
  EXPECT_EQ(Value(before, "ringserve_router_requests_total{outcome=\"length\"}"), -1);
  for (int i = 0; i < 3; ++i) {
    const Answer a = Generate((*cluster)->router_address(), TokenRequest(PromptOf(50, i), 5));
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  }
  const Answer bad = Generate((*cluster)->router_address(), TokenRequest({}, 5));
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(ClusterSettlesIdle(cluster->get()));

  const std::string r = Scrape(router->metrics_url);
  EXPECT_EQ(Value(r, "ringserve_router_requests_total{outcome=\"length\"}"), 3);
  EXPECT_EQ(Value(r, "ringserve_router_time_to_first_token_seconds_count"), 3);
  EXPECT_EQ(Value(r, "ringserve_router_inter_token_latency_seconds_count"), 12);
  EXPECT_EQ(Value(r, "ringserve_router_prompt_tokens_total"), 150);
  EXPECT_EQ(Value(r, "ringserve_router_completion_tokens_total"), 15);
  EXPECT_EQ(Value(r, "ringserve_router_healthy_workers{pool=\"decode\"}"), 1);

  const std::string p = Scrape(prefill->metrics_url);
  EXPECT_EQ(Value(p, "ringserve_prefill_requests_total{outcome=\"ok\"}"), 3);
  EXPECT_GT(Value(p, "ringserve_transfer_bytes_total{transport=\"grpc\"}"), 0);
  EXPECT_EQ(Value(p, "ringserve_transfer_duration_seconds_count{transport=\"grpc\"}"), 3);
  EXPECT_EQ(Value(p, "ringserve_prefill_queued_prompt_tokens"), 0);

  // Gauges are refreshed at each scrape: exact once the cluster is idle.
  const std::string d = Scrape(decode->metrics_url);
  EXPECT_EQ(Value(d, "ringserve_decode_state_slots_used"), 0);
  EXPECT_GT(Value(d, "ringserve_decode_state_slots_free"), 0);
  EXPECT_EQ(Value(d, "ringserve_decode_kv_tokens_used_ratio"), 0);
  EXPECT_EQ(Value(d, "ringserve_decode_generated_tokens_total"), 12);
  // One request at a time: 12 steps of batch 1, the first captured and the rest replayed.
  EXPECT_EQ(Value(d, "ringserve_decode_steps_total"), 12);
  EXPECT_EQ(Value(d, "ringserve_decode_graphs"), 1);
  EXPECT_EQ(Value(d, "ringserve_decode_graph_steps_total"), 11);
}

TEST(StatusTest, RingctlStatusListsEveryWorkerAndNoticesADeadOne) {
  TempDir dir;
  MakeDefaultModel(dir.path());
  auto cluster = cli::LocalCluster::Start(ClusterOptions(dir.path(), 2, 1));
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  auto run_status = [&] {
    const std::string out = dir.path() + "/status.txt";
    auto p = base::Subprocess::Start({"/bin/sh", "-c",
                                      std::string(RINGSERVE_BIN_DIR) + "/ringctl status --router " +
                                          (*cluster)->router_address() + " > " + out},
                                     false);
    EXPECT_TRUE(p.ok());
    EXPECT_EQ(*(*p)->Wait(absl::Seconds(30)), 0);
    return *base::ReadFileToString(out);
  };
  std::string text = run_status();
  for (auto& m : (*cluster)->members()) {
    if (m.role == "router") continue;
    EXPECT_TRUE(std::regex_search(text, std::regex(m.role + " +" + m.address + " +healthy")))
        << text;
    // Prefill workers show their prefix cache: MiB used / the default 2048 MiB bound.
    if (m.role == "prefill") {
      EXPECT_TRUE(std::regex_search(
          text, std::regex(m.address + " +healthy .* [0-9.]+/2048 MiB [0-9]+ prefixes")))
          << text;
    }
  }
  auto* victim = (*cluster)->Find("prefill", 1);
  ASSERT_TRUE(victim->process->Signal(SIGKILL).ok());
  ASSERT_TRUE(victim->process->Wait(absl::Seconds(10)).ok());
  // The router polls every 100 ms; read the status until it shows the worker down.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!std::regex_search(text, std::regex("prefill +" + victim->address + " +DOWN")) &&
         absl::Now() < deadline) {
    text = run_status();
  }
  EXPECT_TRUE(std::regex_search(text, std::regex("prefill +" + victim->address + " +DOWN")))
      << text;
  EXPECT_TRUE(std::regex_search(
      text, std::regex("prefill +" + (*cluster)->Find("prefill", 0)->address + " +healthy")));
}

}  // namespace
}  // namespace ringserve::testing
