#include "common/cache/prefix_tree.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "common/base/status_macros.h"

namespace ringserve::cache {

// A run of whole pages of prompt tokens [begin, begin + tokens.size()) (or, at a leaf, a tail
// shorter than a page), their KV, and optionally the state checkpoint at its end. A root has no
// tokens and names its salt.
struct PrefixNode {
  PrefixNode* parent = nullptr;
  std::string salt;  // roots only
  std::vector<int32_t> tokens;
  int64_t begin = 0;
  std::vector<Blob> pages;  // one per page of `tokens`
  Blob checkpoint{nullptr, nullptr};
  // By the child's first page (or its whole tail).
  std::map<std::vector<int32_t>, std::unique_ptr<PrefixNode>> children;
  int64_t refs = 0;    // leases on this node or below, and inserts passing through: pins pages
  int64_t leases = 0;  // leases on this node: pins its checkpoint
  uint64_t used = 0;   // tree clock of the last creation or restore
  uint64_t hash = 0;   // PrefixHashes entry of [0, the last page boundary <= end); the salt's seed
                       // at position 0

  int64_t end() const { return begin + static_cast<int64_t>(tokens.size()); }
};

namespace {

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t SaltSeed(std::string_view salt) {
  uint64_t h = SplitMix(salt.size());
  for (unsigned char c : salt) h = SplitMix(h ^ c);
  return h;
}

// Extends a prefix hash by whole pages of tokens.
uint64_t Extend(uint64_t h, std::span<const int32_t> tokens) {
  for (int32_t t : tokens) h = SplitMix(h ^ static_cast<uint32_t>(t));
  return h;
}

std::vector<int32_t> Key(std::span<const int32_t> tokens, int64_t begin, int64_t page) {
  const int64_t end = std::min<int64_t>(begin + page, static_cast<int64_t>(tokens.size()));
  return std::vector<int32_t>(tokens.begin() + begin, tokens.begin() + end);
}

}  // namespace

std::vector<uint64_t> PrefixHashes(std::string_view salt, std::span<const int32_t> tokens,
                                   int64_t page_tokens) {
  std::vector<uint64_t> out;
  uint64_t h = SaltSeed(salt);
  for (size_t begin = 0; begin + page_tokens <= tokens.size(); begin += page_tokens) {
    h = Extend(h, tokens.subspan(begin, page_tokens));
    out.push_back(h);
  }
  return out;
}

Lease::Lease(Lease&& other) noexcept
    : tree_(std::exchange(other.tree_, nullptr)), node_(std::exchange(other.node_, nullptr)) {}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Reset();
    tree_ = std::exchange(other.tree_, nullptr);
    node_ = std::exchange(other.node_, nullptr);
  }
  return *this;
}

void Lease::Reset() {
  if (node_ != nullptr) tree_->Unpin(node_);
  tree_ = nullptr;
  node_ = nullptr;
}

PrefixTree::PrefixTree(const PrefixTreeOptions& options) : options_(options) {
  stats_.max_bytes = options.max_bytes;
}

PrefixTree::~PrefixTree() = default;

bool PrefixTree::IsTail(const Node& node) const {
  return node.parent != nullptr && static_cast<int64_t>(node.tokens.size()) < options_.page_tokens;
}

size_t PrefixTree::NodeBytes(const Node& node) const {
  return node.tokens.size() * options_.kv_bytes_per_token +
         (node.checkpoint != nullptr ? options_.checkpoint_bytes : 0);
}

void PrefixTree::PinPath(Node* node, int64_t delta) {
  for (Node* n = node; n != nullptr; n = n->parent) n->refs += delta;
}

void PrefixTree::Pin(Node* node, Lease* lease) {
  ++node->leases;
  PinPath(node, 1);
  lease->Reset();
  lease->tree_ = this;
  lease->node_ = node;
}

void PrefixTree::Unpin(Node* node) {
  --node->leases;
  PinPath(node, -1);
}

Hit PrefixTree::Match(std::string_view salt, std::span<const int32_t> tokens, int64_t max_tokens,
                      Lease* lease) {
  ++stats_.lookups;
  Hit hit;
  auto root = roots_.find(salt);
  if (root == roots_.end()) return hit;
  const int64_t page = options_.page_tokens;
  const int64_t limit = std::min<int64_t>(max_tokens, static_cast<int64_t>(tokens.size()));
  Node* best = nullptr;
  Node* node = root->second.get();
  while (true) {
    const int64_t pos = node->end();
    if (node->checkpoint != nullptr && pos > 0) best = node;
    for (const auto& [key, child] : node->children) {
      const int64_t end = pos + static_cast<int64_t>(key.size());
      if (!IsTail(*child) || end > limit || (best != nullptr && best->end() >= end)) continue;
      if (std::equal(key.begin(), key.end(), tokens.begin() + pos)) best = child.get();
    }
    if (pos + page > limit) break;
    auto it = node->children.find(Key(tokens, pos, page));
    if (it == node->children.end()) break;
    Node* child = it->second.get();
    if (child->end() > limit ||
        !std::equal(child->tokens.begin(), child->tokens.end(), tokens.begin() + pos)) {
      break;
    }
    node = child;
  }
  if (best == nullptr) return hit;
  best->used = ++clock_;
  ++stats_.hits;
  stats_.restored_tokens += static_cast<uint64_t>(best->end());
  hit.tokens = best->end();
  hit.checkpoint = best->checkpoint.get();
  for (Node* n = best; n->parent != nullptr; n = n->parent) {
    for (int64_t i = static_cast<int64_t>(n->pages.size()) - 1; i >= 0; --i) {
      const int64_t begin = n->begin + i * page;
      hit.pages.push_back({n->pages[i].get(), begin, std::min(begin + page, n->end())});
    }
  }
  std::reverse(hit.pages.begin(), hit.pages.end());
  if (lease != nullptr) Pin(best, lease);
  return hit;
}

