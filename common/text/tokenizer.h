#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/text/regex.h"

namespace ringserve::text {

// A token matched as a whole in the input before pre-tokenization (a HuggingFace "added token"),
// such as <|role_end|>.
struct AddedToken {
  uint32_t id = 0;
  std::string content;
  bool special = false;      // dropped by Decode(..., skip_special_tokens=true)
  bool lstrip = false;       // absorbs the whitespace before it
  bool rstrip = false;       // absorbs the whitespace after it
  bool single_word = false;  // matches only between non-word characters
  bool normalized = false;   // matched in the normalized text rather than the raw input
};

// The parts of tokenizer_config.json (and generation_config.json) the server uses.
struct TokenizerConfig {
  std::string bos_token;  // empty when the config names none
  std::string eos_token;
  std::string pad_token;
  // Whether Encode(text, /*add_special_tokens=*/true) adds bos / eos. When the config sets
  // either key, the two keys replace tokenizer.json's post-processor.
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  std::string chat_template;  // Jinja source; empty when the checkpoint has none
};

// A byte-level BPE tokenizer loaded from a HuggingFace tokenizer.json (the format of the Ring
// checkpoints): GPT-2 byte alphabet, merges, added tokens, optional Unicode normalization, a
// pre-tokenizer of Split(regex) / Digits / ByteLevel steps and the ByteLevel decoder. Encoding
// gives the same ids as the HuggingFace `tokenizers` library for the supported components;
// anything else is rejected when loading.
//
// Immutable after creation; every method is const and thread-safe.
class Tokenizer {
 public:
  // Loads `dir`/tokenizer.json and, when present, tokenizer_config.json, chat_template.jinja
  // (which then replaces the config's chat_template) and generation_config.json (for the stop
  // ids).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir);
  // Builds a tokenizer from the text of tokenizer.json and tokenizer_config.json (which may be
  // empty); `generation_config_json` (may be empty) adds to the stop ids.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      std::string_view tokenizer_json, std::string_view tokenizer_config_json,
      std::string_view generation_config_json = {});

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. Added tokens written in the text (e.g. "<role>") become their ids.
  // With `add_special_tokens`, bos/eos are added as the config (or tokenizer.json's
  // post-processor) asks. Fails with InvalidArgument, naming the byte offset, when `text` is not
  // well-formed UTF-8. Fails with ResourceExhausted, naming the limit, as soon as the ids are
  // known to pass `max_tokens`: the rest of the text is not encoded (nothing starts when the
  // bytes at the longest token's bytes per id pass the limit, pre-tokenizing stops once its
  // pieces pass it, and byte-pair merging does not start when the pieces, at the longest
  // token's bytes each, pass it).
  absl::StatusOr<std::vector<uint32_t>> Encode(std::string_view text,
                                               bool add_special_tokens = false,
                                               size_t max_tokens = SIZE_MAX) const;

  // The text of `ids`. Ids outside the vocabulary are skipped; byte sequences that are not valid
  // UTF-8 become U+FFFD (one per maximal ill-formed subsequence, like HuggingFace's decoder).
  std::string Decode(absl::Span<const uint32_t> ids, bool skip_special_tokens = false) const;

  // The bytes `id` contributes to decoded text before UTF-8 repair: empty for ids outside the
  // vocabulary and, when `skip_special_tokens`, for special tokens. Decode(ids) is the lossy
  // UTF-8 conversion of the concatenation.
  std::string_view TokenBytes(uint32_t id, bool skip_special_tokens = false) const;

  // The id of a vocabulary or added token, written as in tokenizer.json (byte-level form for
  // BPE tokens, e.g. "Ġthe").
  std::optional<uint32_t> TokenToId(std::string_view token) const;
  // The token string of `id` as written in tokenizer.json, or nullopt outside the vocabulary.
  std::optional<std::string> IdToToken(uint32_t id) const;
  bool IsSpecial(uint32_t id) const;

