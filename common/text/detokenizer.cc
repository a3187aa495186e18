#include "common/text/detokenizer.h"

#include "common/text/utf8.h"

namespace ringserve::text {

std::string IncrementalDetokenizer::Add(uint32_t id) {
  pending_.append(tokenizer_->TokenBytes(id, skip_special_tokens_));
  return Drain(/*final=*/false);
}

std::string IncrementalDetokenizer::Add(absl::Span<const uint32_t> ids) {
  for (uint32_t id : ids) pending_.append(tokenizer_->TokenBytes(id, skip_special_tokens_));
  return Drain(/*final=*/false);
}

std::string IncrementalDetokenizer::Flush() { return Drain(/*final=*/true); }

std::string IncrementalDetokenizer::Drain(bool final) {
  std::string text;
  const size_t consumed = AppendUtf8Lossy(pending_, final, &text);
  pending_.erase(0, consumed);
  return text;
}

}  // namespace ringserve::text
