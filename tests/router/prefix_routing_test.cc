// Prefix-aware routing with real processes on loopback: two prefill workers with prefix caches,
// one decode worker and two router replicas. Documents with questions asked in random order get
// the answers of a cluster without a cache, token for token; follow-up questions go to the
// worker holding their document through either router; a killed worker's documents are prefilled
// again elsewhere with the same answers; a chat's second turn reuses the first turn's prompt.
#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <thread>

#include "common/cache/prefix_tree.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

constexpr int kDocuments = 4;
constexpr int kQuestions = 4;    // 0 first; 1 and 2 follow-ups; 3 after a worker is killed
constexpr int kDocTokens = 512;  // whole chunks: a question restores at a chunk boundary
constexpr uint32_t kMaxTokens = 6;

std::vector<uint32_t> Document(int d) { return PromptOf(kDocTokens, 1 + d); }

std::vector<uint32_t> Question(int d, int q) {
  std::vector<uint32_t> prompt = Document(d);
  const std::vector<uint32_t> question = PromptOf(20 + 6 * q, 100 + 10 * d + q);
  prompt.insert(prompt.end(), question.begin(), question.end());
  return prompt;
}

cli::LocalCluster::Options Options(const std::string& model_dir, int prefill, int routers,
                                   std::vector<std::string> prefill_args) {
  cli::LocalCluster::Options o = ClusterOptions(model_dir, prefill, 1);
  o.routers = routers;
  o.prefill_args = std::move(prefill_args);
  o.router_args = {"--metrics-port=0", "--log-level=warning", "--poll-interval-ms=100"};
  return o;
}

// The index of the running prefill worker whose status lists document `d`, or -1 (and a
// failure when two do).
int Holder(cli::LocalCluster* cluster, int d) {
  const std::vector<uint32_t> doc = Document(d);
  const uint64_t hash =
      cache::PrefixHashes("", std::vector<int32_t>(doc.begin(), doc.end()), 64).back();
  int holder = -1;
  for (int i = 0; i < 2; ++i) {
    const cli::LocalCluster::Member* m = cluster->Find("prefill", i);
    if (!m->process->running()) continue;
    const auto hashes = WorkerStatusOf(m->address, true).prefix_cache().prefix_hashes();
    if (std::find(hashes.begin(), hashes.end(), hash) == hashes.end()) continue;
    EXPECT_EQ(holder, -1) << "document " << d << " is on both workers";
    holder = i;
  }
  return holder;
}

// Whether `router` shows, for every healthy prefill worker, as many cached prefixes as the
// worker itself lists (re-read until it does, bounded; nothing is evicted in these tests, so
// equal counts are equal sets).
bool RouterCaughtUp(const std::string& router) {
  return RouterStatusUntil(router, [](const ringserve::v1::ClusterStatus& status) {
    for (const auto& w : status.workers()) {
      if (w.role() == "prefill" && w.healthy() &&
          static_cast<int>(w.prefix_cache_prefixes()) !=
              WorkerStatusOf(w.address(), true).prefix_cache().prefix_hashes_size()) {
        return false;
      }
    }
    return true;
  });
}

double Routes(cli::LocalCluster* cluster, const std::string& reason) {
  double sum = 0;
  for (auto& m : cluster->members()) {
    if (m.role != "router") continue;
    const double v =
        Value(Scrape(m.metrics_url),
              absl::StrCat("ringserve_router_prefill_routes_total{reason=\"", reason, "\"}"));
    sum += std::max(v, 0.0);
  }
  return sum;
}

ringserve::v1::ChatMessage* AddMessage(ringserve::v1::GenerateRequest* r, const std::string& role,
                                       const std::string& content) {
  auto* m = r->mutable_messages()->add_messages();
  m->set_role(role);
  m->set_content(content);
  return m;
}

