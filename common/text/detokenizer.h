#pragma once

#include <cstdint>
#include <string>

#include "absl/types/span.h"
#include "common/text/tokenizer.h"

namespace ringserve::text {

// Turns a stream of token ids into text deltas that are always complete UTF-8: bytes of a
// character split across tokens are held back until the character is complete. The
// concatenation of every Add() and the final Flush() equals tokenizer.Decode(all ids) exactly,
// including the U+FFFD that replace ill-formed bytes.
//
// Not thread-safe; one per generated sequence. The tokenizer must outlive it.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer* tokenizer, bool skip_special_tokens = false)
      : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

  // Appends one token; returns the text it completes (often all of it, sometimes nothing).
  std::string Add(uint32_t id);
  // Appends several tokens; returns the text they complete.
  std::string Add(absl::Span<const uint32_t> ids);
  // Ends the stream: returns the bytes still held back, each ill-formed piece as U+FFFD.
  std::string Flush();
  // How many bytes are held back (at most 3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  std::string Drain(bool final);

  const Tokenizer* tokenizer_;
  const bool skip_special_tokens_;
  std::string pending_;  // bytes of an unfinished character
};

}  // namespace ringserve::text
