// Prefill and decode policies on hand-made worker views: no processes, no clock.
#include "router/core/policy.h"

#include <numeric>

#include "common/cache/prefix_tree.h"
#include "gtest/gtest.h"

namespace ringserve::router::core {
namespace {

constexpr int64_t kPage = 64;
constexpr int64_t kCheckpoint = 128;
const absl::Time kNow = absl::FromUnixSeconds(1000);

std::vector<uint32_t> Tokens(uint32_t first, size_t n) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<uint32_t> Concat(std::vector<uint32_t> a, const std::vector<uint32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A healthy prefill worker with a prefix cache holding nothing.
WorkerView Worker(const std::string& address, uint64_t queued = 0) {
  WorkerView w;
  w.address = address;
  w.healthy = true;
  w.epoch = 1;
  w.status.set_queued_prompt_tokens(queued);
  auto* summary = w.status.mutable_prefix_cache();
  summary->set_page_tokens(kPage);
  summary->set_checkpoint_tokens(kCheckpoint);
  summary->set_version(1);
  return w;
}

// `w` reports holding a checkpoint at the last whole page of `prompt` (salt `salt`).
void Holds(WorkerView* w, const std::vector<uint32_t>& prompt, const std::string& salt = "") {
  const std::vector<int32_t> ids(prompt.begin(), prompt.end());
  auto* summary = w->status.mutable_prefix_cache();
  summary->add_prefix_hashes(cache::PrefixHashes(salt, ids, kPage).back());
  summary->set_version(summary->version() + 1);
}

PrefillQuery Query(const std::vector<uint32_t>& tokens, std::string_view salt = "",
                   absl::Time now = kNow) {
  return PrefillQuery{salt, tokens, now};
}

TEST(LoadPolicyTest, PrefillGoesToTheFewestQueuedTokens) {
  LoadPolicy policy;
  std::vector<WorkerView> workers = {Worker("a", 500), Worker("b", 100), Worker("c", 100)};
  workers[2].healthy = false;
  const std::vector<uint32_t> prompt = Tokens(1, 300);
  const PrefillRanking r = policy.RankPrefill(workers, Query(prompt));
  EXPECT_EQ(r.addresses, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(r.reason, RouteReason::kLoad);
  EXPECT_EQ(r.cached_tokens, 0);
}

TEST(PrefixPolicyTest, TheWorkerHoldingTheLongestPrefixWinsWithinTheBalanceBound) {
  PrefixPolicy policy(PrefixPolicyOptions{.balance_tokens = 1000});
  const std::vector<uint32_t> doc = Tokens(1, 300);
  const std::vector<uint32_t> prompt = Concat(doc, Tokens(5000, 40));
  std::vector<WorkerView> workers = {Worker("a"), Worker("b", 900), Worker("c", 400)};
  Holds(&workers[1], doc);  // 4 whole pages of the prompt
  Holds(&workers[2], std::vector<uint32_t>(doc.begin(), doc.begin() + 130));  // 2 pages
  const PrefillRanking r = policy.RankPrefill(workers, Query(prompt));
  EXPECT_EQ(r.addresses, (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(r.reason, RouteReason::kCacheHit);
  EXPECT_EQ(r.cached_tokens, 4 * kPage);
}

TEST(PrefixPolicyTest, AHolderOverTheBoundLosesToTheNextHolderOrTheLeastLoaded) {
  PrefixPolicy policy(PrefixPolicyOptions{.balance_tokens = 1000});
  const std::vector<uint32_t> doc = Tokens(1, 300);
  const std::vector<uint32_t> prompt = Concat(doc, Tokens(5000, 40));
  // Work for the 340-token prompt: a 340, b 1300 + 340 - 256 (1001 past a's), c 400 + 340 - 128.
  std::vector<WorkerView> workers = {Worker("a"), Worker("b", 1300), Worker("c", 400)};
  Holds(&workers[1], doc);
  Holds(&workers[2], std::vector<uint32_t>(doc.begin(), doc.begin() + 130));
  PrefillRanking r = policy.RankPrefill(workers, Query(prompt));
  EXPECT_EQ(r.addresses.front(), "c");
  EXPECT_EQ(r.reason, RouteReason::kCacheHit);
  EXPECT_EQ(r.cached_tokens, 2 * kPage);

  PrefixPolicy fresh(PrefixPolicyOptions{.balance_tokens = 1000});
  workers[2] = Worker("c", 400);
  r = fresh.RankPrefill(workers, Query(prompt));
  EXPECT_EQ(r.addresses, (std::vector<std::string>{"a", "c", "b"}));
  EXPECT_EQ(r.reason, RouteReason::kFallback);
  EXPECT_EQ(r.cached_tokens, 0);
}

TEST(PrefixPolicyTest, AQueueOfCachedWorkCountsOnlyWhatTheHolderSaves) {
  // The holder's queue is as long as the bound plus a bit (a worker reports queued prompts whole,
  // before their restores), but the prompt it saves outweighs it.
  PrefixPolicy policy(PrefixPolicyOptions{.balance_tokens = 1000});
  const std::vector<uint32_t> doc = Tokens(1, 2048);
  const std::vector<uint32_t> prompt = Concat(doc, Tokens(5000, 100));
  std::vector<WorkerView> workers = {Worker("a"), Worker("b", 2148)};
  Holds(&workers[1], doc);
  const PrefillRanking r = policy.RankPrefill(workers, Query(prompt));
  EXPECT_EQ(r.addresses.front(), "b");
  EXPECT_EQ(r.reason, RouteReason::kCacheHit);
}

TEST(PrefixPolicyTest, WhatItSentCountsUntilTheReportsCatchUp) {
  PrefixPolicyOptions options;
  options.sent_ttl = absl::Seconds(30);
  PrefixPolicy policy(options);
  const std::vector<uint32_t> doc = Tokens(1, 300);
  std::vector<WorkerView> workers = {Worker("a"), Worker("b")};
  PrefillRanking r = policy.RankPrefill(workers, Query(doc));
  EXPECT_EQ(r.addresses.front(), "a");
  EXPECT_EQ(r.reason, RouteReason::kLoad);
  workers[0].status.set_queued_prompt_tokens(300);  // busy with the document
  // A question on the document: "a" checkpoints at 128 and 256 and at the document's end (its
  // last whole page is 256 too).
  const std::vector<uint32_t> question = Concat(doc, Tokens(5000, 100));
  r = policy.RankPrefill(workers, Query(question, "", kNow + absl::Seconds(1)));
  EXPECT_EQ(r.addresses.front(), "a");
  EXPECT_EQ(r.reason, RouteReason::kCacheHit);
  EXPECT_EQ(r.cached_tokens, 256);
  // Another salt shares nothing.
  r = policy.RankPrefill(workers, Query(question, "other", kNow + absl::Seconds(1)));
  EXPECT_EQ(r.addresses.front(), "b");
  EXPECT_EQ(r.reason, RouteReason::kLoad);
  // Unreported past the ttl, the sent prefixes are forgotten.
  r = policy.RankPrefill(workers,
                         Query(Concat(doc, Tokens(7000, 100)), "", kNow + absl::Seconds(40)));
  EXPECT_EQ(r.reason, RouteReason::kLoad);
}

TEST(PrefixPolicyTest, ANewEpochStartsEmpty) {
  PrefixPolicy policy(PrefixPolicyOptions{});
  const std::vector<uint32_t> doc = Tokens(1, 300);
  std::vector<WorkerView> workers = {Worker("a"), Worker("b")};
  Holds(&workers[1], doc);
  const std::vector<uint32_t> question = Concat(doc, Tokens(5000, 10));
  EXPECT_EQ(policy.RankPrefill(workers, Query(question)).addresses.front(), "b");
  workers[1] = Worker("b");
  workers[1].epoch = 2;  // restarted: reports nothing, and what was sent before is gone
  const PrefillRanking r = policy.RankPrefill(workers, Query(question));
  EXPECT_EQ(r.addresses.front(), "a");
  EXPECT_EQ(r.reason, RouteReason::kLoad);
}

TEST(PrefixPolicyTest, ARestoreLeavesTheLastTokenAndWorkersWithoutACacheOnlyLoad) {
  PrefixPolicy policy(PrefixPolicyOptions{});
  const std::vector<uint32_t> doc = Tokens(1, 4 * kPage);
  std::vector<WorkerView> workers = {Worker("a"), Worker("b")};
  Holds(&workers[1], doc);
  workers[1].status.mutable_prefix_cache()->add_prefix_hashes(
      cache::PrefixHashes("", std::vector<int32_t>(doc.begin(), doc.begin() + 3 * kPage), kPage)
          .back());
  // The same prompt again: the checkpoint at its very end is not usable, the one a page before is.
  PrefillRanking r = policy.RankPrefill(workers, Query(doc));
  EXPECT_EQ(r.addresses.front(), "b");
  EXPECT_EQ(r.cached_tokens, 3 * kPage);
  workers[1].status.clear_prefix_cache();
  r = policy.RankPrefill(workers, Query(doc));
  EXPECT_EQ(r.reason, RouteReason::kLoad);
}

TEST(PrefixPolicyTest, DecodeRanksLikeTheLoadPolicy) {
  PrefixPolicy policy(PrefixPolicyOptions{});
  std::vector<WorkerView> workers = {Worker("a"), Worker("b")};
  workers[0].status.set_kv_tokens_total(100);
  workers[1].status.set_kv_tokens_total(200);
  EXPECT_EQ(policy.RankDecode(workers), LoadPolicy().RankDecode(workers));
  EXPECT_EQ(policy.RankDecode(workers).front(), "b");
}

}  // namespace
}  // namespace ringserve::router::core
