#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ringserve::cache {

// Bytes the tree holds, owned through their deleter (backend memory: the same type as
// kernels::Buffer, so a backend buffer moves in as is).
using Blob = std::unique_ptr<void, void (*)(void*)>;

// The stored KV of prompt tokens [begin, end), laid out as its Saver wrote it.
struct KvPage {
  const void* data;
  int64_t begin;
  int64_t end;
};

// Makes the bytes of one Insert. The tree calls it only after it made room for them.
class Saver {
 public:
  virtual ~Saver() = default;
  // The KV of prompt tokens [begin, end): kv_bytes_per_token * (end - begin) bytes.
  virtual absl::StatusOr<Blob> SaveKv(int64_t begin, int64_t end) = 0;
  // The state checkpoint at the end of the inserted prefix: checkpoint_bytes bytes.
  virtual absl::StatusOr<Blob> SaveCheckpoint() = 0;
};

struct PrefixTreeOptions {
  int64_t page_tokens = 64;       // KV is stored and shared in pages of this many tokens
  size_t max_bytes = 0;           // hard bound on the bytes held
  size_t kv_bytes_per_token = 0;  // KV bytes of one token (every layer)
  size_t checkpoint_bytes = 0;    // bytes of one state checkpoint
};

struct PrefixTreeStats {
  size_t bytes = 0;  // held now, never above max_bytes
  size_t max_bytes = 0;
  int64_t checkpoints = 0;  // held now
  int64_t kv_tokens = 0;    // tokens of KV held now
  uint64_t lookups = 0;
  uint64_t hits = 0;
  uint64_t restored_tokens = 0;  // sum of the hits' lengths
  uint64_t inserted_checkpoints = 0;
  uint64_t evicted_checkpoints = 0;
  uint64_t evicted_pages = 0;
  uint64_t rejected_inserts = 0;  // inserts that did not fit in the bound
  uint64_t version = 0;           // changes whenever the set of checkpoints changes
};

// Stable 64-bit hashes of prompt prefixes at page granularity, the same in every process and
// build (a splitmix64 chain): PrefixHashes(salt, tokens, page)[k] identifies (salt, the first
// (k + 1) * page tokens). A router computes them for a new prompt and looks them up in what a
// worker's tree reports (PrefixTree::CheckpointHashes).
std::vector<uint64_t> PrefixHashes(std::string_view salt, std::span<const int32_t> tokens,
                                   int64_t page_tokens);

class PrefixTree;
struct PrefixNode;  // a node of a PrefixTree

// Pins one node of a PrefixTree against eviction while alive: its checkpoint and the pages from
// the root to it. Move-only. An empty lease may be destroyed anywhere; a held one must be destroyed
// or reset on the tree's thread, before the tree.
class Lease {
 public:
  Lease() = default;
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease() { Reset(); }

  bool held() const { return node_ != nullptr; }
  void Reset();

 private:
  friend class PrefixTree;

  PrefixTree* tree_ = nullptr;
  PrefixNode* node_ = nullptr;
};

// The longest usable cached prefix found by PrefixTree::Match.
struct Hit {
  int64_t tokens = 0;                // prefix length; 0 when nothing matched
  const void* checkpoint = nullptr;  // the state checkpoint at `tokens`
  std::vector<KvPage> pages;         // KV covering [0, tokens) in order
};

// An exact prefix cache over prompt token ids: a radix tree whose edges are runs of whole pages
// of tokens (or, at a leaf, the tail of a prompt shorter than a page). Every page of an edge
// holds that page's KV, shared by every prefix that runs through it; a node may hold a state
// checkpoint at its end position. Each salt is a separate namespace (the empty salt is one
// shared namespace). The tree knows token ids, byte sizes and opaque blobs, not the model.
//
// Memory: every byte held counts against max_bytes, which is never exceeded; an insert that
// cannot fit after eviction evicts and stores nothing. Eviction is least recently used first,
// where a node is used when it is created or a Match restores from it; candidates are leaves
// (removing the leaf's pages and checkpoint, then any ancestor left as a leaf with no
// checkpoint) and interior checkpoints (removing only the checkpoint; the pages below it stay
// for the prefixes that run through them). A Lease pins its node's checkpoint and the pages of
// its path, which are then never evicted.
//
// Not thread-safe: one thread (the prefill scheduler) owns it.
class PrefixTree {
 public:
  explicit PrefixTree(const PrefixTreeOptions& options);
  ~PrefixTree();
  PrefixTree(const PrefixTree&) = delete;
  PrefixTree& operator=(const PrefixTree&) = delete;

  const PrefixTreeOptions& options() const { return options_; }

  // The longest prefix of `tokens`, at most `max_tokens` long, that ends at a checkpoint in the
  // namespace `salt`. A hit marks its node used and, when `lease` is set, pins it there.
  Hit Match(std::string_view salt, std::span<const int32_t> tokens, int64_t max_tokens,
            Lease* lease);

  // Stores the prefix `tokens` (at least one token) with a checkpoint at its end in the namespace
  // `salt`: pages already held are shared, the missing ones and the checkpoint come from `saver`
  // once room was made. True when the prefix is held afterwards (also when it already was);
  // false when it does not fit in the bound (nothing stored). When `lease` is set it moves to
  // the inserted node. Errors are the saver's; nothing is stored then.
  absl::StatusOr<bool> Insert(std::string_view salt, std::span<const int32_t> tokens, Saver& saver,
                              Lease* lease);

  PrefixTreeStats stats() const { return stats_; }

  // The PrefixHashes entry of the longest whole-page prefix of every checkpointed prefix, most
  // recently used first, without repeats, at most `limit`; `truncated` (may be null) tells
  // whether some were left out.
  std::vector<uint64_t> CheckpointHashes(size_t limit, bool* truncated) const;

 private:
  friend class Lease;
  using Node = PrefixNode;

  bool IsTail(const Node& node) const;
  size_t NodeBytes(const Node& node) const;
  // Adds `delta` to the page pins of `node` and its ancestors.
  void PinPath(Node* node, int64_t delta);
  // Points `lease` at `node`, pinning its checkpoint and its path's pages.
  void Pin(Node* node, Lease* lease);
  void Unpin(Node* node);
  // Splits `node` after its first `pages` pages; returns the new upper node.
  Node* Split(Node* node, int64_t pages);
  // Calls `fn` on every node but the roots.
  void ForEachNode(const std::function<void(Node*)>& fn) const;
  // Removes the checkpoint of `node` (which has one).
  void DropCheckpoint(Node* node);
  // Bytes eviction could free: everything no lease pins (an unpinned node's whole subtree is
  // unpinned, so its leaves go first and it follows).
  size_t EvictableBytes() const;
  // Evicts the least recently used candidate; false when there is none.
  bool EvictOne();
  void RemoveLeaf(Node* node);

  PrefixTreeOptions options_;
  std::map<std::string, std::unique_ptr<Node>, std::less<>> roots_;  // by salt
  uint64_t clock_ = 0;
  PrefixTreeStats stats_;
};

}  // namespace ringserve::cache
