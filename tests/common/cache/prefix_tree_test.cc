#include "common/cache/prefix_tree.h"

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace ringserve::cache {
namespace {

constexpr int64_t kPage = 4;
constexpr size_t kKvPerToken = 10;
constexpr size_t kCheckpoint = 100;

int live_blobs = 0;

void FreeBlob(void* p) {
  --live_blobs;
  std::free(p);
}

// A blob of `bytes` whose first int64 is `tag`.
Blob MakeBlob(size_t bytes, int64_t tag) {
  void* p = std::malloc(std::max(bytes, sizeof(int64_t)));
  std::memcpy(p, &tag, sizeof(tag));
  ++live_blobs;
  return Blob(p, &FreeBlob);
}

int64_t Tag(const void* blob) {
  int64_t tag = 0;
  std::memcpy(&tag, blob, sizeof(tag));
  return tag;
}

// Tags KV blobs with their first token position and checkpoints with `checkpoint_tag`; records
// which KV ranges were asked for.
class FakeSaver : public Saver {
 public:
  explicit FakeSaver(int64_t checkpoint_tag = 0) : checkpoint_tag_(checkpoint_tag) {}
  absl::StatusOr<Blob> SaveKv(int64_t begin, int64_t end) override {
    saved.emplace_back(begin, end);
    return MakeBlob((end - begin) * kKvPerToken, begin);
  }
  absl::StatusOr<Blob> SaveCheckpoint() override {
    if (fail) return absl::ResourceExhaustedError("no memory");
    return MakeBlob(kCheckpoint, checkpoint_tag_);
  }
  std::vector<std::pair<int64_t, int64_t>> saved;
  bool fail = false;

 private:
  int64_t checkpoint_tag_;
};

std::vector<int32_t> Tokens(int n, int32_t first = 0) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

size_t Bytes(int64_t kv_tokens, int64_t checkpoints) {
  return kv_tokens * kKvPerToken + checkpoints * kCheckpoint;
}

class PrefixTreeTest : public ::testing::Test {
 protected:
  void SetUp() override { live_blobs = 0; }
  void TearDown() override {
    tree_.reset();
    EXPECT_EQ(live_blobs, 0);
  }
  void Make(size_t max_bytes) {
    tree_ =
        std::make_unique<PrefixTree>(PrefixTreeOptions{kPage, max_bytes, kKvPerToken, kCheckpoint});
  }
  bool Insert(const std::vector<int32_t>& tokens, int64_t tag = 0, std::string_view salt = "") {
    FakeSaver saver(tag);
    auto inserted = tree_->Insert(salt, tokens, saver, nullptr);
    EXPECT_TRUE(inserted.ok()) << inserted.status();
    return inserted.ok() && *inserted;
  }
  Hit Match(const std::vector<int32_t>& tokens, std::string_view salt = "") {
    return tree_->Match(salt, tokens, static_cast<int64_t>(tokens.size()), nullptr);
  }
  // Every hit's pages must cover [0, tokens) in order.
  static void ExpectCovers(const Hit& hit) {
    int64_t at = 0;
    for (const KvPage& p : hit.pages) {
      EXPECT_EQ(p.begin, at);
      EXPECT_EQ(Tag(p.data), p.begin);
      at = p.end;
    }
    EXPECT_EQ(at, hit.tokens);
  }

  std::unique_ptr<PrefixTree> tree_;
};

TEST_F(PrefixTreeTest, MatchesTheLongestCheckpointedPrefix) {
  Make(1 << 20);
  EXPECT_EQ(Match(Tokens(12)).tokens, 0);
  ASSERT_TRUE(Insert(Tokens(8), 8));
  ASSERT_TRUE(Insert(Tokens(12), 12));
  Hit hit = Match(Concat(Tokens(12), {99}));
  EXPECT_EQ(hit.tokens, 12);
  EXPECT_EQ(Tag(hit.checkpoint), 12);
  ExpectCovers(hit);
  EXPECT_EQ(hit.pages.size(), 3u);
  // A prompt that stops inside the second run restores the shorter checkpoint.
  hit = Match(Concat(Tokens(10), {77, 78}));
  EXPECT_EQ(hit.tokens, 8);
  EXPECT_EQ(Tag(hit.checkpoint), 8);
  ExpectCovers(hit);
  // max_tokens keeps at least the last token to compute.
  EXPECT_EQ(tree_->Match("", Tokens(12), 11, nullptr).tokens, 8);
  EXPECT_EQ(tree_->stats().lookups, 4u);
  EXPECT_EQ(tree_->stats().hits, 3u);
  EXPECT_EQ(tree_->stats().restored_tokens, 28u);
}

TEST_F(PrefixTreeTest, TailsShorterThanAPageAreCheckpointsToo) {
  Make(1 << 20);
  ASSERT_TRUE(Insert(Tokens(10), 10));  // two pages, then a tail of 2
  Hit hit = Match(Concat(Tokens(10), Tokens(5, 500)));
  EXPECT_EQ(hit.tokens, 10);
  EXPECT_EQ(Tag(hit.checkpoint), 10);
  ExpectCovers(hit);
  // A longer prompt through the same tokens reuses the pages but not the tail's KV.
  FakeSaver saver;
  ASSERT_TRUE(*tree_->Insert("", Tokens(13), saver, nullptr));
  EXPECT_EQ(saver.saved, (std::vector<std::pair<int64_t, int64_t>>{{8, 12}, {12, 13}}));
  EXPECT_EQ(Match(Tokens(20)).tokens, 13);
  EXPECT_EQ(Match(Concat(Tokens(11), {900})).tokens, 10);
  EXPECT_EQ(tree_->stats().bytes, Bytes(10 + 4 + 1, 2));
}

TEST_F(PrefixTreeTest, BranchesShareTheirCommonPagesAndSplitRuns) {
  Make(1 << 20);
  ASSERT_TRUE(Insert(Tokens(16), 1));
  EXPECT_EQ(tree_->stats().kv_tokens, 16);
  // Diverges in the third page of the 16-token run: the run splits after two pages, and only
  // pages from the divergence on are saved.
  const std::vector<int32_t> other = Concat(Tokens(8), Tokens(8, 100));
  FakeSaver saver(2);
  ASSERT_TRUE(*tree_->Insert("", other, saver, nullptr));
  EXPECT_EQ(saver.saved, (std::vector<std::pair<int64_t, int64_t>>{{8, 12}, {12, 16}}));
  EXPECT_EQ(tree_->stats().kv_tokens, 24);
  EXPECT_EQ(tree_->stats().bytes, Bytes(24, 2));
  Hit a = Match(Tokens(17));
  Hit b = Match(Concat(other, {5}));
  EXPECT_EQ(a.tokens, 16);
  EXPECT_EQ(Tag(a.checkpoint), 1);
  EXPECT_EQ(b.tokens, 16);
  EXPECT_EQ(Tag(b.checkpoint), 2);
  ExpectCovers(a);
  ExpectCovers(b);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(a.pages[i].data, b.pages[i].data) << i;
  EXPECT_NE(a.pages[2].data, b.pages[2].data);
  // A checkpoint at the split point needs no KV.
  FakeSaver at_split(3);
  ASSERT_TRUE(*tree_->Insert("", Tokens(8), at_split, nullptr));
  EXPECT_TRUE(at_split.saved.empty());
  EXPECT_EQ(Match(Concat(Tokens(8), {1000, 1001})).tokens, 8);
  // A checkpoint in the middle of a run splits it there.
  FakeSaver mid(4);
  ASSERT_TRUE(*tree_->Insert("", Tokens(12), mid, nullptr));
  EXPECT_TRUE(mid.saved.empty());
  EXPECT_EQ(Tag(Match(Concat(Tokens(12), {7})).checkpoint), 4);
  EXPECT_EQ(Tag(Match(Tokens(17)).checkpoint), 1);
  EXPECT_EQ(tree_->stats().bytes, Bytes(24, 4));
}

TEST_F(PrefixTreeTest, InsertingAHeldPrefixAgainStoresNothing) {
  Make(1 << 20);
  ASSERT_TRUE(Insert(Tokens(10), 1));
  const PrefixTreeStats before = tree_->stats();
  FakeSaver saver(2);
  ASSERT_TRUE(*tree_->Insert("", Tokens(10), saver, nullptr));
  EXPECT_TRUE(saver.saved.empty());
  EXPECT_EQ(tree_->stats().bytes, before.bytes);
  EXPECT_EQ(tree_->stats().version, before.version);
  EXPECT_EQ(Tag(Match(Tokens(11)).checkpoint), 1);
}

TEST_F(PrefixTreeTest, SaltsAreSeparateNamespaces) {
  Make(1 << 20);
  ASSERT_TRUE(Insert(Tokens(8), 1, "tenant-a"));
  EXPECT_EQ(Match(Tokens(9), "tenant-b").tokens, 0);
  EXPECT_EQ(Match(Tokens(9), "").tokens, 0);
  EXPECT_EQ(Match(Tokens(9), "tenant-a").tokens, 8);
  ASSERT_TRUE(Insert(Tokens(8), 2, ""));
  EXPECT_EQ(Tag(Match(Tokens(9), "").checkpoint), 2);
  EXPECT_EQ(Tag(Match(Tokens(9), "tenant-a").checkpoint), 1);
  EXPECT_EQ(tree_->stats().bytes, Bytes(16, 2));  // nothing shared across salts
  EXPECT_NE(PrefixHashes("tenant-a", Tokens(8), kPage), PrefixHashes("", Tokens(8), kPage));
}

TEST_F(PrefixTreeTest, EvictsLeastRecentlyRestoredFirst) {
  // Room for three 8-token prompts with a checkpoint each.
  Make(Bytes(24, 3));
  ASSERT_TRUE(Insert(Tokens(8, 0), 1));
  ASSERT_TRUE(Insert(Tokens(8, 100), 2));
  ASSERT_TRUE(Insert(Tokens(8, 200), 3));
  // Restoring from the first makes the second the least recently used.
  EXPECT_EQ(Match(Tokens(9, 0)).tokens, 8);
  ASSERT_TRUE(Insert(Tokens(8, 300), 4));
  EXPECT_EQ(Match(Tokens(9, 100)).tokens, 0);
  EXPECT_EQ(Match(Tokens(9, 0)).tokens, 8);
  EXPECT_EQ(Match(Tokens(9, 200)).tokens, 8);
  EXPECT_EQ(Match(Tokens(9, 300)).tokens, 8);
  EXPECT_EQ(tree_->stats().evicted_checkpoints, 1u);
  EXPECT_EQ(tree_->stats().evicted_pages, 2u);
  EXPECT_LE(tree_->stats().bytes, tree_->stats().max_bytes);
}

TEST_F(PrefixTreeTest, EvictsAnInteriorCheckpointAndKeepsThePagesBelowIt) {
  // A 16-token prompt with checkpoints at 8 and 16, then a longer one that needs the room of
  // one checkpoint.
  Make(Bytes(20, 2) + 50);
  ASSERT_TRUE(Insert(Tokens(8), 8));
  ASSERT_TRUE(Insert(Tokens(16), 16));
  EXPECT_EQ(Match(Tokens(17)).tokens, 16);  // the checkpoint at 8 is now the oldest
  ASSERT_TRUE(Insert(Concat(Tokens(16), Tokens(4, 100)), 20));
  EXPECT_EQ(tree_->stats().evicted_checkpoints, 1u);
  EXPECT_EQ(tree_->stats().evicted_pages, 0u);
  EXPECT_EQ(Match(Concat(Tokens(10), {500})).tokens, 0);
  EXPECT_EQ(Match(Tokens(17)).tokens, 16);
  EXPECT_EQ(Match(Concat(Tokens(16), Tokens(5, 100))).tokens, 20);
  EXPECT_EQ(tree_->stats().bytes, Bytes(20, 2));
}

TEST_F(PrefixTreeTest, EvictingLeavesRemovesAncestorsLeftWithoutCheckpoints) {
  Make(Bytes(24, 2) + 5);
  ASSERT_TRUE(Insert(Tokens(16), 1));
  const std::vector<int32_t> branch = Concat(Tokens(8), Tokens(8, 50));
  ASSERT_TRUE(Insert(branch, 2));           // splits the first run after 8 tokens
  ASSERT_TRUE(Insert(Tokens(16, 100), 3));  // needs both leaves gone, then their stem goes too
  EXPECT_EQ(Match(Tokens(17)).tokens, 0);
  EXPECT_EQ(Match(Concat(branch, {1})).tokens, 0);
  EXPECT_EQ(Match(Tokens(17, 100)).tokens, 16);
  EXPECT_EQ(tree_->stats().evicted_pages, 6u);
  EXPECT_EQ(tree_->stats().kv_tokens, 16);
  EXPECT_EQ(tree_->stats().bytes, Bytes(16, 1));
}

TEST_F(PrefixTreeTest, NeverEvictsWhatALeaseHolds) {
  Make(Bytes(16, 2));
  FakeSaver saver(1);
  Lease lease;
  ASSERT_TRUE(*tree_->Insert("", Tokens(8), saver, &lease));
  EXPECT_TRUE(lease.held());
  ASSERT_TRUE(Insert(Tokens(8, 100), 2));
  // Only the unpinned prompt can go.
  ASSERT_TRUE(Insert(Tokens(8, 200), 3));
  EXPECT_EQ(Match(Tokens(9, 100)).tokens, 0);
  EXPECT_EQ(Match(Tokens(9, 0)).tokens, 8);
  // With everything pinned, an insert that does not fit stores nothing.
  Lease second;
  EXPECT_EQ(tree_->Match("", Tokens(9, 200), 9, &second).tokens, 8);
  FakeSaver rejected(4);
  EXPECT_FALSE(*tree_->Insert("", Tokens(8, 300), rejected, nullptr));
  EXPECT_TRUE(rejected.saved.empty());
  EXPECT_EQ(tree_->stats().rejected_inserts, 1u);
  second.Reset();
  ASSERT_TRUE(Insert(Tokens(8, 300), 4));
  EXPECT_EQ(Match(Tokens(9, 0)).tokens, 8);
  EXPECT_EQ(Match(Tokens(9, 300)).tokens, 8);
}

TEST_F(PrefixTreeTest, ALeaseFollowsItsRequestAndSurvivesSplits) {
  Make(Bytes(16, 2));
  Lease lease;
  FakeSaver first(1);
  ASSERT_TRUE(*tree_->Insert("", Tokens(12), first, &lease));
  // A prompt that splits the leased run: the upper part stays pinned with it.
  ASSERT_TRUE(Insert(Concat(Tokens(8), Tokens(4, 100)), 2));
  Lease moved = std::move(lease);
  EXPECT_FALSE(lease.held());
  // Only the second prompt's own page and checkpoint can go: too little for this, so nothing
  // is evicted.
  FakeSaver too_big(3);
  EXPECT_FALSE(*tree_->Insert("", Tokens(8, 500), too_big, nullptr));
  EXPECT_EQ(tree_->stats().evicted_checkpoints, 0u);
  ASSERT_TRUE(Insert(Tokens(4, 500), 4));
  EXPECT_EQ(tree_->stats().evicted_checkpoints, 1u);
  EXPECT_EQ(Match(Concat(Tokens(8), Tokens(5, 100))).tokens, 0);
  EXPECT_EQ(Match(Tokens(13)).tokens, 12);
  moved.Reset();
}

TEST_F(PrefixTreeTest, BoundIsNeverExceeded) {
  const size_t bound = Bytes(40, 3);
  Make(bound);
  uint64_t state = 12345;
  auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  std::vector<Lease> leases(3);
  for (int i = 0; i < 500; ++i) {
    // Prompts from a few shared stems with random tails and lengths.
    std::vector<int32_t> prompt = Tokens(static_cast<int>(4 * next(4)), 1000 * next(3));
    const std::vector<int32_t> rest = Tokens(1 + static_cast<int>(next(14)), 50 * next(5));
    prompt.insert(prompt.end(), rest.begin(), rest.end());
    Lease& lease = leases[next(3)];
    if (next(2) == 0) {
      tree_->Match("", prompt, static_cast<int64_t>(prompt.size()), &lease);
    } else {
      FakeSaver saver;
      ASSERT_TRUE(tree_->Insert(next(4) == 0 ? "x" : "", prompt, saver, &lease).ok());
    }
    if (next(5) == 0) lease.Reset();
    const PrefixTreeStats s = tree_->stats();
    ASSERT_LE(s.bytes, bound) << i;
    ASSERT_EQ(s.bytes, Bytes(s.kv_tokens, s.checkpoints)) << i;
  }
  EXPECT_GT(tree_->stats().evicted_checkpoints, 0u);
  for (Lease& lease : leases) lease.Reset();
}

TEST_F(PrefixTreeTest, ASaverErrorStoresNothing) {
  Make(1 << 20);
  FakeSaver saver;
  saver.fail = true;
  EXPECT_FALSE(tree_->Insert("", Tokens(8), saver, nullptr).ok());
  EXPECT_EQ(tree_->stats().bytes, 0u);
  EXPECT_EQ(Match(Tokens(9)).tokens, 0);
}

TEST_F(PrefixTreeTest, ReportsHashesOfCheckpointedPrefixesMostRecentFirst) {
  Make(1 << 20);
  ASSERT_TRUE(Insert(Tokens(8), 1));
  ASSERT_TRUE(Insert(Tokens(14, 100), 2));  // a tail: reported at its last whole page (12)
  ASSERT_TRUE(Insert(Tokens(3, 500), 3));   // shorter than a page: not reported
  const std::vector<uint64_t> a = PrefixHashes("", Tokens(8), kPage);
  const std::vector<uint64_t> b = PrefixHashes("", Tokens(14, 100), kPage);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 3u);
  bool truncated = true;
  EXPECT_EQ(tree_->CheckpointHashes(10, &truncated), (std::vector<uint64_t>{b[2], a[1]}));
  EXPECT_FALSE(truncated);
  Match(Tokens(9));
  EXPECT_EQ(tree_->CheckpointHashes(1, &truncated), (std::vector<uint64_t>{a[1]}));
  EXPECT_TRUE(truncated);
  const uint64_t version = tree_->stats().version;
  ASSERT_TRUE(Insert(Tokens(4), 4));
  EXPECT_GT(tree_->stats().version, version);
}

}  // namespace
}  // namespace ringserve::cache
