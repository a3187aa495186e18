#include "common/text/detokenizer.h"

#include <random>
#include <string>
#include <vector>

#include "common/text/byte_level.h"
#include "common/text/training_corpus.h"
#include "common/text/utf8.h"
#include "gtest/gtest.h"
#include "tests/common/text/test_util.h"

namespace ringserve::text {
namespace {

// Feeds `ids` one at a time and returns the deltas; checks each is well-formed UTF-8.
std::vector<std::string> Stream(const Tokenizer& tokenizer, const std::vector<uint32_t>& ids,
                                bool skip_special_tokens = false) {
  IncrementalDetokenizer detokenizer(&tokenizer, skip_special_tokens);
  std::vector<std::string> deltas;
  for (uint32_t id : ids) deltas.push_back(detokenizer.Add(id));
  deltas.push_back(detokenizer.Flush());
  for (const std::string& delta : deltas) EXPECT_TRUE(ValidateUtf8(delta).ok()) << delta;
  return deltas;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& part : parts) out += part;
  return out;
}

class DetokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override { tokenizer_ = testing::TrainedTokenizer(1024); }

  uint32_t ByteId(uint8_t b) const {
    return *tokenizer_->TokenToId(ByteLevelAlphabet::Get().Encode(std::string(1, b)));
  }

  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(DetokenizerTest, StreamingEqualsFullDecode) {
  const std::string text = DefaultTrainingCorpus();
  std::vector<uint32_t> ids = *tokenizer_->Encode(text);
  EXPECT_EQ(Join(Stream(*tokenizer_, ids)), tokenizer_->Decode(ids));
  EXPECT_EQ(Join(Stream(*tokenizer_, ids)), text);
  EXPECT_EQ(Join(Stream(*tokenizer_, ids, true)), tokenizer_->Decode(ids, true));
}

TEST_F(DetokenizerTest, HoldsBackSplitCharacters) {
  // "€" is E2 82 AC; fed one byte at a time, it appears only with the last byte.
  std::vector<std::string> deltas =
      Stream(*tokenizer_, {ByteId('a'), ByteId(0xE2), ByteId(0x82), ByteId(0xAC), ByteId('b')});
  EXPECT_EQ(deltas, (std::vector<std::string>{"a", "", "", "\u20ac", "b", ""}));
}

TEST_F(DetokenizerTest, IllFormedBytesMatchFullDecode) {
  const std::vector<std::vector<uint32_t>> cases = {
      {ByteId(0xE2), ByteId(0x82), ByteId('x')},  // truncated, then ASCII
      {ByteId(0xE2), ByteId(0x82)},               // truncated at the end
      {ByteId(0x80), ByteId('y'), ByteId(0xFF)},  // stray bytes
      {ByteId(0xF0), ByteId(0x9F), ByteId(0x98), ByteId(0x80), ByteId(0xF0)},  // 😀 + lead
      {ByteId(0xED), ByteId(0xA0), ByteId(0x80)},                              // a surrogate
  };
  for (const std::vector<uint32_t>& ids : cases) {
    EXPECT_EQ(Join(Stream(*tokenizer_, ids)), tokenizer_->Decode(ids));
  }
}

TEST_F(DetokenizerTest, RandomIdsMatchFullDecode) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> any_id(0, tokenizer_->vocab_size() + 10);
  for (int round = 0; round < 200; ++round) {
    std::vector<uint32_t> ids(1 + rng() % 40);
    for (uint32_t& id : ids) id = any_id(rng);
    EXPECT_EQ(Join(Stream(*tokenizer_, ids)), tokenizer_->Decode(ids));
    EXPECT_EQ(Join(Stream(*tokenizer_, ids, true)), tokenizer_->Decode(ids, true));
  }
}

}  // namespace
}  // namespace ringserve::text
