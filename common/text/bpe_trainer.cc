#include "common/text/bpe_trainer.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <queue>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"
#include "common/text/byte_level.h"
#include "common/text/regex.h"
#include "common/text/ring_chat_template.h"
#include "common/text/training_corpus.h"
#include "common/text/utf8.h"
#include "nlohmann/json.hpp"

namespace ringserve::text {
namespace {

using OrderedJson = nlohmann::ordered_json;

uint64_t PairKey(uint32_t left, uint32_t right) { return (uint64_t{left} << 32) | right; }

// A distinct pre-token of the corpus as a sequence of token ids, and how often it occurs.
struct Word {
  std::vector<uint32_t> symbols;
  int64_t count;
};

// A pair and its count when it was queued; stale entries are skipped when popped.
struct QueuedPair {
  int64_t count;
  uint32_t left;
  uint32_t right;
  // Max-heap on count; among equal counts the smaller (left, right) first.
  bool operator<(const QueuedPair& other) const {
    return std::tie(count, other.left, other.right) < std::tie(other.count, left, right);
  }
};

// Learns merges on the words until `target_tokens` BPE tokens exist or no pair is left. Keeps
// pair counts up to date incrementally and picks the best pair from a lazily refreshed heap.
// Not thread-safe; one per TrainByteLevelBpe call.
class Trainer {
 public:
  Trainer(std::vector<Word> words, size_t target_tokens)
      : words_(std::move(words)), target_tokens_(target_tokens) {}

  void Run() {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
    for (uint8_t b : alphabet.BytesInOrder()) {
      token_bytes_.emplace_back(1, static_cast<char>(b));
      bytes_to_id_.emplace(token_bytes_.back(), token_bytes_.size() - 1);
    }
    for (uint32_t w = 0; w < words_.size(); ++w) {
      AddPairs(w, +1);
    }
    for (const auto& [key, count] : pair_counts_) {
      queue_.push({count, static_cast<uint32_t>(key >> 32), static_cast<uint32_t>(key)});
    }
    touched_.clear();
    while (token_bytes_.size() < target_tokens_ && !queue_.empty()) {
      const QueuedPair top = queue_.top();
      queue_.pop();
      const uint64_t key = PairKey(top.left, top.right);
      auto it = pair_counts_.find(key);
      if (it == pair_counts_.end() || it->second != top.count || top.count <= 0) continue;
      Merge(top.left, top.right);
    }
  }

  const std::vector<std::string>& token_bytes() const { return token_bytes_; }
  const std::vector<std::pair<uint32_t, uint32_t>>& merges() const { return merges_; }

 private:
  // Adds `sign` times word w's count to the counts of its adjacent pairs.
  void AddPairs(uint32_t w, int sign) {
    const Word& word = words_[w];
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t key = PairKey(word.symbols[i], word.symbols[i + 1]);
      pair_counts_[key] += sign * word.count;
      touched_.insert(key);
      if (sign > 0) pair_words_[key].push_back(w);
    }
  }

  void Merge(uint32_t left, uint32_t right) {
    std::string bytes = token_bytes_[left] + token_bytes_[right];
    uint32_t merged;
    if (auto it = bytes_to_id_.find(bytes); it != bytes_to_id_.end()) {
      merged = it->second;
    } else {
      merged = static_cast<uint32_t>(token_bytes_.size());
      bytes_to_id_.emplace(bytes, merged);
      token_bytes_.push_back(std::move(bytes));
    }
    merges_.emplace_back(left, right);

    const uint64_t key = PairKey(left, right);
    std::vector<uint32_t> affected = std::move(pair_words_[key]);
    pair_words_.erase(key);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    touched_.clear();
    for (uint32_t w : affected) {
      std::vector<uint32_t>& symbols = words_[w].symbols;
      bool present = false;
      for (size_t i = 0; i + 1 < symbols.size() && !present; ++i) {
        present = symbols[i] == left && symbols[i + 1] == right;
      }
      if (!present) continue;
      AddPairs(w, -1);
      std::vector<uint32_t> rewritten;
      rewritten.reserve(symbols.size());
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          rewritten.push_back(merged);
          ++i;
        } else {
          rewritten.push_back(symbols[i]);
        }
      }
      symbols = std::move(rewritten);
      AddPairs(w, +1);
    }
    for (uint64_t touched : touched_) {
      auto it = pair_counts_.find(touched);
      if (it->second <= 0) {
        pair_counts_.erase(it);
        continue;
      }
      queue_.push(
          {it->second, static_cast<uint32_t>(touched >> 32), static_cast<uint32_t>(touched)});
    }
  }

  std::vector<Word> words_;
  const size_t target_tokens_;
  std::vector<std::string> token_bytes_;  // by id
  absl::flat_hash_map<std::string, uint32_t> bytes_to_id_;
  std::vector<std::pair<uint32_t, uint32_t>> merges_;
  absl::flat_hash_map<uint64_t, int64_t> pair_counts_;
  absl::flat_hash_map<uint64_t, std::vector<uint32_t>> pair_words_;  // may hold stale words
  absl::flat_hash_set<uint64_t> touched_;
  std::priority_queue<QueuedPair> queue_;
};

OrderedJson AddedTokenJson(uint32_t id, std::string_view content) {
  OrderedJson token = OrderedJson::object();
  token["id"] = id;
  token["content"] = std::string(content);
  token["single_word"] = false;
  token["lstrip"] = false;
  token["rstrip"] = false;
  token["normalized"] = false;
  token["special"] = true;
  return token;
}

}  // namespace

RingSpecialTokenIds RingSpecialTokenIdsFor(int vocab_size) {
  const auto base = static_cast<uint32_t>(vocab_size - static_cast<int>(kRingSpecialTokens.size()));
  return {base,     base + 1, base + 2, base + 3,  base + 4,  base + 5, base + 6,
          base + 7, base + 8, base + 9, base + 10, base + 11, base + 12};
}

