#include "common/text/bpe_trainer.h"

#include <string>
#include <vector>

#include "common/text/tokenizer.h"
#include "common/text/training_corpus.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ringserve::text {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> RingSpecials() {
  return std::vector<std::string>(kRingSpecialTokens.begin(), kRingSpecialTokens.end());
}

TEST(BpeTrainerTest, VocabularyHasExactlyTheRequestedSize) {
  for (int vocab_size : {kMinTrainedVocabSize, 512, 1000, 4096}) {
    absl::StatusOr<std::string> json =
        TrainByteLevelBpe(DefaultTrainingCorpus(), vocab_size, RingSpecials());
    ASSERT_TRUE(json.ok()) << json.status();
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(*json, "");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    EXPECT_EQ((*tokenizer)->vocab_size(), static_cast<uint32_t>(vocab_size));
    const RingSpecialTokenIds ids = RingSpecialTokenIdsFor(vocab_size);
    EXPECT_EQ((*tokenizer)->TokenToId("<|startoftext|>"), ids.startoftext);
    EXPECT_EQ((*tokenizer)->TokenToId("<|role_end|>"), ids.role_end);
    EXPECT_EQ((*tokenizer)->TokenToId("[gMASK]"), static_cast<uint32_t>(vocab_size - 1));
    for (uint32_t id = 0; id < (*tokenizer)->vocab_size(); ++id) {
      EXPECT_TRUE((*tokenizer)->IdToToken(id).has_value()) << "no token for id " << id;
    }
  }
}

TEST(BpeTrainerTest, IsDeterministicAndLearnsFrequentPairsFirst) {
  const std::string corpus = "low lower lowest low low newer newest";
  absl::StatusOr<std::string> a = TrainByteLevelBpe(corpus, 300, {"<s>"});
  absl::StatusOr<std::string> b = TrainByteLevelBpe(corpus, 300, {"<s>"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  const nlohmann::json json = nlohmann::json::parse(*a);
  // "lo" / "ow" are the most frequent pairs (5 each); the smaller ids win the tie.
  EXPECT_EQ(json["model"]["merges"][0], nlohmann::json::array({"l", "o"}));
  EXPECT_EQ(json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"], kRingSplitPattern);
  EXPECT_EQ(json["pre_tokenizer"]["pretokenizers"][1]["use_regex"], false);
  EXPECT_EQ(json["decoder"]["type"], "ByteLevel");
}

TEST(BpeTrainerTest, FillsWithReservedTokensWhenTheCorpusRunsOut) {
  absl::StatusOr<std::string> json = TrainByteLevelBpe("abab", 300, {"<s>"});
  ASSERT_TRUE(json.ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(*json, "");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 300u);
  EXPECT_EQ((*tokenizer)->TokenToId("<s>"), 299u);
  EXPECT_TRUE((*tokenizer)->TokenToId("<|reserved_token_0|>").has_value());
  EXPECT_EQ(*(*tokenizer)->Encode("abab"), std::vector<uint32_t>{257});
}

TEST(BpeTrainerTest, RejectsBadArguments) {
  EXPECT_THAT(TrainByteLevelBpe("x", 100, RingSpecials()).status().message(),
              HasSubstr("vocab_size 100 is outside the range [269, "));
  EXPECT_FALSE(TrainByteLevelBpe("x", 300, {"<s>", "<s>"}).ok());
  EXPECT_FALSE(TrainByteLevelBpe("bad \xFF", 300, {}).ok());
  EXPECT_FALSE(WriteTokenizerFiles("/proc/no/such/dir", 512).ok());
}

}  // namespace
}  // namespace ringserve::text
