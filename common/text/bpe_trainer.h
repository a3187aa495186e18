#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringserve::text {

// The Ring pre-tokenizer regex (llama.cpp's "bailingmoe" variant); digits split one at a time.
inline constexpr std::string_view kRingSplitPattern =
    R"re('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)re";

// The special tokens WriteTokenizerFiles places at the top of the id range, in id order: the
// first gets id vocab_size - kRingSpecialTokens.size(), the last vocab_size - 1.
inline constexpr std::array<std::string_view, 13> kRingSpecialTokens = {
    "<|startoftext|>",  "<|endoftext|>", "<|role_end|>", "<role>",       "</role>",
    "<think>",          "</think>",      "<tool_call>",  "</tool_call>", "<tool_response>",
    "</tool_response>", "[CLS]",         "[gMASK]"};

// The ids of kRingSpecialTokens in a tokenizer written by WriteTokenizerFiles(dir, vocab_size).
struct RingSpecialTokenIds {
  uint32_t startoftext;  // bos
  uint32_t endoftext;    // pad, and a stop id
  uint32_t role_end;     // eos: ends every turn
  uint32_t role_open;
  uint32_t role_close;
  uint32_t think_open;
  uint32_t think_close;
  uint32_t tool_call_open;
  uint32_t tool_call_close;
  uint32_t tool_response_open;
  uint32_t tool_response_close;
  uint32_t cls;
  uint32_t gmask;
};
RingSpecialTokenIds RingSpecialTokenIdsFor(int vocab_size);

// The smallest vocabulary WriteTokenizerFiles accepts: the 256 bytes plus the special tokens.
inline constexpr int kMinTrainedVocabSize = 256 + static_cast<int>(kRingSpecialTokens.size());
// The largest it accepts.
inline constexpr int kMaxTrainedVocabSize = 1 << 20;

// Trains a byte-level BPE on `corpus` (UTF-8; pre-tokenized with kRingSplitPattern) and returns
// the text of a HuggingFace tokenizer.json: BPE model, Split(kRingSplitPattern, Isolated) +
// ByteLevel(use_regex=false) pre-tokenizer, ByteLevel decoder. Ids 0..255 are the bytes (in
// GPT-2's order), then one id per merge, in the order learned (the most frequent pair first;
// ties broken by the smaller ids). `special_tokens` take the top ids, in the order given. When
// the corpus runs out of pairs before `vocab_size` ids, the gap is filled with special tokens
// named <|reserved_token_N|>. Deterministic.
absl::StatusOr<std::string> TrainByteLevelBpe(std::string_view corpus, int vocab_size,
                                              const std::vector<std::string>& special_tokens);

// Writes `dir`/tokenizer.json (trained on DefaultTrainingCorpus() with kRingSpecialTokens) and
// `dir`/tokenizer_config.json (the Ring settings and chat template: bos <|startoftext|>,
// eos <|role_end|>, pad <|endoftext|>, no automatic bos/eos) so that the ids number exactly
// `vocab_size`. Creates `dir` when needed. Callers find the special ids with
// RingSpecialTokenIdsFor(vocab_size) or Tokenizer::TokenToId.
absl::Status WriteTokenizerFiles(const std::string& dir, int vocab_size);

}  // namespace ringserve::text