absl::StatusOr<std::string> TrainByteLevelBpe(std::string_view corpus, int vocab_size,
                                              const std::vector<std::string>& special_tokens) {
  const int min_size = 256 + static_cast<int>(special_tokens.size());
  if (vocab_size < min_size || vocab_size > kMaxTrainedVocabSize) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size ", vocab_size,
                                                   " is outside the range [", min_size, ", ",
                                                   kMaxTrainedVocabSize, "]"));
  }
  RETURN_IF_ERROR(ValidateUtf8(corpus));
  absl::flat_hash_set<std::string> seen_specials;
  for (const std::string& token : special_tokens) {
    if (token.empty() || !seen_specials.insert(token).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("special token '", token, "' is empty or repeated"));
    }
    RETURN_IF_ERROR(ValidateUtf8(token));
  }

  // Distinct pre-tokens, sorted so that training does not depend on hash order.
  ASSIGN_OR_RETURN(std::unique_ptr<Regex> split, Regex::Create(kRingSplitPattern));
  ASSIGN_OR_RETURN(auto matches, split->FindAll(corpus));
  std::map<std::string_view, int64_t> counts;
  size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > prev) ++counts[corpus.substr(prev, begin - prev)];
    ++counts[corpus.substr(begin, end - begin)];
    prev = end;
  }
  if (prev < corpus.size()) ++counts[corpus.substr(prev)];

  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  std::array<uint32_t, 256> byte_id{};
  for (uint32_t i = 0; i < 256; ++i) byte_id[alphabet.BytesInOrder()[i]] = i;
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [text, count] : counts) {
    Word word{{}, count};
    for (char c : text) word.symbols.push_back(byte_id[static_cast<uint8_t>(c)]);
    words.push_back(std::move(word));
  }

  const size_t bpe_size = static_cast<size_t>(vocab_size) - special_tokens.size();
  Trainer trainer(std::move(words), bpe_size);
  trainer.Run();

  OrderedJson vocab = OrderedJson::object();
  const std::vector<std::string>& token_bytes = trainer.token_bytes();
  for (uint32_t id = 0; id < token_bytes.size(); ++id) {
    vocab[alphabet.Encode(token_bytes[id])] = id;
  }
  OrderedJson merges = OrderedJson::array();
  for (const auto& [left, right] : trainer.merges()) {
    merges.push_back({alphabet.Encode(token_bytes[left]), alphabet.Encode(token_bytes[right])});
  }
  OrderedJson added = OrderedJson::array();
  uint32_t next_id = static_cast<uint32_t>(token_bytes.size());
  for (int reserved = 0; next_id < bpe_size; ++reserved) {
    added.push_back(AddedTokenJson(next_id++, absl::StrCat("<|reserved_token_", reserved, "|>")));
  }
  for (const std::string& token : special_tokens) added.push_back(AddedTokenJson(next_id++, token));

  OrderedJson split_step = OrderedJson::object();
  split_step["type"] = "Split";
  split_step["pattern"] = {{"Regex", std::string(kRingSplitPattern)}};
  split_step["behavior"] = "Isolated";
  split_step["invert"] = false;
  OrderedJson byte_level_step = OrderedJson::object();
  byte_level_step["type"] = "ByteLevel";
  byte_level_step["add_prefix_space"] = false;
  byte_level_step["trim_offsets"] = false;
  byte_level_step["use_regex"] = false;
  OrderedJson pre_tokenizer = OrderedJson::object();
  pre_tokenizer["type"] = "Sequence";
  pre_tokenizer["pretokenizers"] = {split_step, byte_level_step};
  OrderedJson decoder = OrderedJson::object();
  decoder["type"] = "ByteLevel";
  decoder["add_prefix_space"] = false;
  decoder["trim_offsets"] = false;
  decoder["use_regex"] = false;
  OrderedJson model = OrderedJson::object();
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  model["vocab"] = std::move(vocab);
  model["merges"] = std::move(merges);

  OrderedJson root = OrderedJson::object();
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = std::move(added);
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = std::move(pre_tokenizer);
  root["post_processor"] = nullptr;
  root["decoder"] = std::move(decoder);
  root["model"] = std::move(model);
  return root.dump(1, ' ', /*ensure_ascii=*/false);
}

absl::Status WriteTokenizerFiles(const std::string& dir, int vocab_size) {
  std::vector<std::string> specials(kRingSpecialTokens.begin(), kRingSpecialTokens.end());
  ASSIGN_OR_RETURN(std::string tokenizer_json,
                   TrainByteLevelBpe(DefaultTrainingCorpus(), vocab_size, specials));

  OrderedJson config = OrderedJson::object();
  config["add_bos_token"] = false;
  config["add_eos_token"] = false;
  config["bos_token"] = "<|startoftext|>";
  config["chat_template"] = std::string(kRingChatTemplate);
  config["clean_up_tokenization_spaces"] = false;
  config["cls_token"] = "[CLS]";
  config["eos_token"] = "<|role_end|>";
  config["fast_tokenizer"] = true;
  config["gmask_token"] = "[gMASK]";
  config["model_max_length"] = 1 << 20;
  config["pad_token"] = "<|endoftext|>";
  config["tokenizer_class"] = "PreTrainedTokenizerFast";

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
  }
  const std::filesystem::path root(dir);
  RETURN_IF_ERROR(base::WriteStringToFile((root / "tokenizer.json").string(), tokenizer_json));
  return base::WriteStringToFile((root / "tokenizer_config.json").string(),
                                 config.dump(2, ' ', /*ensure_ascii=*/false));
}

}  // namespace ringserve::text
