// Fuzzes text::Tokenizer::Encode and Decode with two tokenizers trained at start-up on the
// embedded corpus with the Ring special tokens: the Ring layout (Split + ByteLevel, no
// normalizer), and a variant with an NFKC normalizer, Digits, added tokens that strip
// whitespace or match single words, and a bos/eos template. The first input byte picks the
// tokenizer and the flags; the rest is the text, or, with bit 0x80, a list of 16-bit ids to
// decode. Properties: ids lie in the vocabulary; decoded text is valid UTF-8; with the Ring
// layout, Decode(Encode(text)) == text for every valid UTF-8 text.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/text/bpe_trainer.h"
#include "common/text/tokenizer.h"
#include "common/text/training_corpus.h"
#include "common/text/utf8.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_check.h"

namespace {

using ringserve::text::Tokenizer;

constexpr char kRingConfig[] =
    R"({"bos_token": "<|startoftext|>", "eos_token": "<|role_end|>", "pad_token": "<|endoftext|>",
        "add_bos_token": false, "add_eos_token": false})";

std::unique_ptr<Tokenizer> Make(bool variant) {
  std::vector<std::string> specials(ringserve::text::kRingSpecialTokens.begin(),
                                    ringserve::text::kRingSpecialTokens.end());
  auto json =
      ringserve::text::TrainByteLevelBpe(ringserve::text::kEmbeddedTrainingText, 600, specials);
  FUZZ_CHECK(json.ok(), "training the fuzz tokenizer failed");
  std::string config = kRingConfig;
  if (variant) {
    nlohmann::ordered_json root = nlohmann::ordered_json::parse(*json);
    root["normalizer"] = {{"type", "Sequence"},
                          {"normalizers", nlohmann::json::array({{{"type", "NFKC"}}})}};
    auto& steps = root["pre_tokenizer"]["pretokenizers"];
    const nlohmann::ordered_json digits = {{"type", "Digits"}, {"individual_digits", false}};
    steps.insert(steps.begin(), digits);
    for (auto& token : root["added_tokens"]) {
      const std::string content = token["content"];
      if (content == "<role>") token["lstrip"] = true;
      if (content == "</role>") token["rstrip"] = true;
      if (content == "<think>") token["single_word"] = true;
      if (content == "[CLS]") token["normalized"] = true;
    }
    const uint32_t bos = root["added_tokens"][0]["id"];
    root["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<|startoftext|>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
        {"special_tokens", {{"<|startoftext|>", {{"ids", {bos}}}}}}};
    *json = root.dump();
    config = "{}";
  }
  auto tokenizer = Tokenizer::FromJson(*json, config);
  FUZZ_CHECK(tokenizer.ok(), std::string(tokenizer.status().message()).c_str());
  return std::move(*tokenizer);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Tokenizer* const ring = Make(false).release();
  static const Tokenizer* const variant = Make(true).release();
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const Tokenizer& tokenizer = (flags & 1) != 0 ? *variant : *ring;
  const bool add_special = (flags & 2) != 0;
  const bool skip_special = (flags & 4) != 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((flags & 0x80) != 0) {
    std::vector<uint32_t> ids;
    for (size_t i = 0; i + 1 < rest.size(); i += 2) {
      ids.push_back(static_cast<uint8_t>(rest[i]) | static_cast<uint8_t>(rest[i + 1]) << 8);
    }
    const std::string text = tokenizer.Decode(ids, skip_special);
    FUZZ_CHECK(ringserve::text::ValidateUtf8(text).ok(), "decoded text is not valid UTF-8");
    return 0;
  }
  auto ids = tokenizer.Encode(rest, add_special);
  const bool valid = ringserve::text::ValidateUtf8(rest).ok();
  FUZZ_CHECK(ids.ok() == valid, "Encode failed on valid UTF-8 or accepted invalid UTF-8");
  if (!ids.ok()) return 0;
  for (uint32_t id : *ids) FUZZ_CHECK(id < tokenizer.vocab_size(), "id outside the vocabulary");
  const std::string text = tokenizer.Decode(*ids, skip_special);
  FUZZ_CHECK(ringserve::text::ValidateUtf8(text).ok(), "decoded text is not valid UTF-8");
  if (&tokenizer == ring && !add_special && !skip_special) {
    FUZZ_CHECK(text == rest, "Decode(Encode(text)) != text");
  }
  return 0;
}
