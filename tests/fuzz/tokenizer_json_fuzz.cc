// Fuzzes the tokenizer loader (text::Tokenizer::FromJson) with the text of tokenizer.json,
// optionally followed by a NUL byte and the text of tokenizer_config.json, then a NUL byte and
// generation_config.json. An accepted tokenizer must encode and decode a fixed sample: its ids
// lie in the vocabulary, decoded text is valid UTF-8, and every token's text maps back to an id.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/text/tokenizer.h"
#include "common/text/utf8.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// Splits off the text up to the next NUL byte.
std::string_view TakePart(std::string_view* rest) {
  const size_t nul = rest->find('\0');
  const std::string_view part = rest->substr(0, nul);
  *rest = nul == std::string_view::npos ? std::string_view() : rest->substr(nul + 1);
  return part;
}

constexpr std::string_view kSample =
    "Hello, world! It's 2024: 12345 tokens.\n\t  <role>HUMAN</role>你好，世界 🙂 "
    "<|role_end|>Ünïcödé ﬁ ① x\r\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view tokenizer_json = TakePart(&rest);
  const std::string_view config_json = TakePart(&rest);
  const std::string_view generation_json = TakePart(&rest);
  auto tokenizer =
      ringserve::text::Tokenizer::FromJson(tokenizer_json, config_json, generation_json);
  if (!tokenizer.ok()) return 0;
  const ringserve::text::Tokenizer& t = **tokenizer;
  for (bool add_special : {false, true}) {
    auto ids = t.Encode(kSample, add_special);
    if (!ids.ok()) continue;
    for (uint32_t id : *ids) FUZZ_CHECK(id < t.vocab_size(), "id outside the vocabulary");
    FUZZ_CHECK(ringserve::text::ValidateUtf8(t.Decode(*ids)).ok(), "decoded text is not UTF-8");
  }
  for (uint32_t id = 0; id < t.vocab_size() && id < 4096; ++id) {
    if (auto token = t.IdToToken(id); token.has_value()) {
      auto back = t.TokenToId(*token);
      FUZZ_CHECK(back.has_value(), "a token's text does not map back to an id");
    }
  }
  return 0;
}