PrefixTree::Node* PrefixTree::Split(Node* node, int64_t pages) {
  const int64_t page = options_.page_tokens;
  const int64_t cut = pages * page;
  Node* parent = node->parent;
  auto upper = std::make_unique<Node>();
  upper->parent = parent;
  upper->tokens.assign(node->tokens.begin(), node->tokens.begin() + cut);
  upper->begin = node->begin;
  for (int64_t i = 0; i < pages; ++i) upper->pages.push_back(std::move(node->pages[i]));
  upper->refs = node->refs;
  upper->used = node->used;
  upper->hash = Extend(parent->hash, upper->tokens);
  node->tokens.erase(node->tokens.begin(), node->tokens.begin() + cut);
  node->pages.erase(node->pages.begin(), node->pages.begin() + pages);
  node->begin += cut;
  node->parent = upper.get();
  auto slot = parent->children.find(Key(upper->tokens, 0, page));
  Node* raw = upper.get();
  upper->children.emplace(Key(node->tokens, 0, page), std::move(slot->second));
  slot->second = std::move(upper);
  return raw;
}

absl::StatusOr<bool> PrefixTree::Insert(std::string_view salt, std::span<const int32_t> tokens,
                                        Saver& saver, Lease* lease) {
  const int64_t page = options_.page_tokens;
  const int64_t total = static_cast<int64_t>(tokens.size());
  const int64_t full = total / page * page;
  const int64_t tail = total - full;
  if (total == 0) return false;

  // What is held already: whole nodes down to `node` (ending at `pos`), then possibly the first
  // `partial_pages` pages of `partial`.
  auto root_it = roots_.find(salt);
  Node* node = root_it == roots_.end() ? nullptr : root_it->second.get();
  Node* partial = nullptr;
  int64_t partial_pages = 0;
  int64_t pos = 0;
  while (node != nullptr && pos < full) {
    auto it = node->children.find(Key(tokens, pos, page));
    if (it == node->children.end()) break;
    Node* child = it->second.get();
    const int64_t child_pages = static_cast<int64_t>(child->pages.size());
    int64_t same = 1;  // the key matched the first page
    while (same < child_pages && pos + (same + 1) * page <= full &&
           std::equal(child->tokens.begin() + same * page,
                      child->tokens.begin() + (same + 1) * page,
                      tokens.begin() + pos + same * page)) {
      ++same;
    }
    if (same < child_pages) {
      partial = child;
      partial_pages = same;
      pos += same * page;
      break;
    }
    node = child;
    pos = child->end();
  }
  Node* at_end = nullptr;
  if (node != nullptr && partial == nullptr && pos == full) {
    if (tail == 0) {
      at_end = pos > 0 ? node : nullptr;
    } else if (auto it = node->children.find(Key(tokens, full, page)); it != node->children.end()) {
      at_end = it->second.get();
    }
  }
  if (at_end != nullptr && at_end->checkpoint != nullptr) {
    if (lease != nullptr) Pin(at_end, lease);
    return true;
  }

  const int64_t new_tokens = (full - pos) + (at_end == nullptr ? tail : 0);
  const size_t need =
      static_cast<size_t>(new_tokens) * options_.kv_bytes_per_token + options_.checkpoint_bytes;
  if (need > options_.max_bytes) {
    ++stats_.rejected_inserts;
    return false;
  }
  if (stats_.bytes + need > options_.max_bytes) {
    // Keep the pages of the held part of the path while making room.
    Node* deepest = partial != nullptr ? partial : node;
    if (deepest != nullptr) PinPath(deepest, 1);
    bool room = stats_.bytes - EvictableBytes() + need <= options_.max_bytes;
    while (room && stats_.bytes + need > options_.max_bytes) room = EvictOne();
    if (deepest != nullptr) PinPath(deepest, -1);
    if (node != nullptr && node->parent == nullptr && node->children.empty()) {
      roots_.erase(node->salt);  // emptied by the eviction; made again below if there is room
      node = nullptr;
    }
    if (!room) {
      ++stats_.rejected_inserts;
      return false;
    }
  }

  std::vector<Blob> pages;
  for (int64_t begin = pos; begin < full; begin += page) {
    ASSIGN_OR_RETURN(Blob kv, saver.SaveKv(begin, begin + page));
    pages.push_back(std::move(kv));
  }
  Blob tail_kv(nullptr, nullptr);
  if (tail > 0 && at_end == nullptr) {
    ASSIGN_OR_RETURN(tail_kv, saver.SaveKv(full, total));
  }
  ASSIGN_OR_RETURN(Blob checkpoint, saver.SaveCheckpoint());

  if (node == nullptr) {
    auto root = std::make_unique<Node>();
    root->salt = std::string(salt);
    root->hash = SaltSeed(salt);
    node = root.get();
    roots_.emplace(std::string(salt), std::move(root));
  }
  if (partial != nullptr) node = Split(partial, partial_pages);
  auto add_child = [&](int64_t begin, int64_t end, std::vector<Blob> blobs) {
    auto child = std::make_unique<Node>();
    child->parent = node;
    child->tokens.assign(tokens.begin() + begin, tokens.begin() + end);
    child->begin = begin;
    child->pages = std::move(blobs);
    child->hash = end - begin < page ? node->hash : Extend(node->hash, child->tokens);
    Node* raw = child.get();
    node->children.emplace(Key(tokens, begin, page), std::move(child));
    node = raw;
  };
  if (pos < full) add_child(pos, full, std::move(pages));
  if (tail > 0) {
    if (at_end == nullptr) {
      std::vector<Blob> blobs;
      blobs.push_back(std::move(tail_kv));
      add_child(full, total, std::move(blobs));
    } else {
      node = at_end;
    }
  }
  node->checkpoint = std::move(checkpoint);
  node->used = ++clock_;
  stats_.bytes += need;
  stats_.kv_tokens += new_tokens;
  ++stats_.checkpoints;
  ++stats_.inserted_checkpoints;
  ++stats_.version;
  if (lease != nullptr) Pin(node, lease);
  return true;
}