  // One past the largest id (BPE vocabulary and added tokens together).
  uint32_t vocab_size() const { return static_cast<uint32_t>(id_to_token_.size()); }
  const TokenizerConfig& config() const { return config_; }
  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }
  std::optional<uint32_t> bos_token_id() const;
  std::optional<uint32_t> eos_token_id() const;
  // Ids that end generation: the config's eos_token and generation_config.json's
  // eos_token_id (an id or a list), without duplicates, in that order.
  const std::vector<uint32_t>& stop_token_ids() const { return stop_token_ids_; }

 private:
  enum class SplitBehavior {
    kRemoved,
    kIsolated,
    kMergedWithPrevious,
    kMergedWithNext,
    kContiguous
  };
  enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

  // One pre-tokenizer step, applied in order to every piece of text.
  struct PreTokenizerStep {
    enum class Kind { kSplit, kByteLevel };
    Kind kind = Kind::kSplit;
    std::unique_ptr<Regex> regex;  // kSplit with a regex pattern; the GPT-2 regex for kByteLevel
    std::string literal;           // kSplit with a string pattern
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // kByteLevel
  };

  // Finds added tokens in text: candidates by first byte, longest first.
  struct AddedTokenMatcher {
    std::array<std::vector<uint32_t>, 256> by_first_byte;  // indices into `contents`
    std::vector<std::string> contents;
    std::vector<uint32_t> token_index;  // index into added_tokens_
  };

  struct Merge {
    uint32_t rank;
    uint32_t id;
  };

  // A piece of the input: an added token, or text still to be tokenized.
  struct Segment {
    std::string_view text;
    std::optional<uint32_t> token_id;
  };

  class EncodeState;

  Tokenizer() = default;

  absl::Status LoadTokenizerJson(std::string_view json_text);
  absl::Status LoadConfigJson(std::string_view json_text);
  absl::Status LoadGenerationConfigJson(std::string_view json_text);
  absl::Status Finish();

  std::vector<Segment> SplitAddedTokens(std::string_view text,
                                        const AddedTokenMatcher& matcher) const;
  absl::StatusOr<std::string> Normalize(std::string_view text) const;
  absl::Status EncodeText(std::string_view text, size_t max_tokens, EncodeState* state,
                          std::vector<uint32_t>* ids) const;
  void EncodeWord(std::string_view bytes, EncodeState* state, std::vector<uint32_t>* ids) const;
  void ApplyTemplate(std::vector<uint32_t>* ids) const;

  std::vector<std::string> id_to_token_;  // [vocab_size]; empty where no token has the id
  std::vector<std::string> id_bytes_;     // [vocab_size]; decoded bytes of each id
  std::vector<bool> is_special_;          // [vocab_size]
  absl::flat_hash_map<std::string, uint32_t> token_to_id_;
  absl::flat_hash_map<std::string, uint32_t> bpe_bytes_to_id_;  // BPE tokens by their bytes
  size_t max_bpe_token_bytes_ = 1;                              // bytes of the longest BPE token
  std::array<uint32_t, 256> byte_ids_{};                        // BPE id of each single byte
  absl::flat_hash_map<uint64_t, Merge> merges_;                 // by (left id << 32 | right id)
  bool ignore_merges_ = false;

  std::vector<AddedToken> added_tokens_;
  AddedTokenMatcher raw_matcher_;
  AddedTokenMatcher normalized_matcher_;
  std::vector<NormalForm> normalizers_;
  std::vector<PreTokenizerStep> pre_tokenizer_;
  bool drops_pieces_ = false;  // a step removes what it matches (SplitBehavior::kRemoved)
  // The post-processor's single-sequence template: ids to add, and where the text goes.
  std::vector<uint32_t> template_prefix_;
  std::vector<uint32_t> template_suffix_;

  TokenizerConfig config_;
  std::vector<uint32_t> stop_token_ids_;
};

}  // namespace ringserve::text