TEST(PrefixRoutingTest, DocumentsQuestionsFailoverAndChatAcrossTwoRouters) {
  TempDir dir;
  MakeDefaultModel(dir.path());
  // The reference: every question on a cluster without a prefix cache, same chunking.
  std::map<std::pair<int, int>, std::vector<uint32_t>> cold;
  {
    auto cluster = cli::LocalCluster::Start(
        Options(dir.path(), 1, 1, {"--chunk-tokens=64", "--prefix-cache-mib=0"}));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    for (int d = 0; d < kDocuments; ++d) {
      for (int q = 0; q < kQuestions; ++q) {
        const Answer a =
            Generate((*cluster)->router_address(), TokenRequest(Question(d, q), kMaxTokens));
        ASSERT_TRUE(a.status.ok()) << a.status.error_message();
        ASSERT_EQ(a.ids.size(), kMaxTokens);
        EXPECT_EQ(a.finished->usage().cached_prompt_tokens(), 0u);
        cold[std::make_pair(d, q)] = a.ids;
      }
    }
  }

  auto started = cli::LocalCluster::Start(Options(dir.path(), 2, 2, {"--chunk-tokens=64"}));
  ASSERT_TRUE(started.ok()) << started.status();
  cli::LocalCluster* cluster = started->get();
  const std::vector<std::string>& routers = cluster->router_addresses();
  ASSERT_EQ(routers.size(), 2u);
  // Asks question q of document d through router r; returns the prompt tokens it restored.
  auto ask = [&](int r, int d, int q) -> uint32_t {
    const Answer a = Generate(routers[r], TokenRequest(Question(d, q), kMaxTokens));
    EXPECT_TRUE(a.status.ok()) << a.status.error_message();
    EXPECT_EQ(a.ids, cold[std::make_pair(d, q)]) << "document " << d << " question " << q;
    return a.finished.has_value() ? a.finished->usage().cached_prompt_tokens() : 0;
  };
  std::mt19937 rng(15);
  std::vector<int> docs(kDocuments);
  std::iota(docs.begin(), docs.end(), 0);
  std::shuffle(docs.begin(), docs.end(), rng);

  // First questions, all at once through one router: spread by load, nothing cached yet.
  {
    std::vector<std::thread> threads;
    std::vector<uint32_t> cached(kDocuments, 1);
    for (int d : docs) threads.emplace_back([&, d] { cached[d] = ask(0, d, 0); });
    for (auto& t : threads) t.join();
    EXPECT_EQ(cached, std::vector<uint32_t>(kDocuments, 0));
  }
  std::vector<int> holder(kDocuments);
  for (int d = 0; d < kDocuments; ++d) {
    holder[d] = Holder(cluster, d);
    EXPECT_NE(holder[d], -1) << d;
  }
  EXPECT_EQ(Routes(cluster, "load"), kDocuments);

  // Follow-ups in random order, alternating routers: each restores its whole document, so it
  // went to the worker holding it (the other worker never saw the document).
  ASSERT_TRUE(RouterCaughtUp(routers[0]));
  ASSERT_TRUE(RouterCaughtUp(routers[1]));
  std::vector<std::pair<int, int>> follow_ups;
  for (int d = 0; d < kDocuments; ++d) follow_ups.insert(follow_ups.end(), {{d, 1}, {d, 2}});
  std::shuffle(follow_ups.begin(), follow_ups.end(), rng);
  for (size_t i = 0; i < follow_ups.size(); ++i) {
    const auto [d, q] = follow_ups[i];
    EXPECT_EQ(ask(static_cast<int>(i % 2), d, q), static_cast<uint32_t>(kDocTokens))
        << "document " << d << " question " << q;
  }
  for (int d = 0; d < kDocuments; ++d) EXPECT_EQ(Holder(cluster, d), holder[d]) << d;
  EXPECT_EQ(Routes(cluster, "cache_hit"), static_cast<double>(follow_ups.size()));

  // A chat: the second turn, through the other router, restores the first turn's prompt.
  ringserve::v1::GenerateRequest chat;
  std::string system;
  for (int i = 0; i < 12; ++i) absl::StrAppend(&system, "Clause ", i, ": the seller delivers. ");
  AddMessage(&chat, "system", system);
  AddMessage(&chat, "user", "Who delivers?");
  chat.mutable_messages()->set_add_generation_prompt(true);
  chat.mutable_stopping()->set_max_tokens(kMaxTokens);
  chat.mutable_sampling()->set_temperature(0);
  const Answer turn1 = Generate(routers[0], chat);
  ASSERT_TRUE(turn1.status.ok()) << turn1.status.error_message();
  ASSERT_TRUE(RouterCaughtUp(routers[1]));
  AddMessage(&chat, "assistant", turn1.text);
  AddMessage(&chat, "user", "And when?");
  const Answer turn2 = Generate(routers[1], chat);
  ASSERT_TRUE(turn2.status.ok()) << turn2.status.error_message();
  ASSERT_TRUE(turn2.finished.has_value());
  EXPECT_GT(turn2.finished->usage().cached_prompt_tokens(), 0u);
  EXPECT_LE(turn2.finished->usage().cached_prompt_tokens(),
            turn1.finished->usage().prompt_tokens());

  // The holder of the first document dies: its documents are prefilled again on the other
  // worker, with the same answers; the survivor's documents are still restored.
  const int victim = holder[docs[0]];
  cli::LocalCluster::Member* v = cluster->Find("prefill", victim);
  ASSERT_TRUE(v->process->Signal(SIGKILL).ok());
  ASSERT_TRUE(v->process->Wait(absl::Seconds(10)).ok());
  for (size_t i = 0; i < docs.size(); ++i) {
    const int d = docs[i];
    EXPECT_EQ(ask(static_cast<int>(i % 2), d, 3), holder[d] == victim ? 0u : kDocTokens)
        << "document " << d;
  }
  for (int d : docs) {
    if (holder[d] == victim) {
      EXPECT_EQ(ask(1, d, 0), static_cast<uint32_t>(kDocTokens)) << d;
    }
  }
  EXPECT_TRUE(ClusterSettlesIdle(cluster));
}

}  // namespace
}  // namespace ringserve::testing