void PrefixTree::ForEachNode(const std::function<void(Node*)>& fn) const {
  std::vector<Node*> stack;
  for (const auto& [salt, root] : roots_) stack.push_back(root.get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& [key, child] : n->children) stack.push_back(child.get());
    if (n->parent != nullptr) fn(n);
  }
}

size_t PrefixTree::EvictableBytes() const {
  size_t bytes = 0;
  ForEachNode([&](Node* n) {
    if (n->refs == 0) {
      bytes += NodeBytes(*n);
    } else if (n->leases == 0 && n->checkpoint != nullptr) {
      bytes += options_.checkpoint_bytes;
    }
  });
  return bytes;
}

void PrefixTree::DropCheckpoint(Node* node) {
  node->checkpoint.reset();
  stats_.bytes -= options_.checkpoint_bytes;
  --stats_.checkpoints;
  ++stats_.evicted_checkpoints;
  ++stats_.version;
}

bool PrefixTree::EvictOne() {
  Node* victim = nullptr;
  ForEachNode([&](Node* n) {
    const bool leaf = n->children.empty() && n->refs == 0;
    const bool checkpoint = n->checkpoint != nullptr && n->leases == 0;
    if ((leaf || checkpoint) && (victim == nullptr || n->used < victim->used)) victim = n;
  });
  if (victim == nullptr) return false;
  if (victim->children.empty() && victim->refs == 0) {
    RemoveLeaf(victim);
  } else {
    DropCheckpoint(victim);
  }
  return true;
}

void PrefixTree::RemoveLeaf(Node* node) {
  const int64_t page = options_.page_tokens;
  while (true) {
    Node* parent = node->parent;
    if (node->checkpoint != nullptr) DropCheckpoint(node);
    stats_.bytes -= NodeBytes(*node);
    stats_.kv_tokens -= static_cast<int64_t>(node->tokens.size());
    stats_.evicted_pages += node->pages.size();
    parent->children.erase(Key(node->tokens, 0, page));
    node = parent;
    if (node->parent == nullptr) {
      if (node->children.empty() && node->refs == 0) roots_.erase(node->salt);
      return;
    }
    if (!node->children.empty() || node->checkpoint != nullptr || node->refs > 0) return;
  }
}

std::vector<uint64_t> PrefixTree::CheckpointHashes(size_t limit, bool* truncated) const {
  std::vector<std::pair<uint64_t, uint64_t>> found;  // (used, hash)
  ForEachNode([&](Node* n) {
    if (n->checkpoint != nullptr && n->end() >= options_.page_tokens) {
      found.emplace_back(n->used, n->hash);
    }
  });
  std::sort(found.begin(), found.end(), std::greater<>());
  std::vector<uint64_t> out;
  for (const auto& [used, hash] : found) {
    if (std::find(out.begin(), out.end(), hash) != out.end()) continue;
    if (out.size() == limit) {
      if (truncated != nullptr) *truncated = true;
      return out;
    }
    out.push_back(hash);
  }
  if (truncated != nullptr) *truncated = false;
  return out;
}

}  // namespace ringserve::cache
