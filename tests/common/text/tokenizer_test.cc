#include "common/text/tokenizer.h"

#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/text/bpe_trainer.h"
#include "common/text/regex.h"
#include "common/text/training_corpus.h"
#include "common/text/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/text/test_util.h"

namespace ringserve::text {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TinyTokenizerJson;
using testing::TrainedTokenizer;

std::unique_ptr<Tokenizer> Tiny(const std::vector<std::pair<std::string, std::string>>& merges,
                                const std::vector<std::string>& added = {},
                                const nlohmann::json& overrides = nlohmann::json::object(),
                                std::string_view config = "") {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::FromJson(TinyTokenizerJson(merges, added, overrides), config);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

std::vector<uint32_t> Ids(const Tokenizer& tokenizer, std::string_view text) {
  absl::StatusOr<std::vector<uint32_t>> ids = tokenizer.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<uint32_t>{};
}

std::vector<std::string> Tokens(const Tokenizer& tokenizer, std::string_view text) {
  std::vector<std::string> tokens;
  for (uint32_t id : Ids(tokenizer, text)) tokens.push_back(tokenizer.IdToToken(id).value_or("?"));
  return tokens;
}

TEST(TokenizerTest, MergesApplyLowestRankFirst) {
  // "b c" outranks "a b", so "abc" becomes a + bc, then "a bc" joins them.
  auto tokenizer = Tiny({{"b", "c"}, {"a", "b"}, {"a", "bc"}});
  EXPECT_THAT(Tokens(*tokenizer, "abc"), ElementsAre("abc"));
  EXPECT_THAT(Tokens(*tokenizer, "abab"), ElementsAre("ab", "ab"));
  // The other order: "a b" first leaves ab + c, and no merge joins them.
  auto other = Tiny({{"a", "b"}, {"b", "c"}, {"a", "bc"}});
  EXPECT_THAT(Tokens(*other, "abc"), ElementsAre("ab", "c"));
}

TEST(TokenizerTest, EqualRanksMergeLeftmostFirst) {
  auto tokenizer = Tiny({{"a", "a"}});
  EXPECT_THAT(Tokens(*tokenizer, "aaa"), ElementsAre("aa", "a"));
  EXPECT_THAT(Tokens(*tokenizer, "aaaa"), ElementsAre("aa", "aa"));
}

TEST(TokenizerTest, AcceptsStringMerges) {
  nlohmann::json json = nlohmann::json::parse(TinyTokenizerJson({{"a", "b"}, {" ", "ab"}}));
  nlohmann::json strings = nlohmann::json::array();
  for (const auto& merge : json["model"]["merges"]) {
    strings.push_back(merge[0].get<std::string>() + " " + merge[1].get<std::string>());
  }
  json["model"]["merges"] = strings;
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromJson(json.dump(), "");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(Tokens(**tokenizer, "x ab"), ElementsAre("x", "Ġab"));
}

TEST(TokenizerTest, PreTokenizerSplitsDigitsAndContractions) {
  auto tokenizer = Tiny({{"1", "2"}, {"'", "s"}, {"i", "t"}, {" ", "it"}});
  // Digits go one at a time, so the "1 2" merge never applies.
  EXPECT_THAT(Tokens(*tokenizer, "12"), ElementsAre("1", "2"));
  EXPECT_THAT(Tokens(*tokenizer, "it's it"), ElementsAre("it", "'s", "Ġit"));
  EXPECT_THAT(Tokens(*tokenizer, "IT'S"), ElementsAre("I", "T", "'", "S"));
}

TEST(TokenizerTest, AddedTokensMatchWholeBeforeBpe) {
  auto tokenizer = Tiny({{"<", "r"}}, {"<role>", "</role>", "<|role_end|>"});
  const uint32_t role = *tokenizer->TokenToId("<role>");
  const uint32_t role_close = *tokenizer->TokenToId("</role>");
  const uint32_t role_end = *tokenizer->TokenToId("<|role_end|>");
  std::vector<uint32_t> ids = Ids(*tokenizer, "<role>HUMAN</role>hi<|role_end|>");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), role);
  EXPECT_EQ(ids.back(), role_end);
  EXPECT_NE(std::find(ids.begin(), ids.end(), role_close), ids.end());
  // A near miss is ordinary text.
  std::vector<uint32_t> near = Ids(*tokenizer, "<rol>");
  EXPECT_EQ(std::find(near.begin(), near.end(), role), near.end());
  EXPECT_TRUE(tokenizer->IsSpecial(role));
  EXPECT_EQ(tokenizer->Decode(ids), "<role>HUMAN</role>hi<|role_end|>");
  EXPECT_EQ(tokenizer->Decode(ids, /*skip_special_tokens=*/true), "HUMANhi");
}

TEST(TokenizerTest, LongestAddedTokenWins) {
  auto tokenizer = Tiny({}, {"<a>", "<a><b>"});
  EXPECT_THAT(Ids(*tokenizer, "<a><b><a>"),
              ElementsAre(*tokenizer->TokenToId("<a><b>"), *tokenizer->TokenToId("<a>")));
}

TEST(TokenizerTest, InvalidUtf8NamesTheOffset) {
  auto tokenizer = Tiny({});
  absl::StatusOr<std::vector<uint32_t>> ids = tokenizer->Encode("abc\xE4\xB8xyz");
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("byte offset 3"));
  EXPECT_FALSE(tokenizer->Encode("\xC0\xAF").ok());          // overlong
  EXPECT_FALSE(tokenizer->Encode("\xED\xA0\x80").ok());      // surrogate
  EXPECT_FALSE(tokenizer->Encode("\xF4\x90\x80\x80").ok());  // above U+10FFFF
}

TEST(TokenizerTest, DecodeReplacesIllFormedBytesLikeHuggingFace) {
  auto tokenizer = Tiny({});
  auto byte_id = [&](uint8_t b) {
    return *tokenizer->TokenToId(ByteLevelAlphabet::Get().Encode(std::string(1, b)));
  };
  // An unfinished 3-byte sequence is one U+FFFD; a lone continuation byte is another.
  EXPECT_EQ(tokenizer->Decode({byte_id('a'), byte_id(0xE4), byte_id(0xB8), byte_id('b')}),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(tokenizer->Decode({byte_id(0x80), byte_id(0x80)}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer->Decode({byte_id(0xE4), byte_id(0xB8)}), "\xEF\xBF\xBD");
  // Ids outside the vocabulary are skipped.
  EXPECT_EQ(tokenizer->Decode({byte_id('o'), 999999, byte_id('k')}), "ok");
}

TEST(TokenizerTest, RoundTripsTheTrainingCorpus) {
  auto tokenizer = TrainedTokenizer(2048);
  const std::string corpus = DefaultTrainingCorpus();
  std::vector<uint32_t> ids = Ids(*tokenizer, corpus);
  EXPECT_LT(ids.size(), corpus.size() / 2);
  EXPECT_EQ(tokenizer->Decode(ids), corpus);
  for (std::string_view text :
       {"", " ", "\n\n", "a", "日本", "👨‍👩‍👧", "e\u0301", "  x  ", "1234"}) {
    EXPECT_EQ(tokenizer->Decode(Ids(*tokenizer, text)), text);
  }
}

TEST(TokenizerTest, EncodeStopsAtMaxTokens) {
  auto tokenizer = TrainedTokenizer(1024);
  const std::string text = "The quick brown fox jumps over the lazy dog <|role_end|> again.";
  const std::vector<uint32_t> all = Ids(*tokenizer, text);
  absl::StatusOr<std::vector<uint32_t>> capped = tokenizer->Encode(text, false, all.size());
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ(*capped, all);
  for (size_t limit : {size_t{0}, all.size() / 2, all.size() - 1}) {
    capped = tokenizer->Encode(text, false, limit);
    EXPECT_EQ(capped.status().code(), absl::StatusCode::kResourceExhausted) << limit;
    EXPECT_THAT(capped.status().message(),
                HasSubstr(absl::StrCat("more than the limit of ", limit, " tokens")));
  }
  absl::StatusOr<std::unique_ptr<Regex>> regex = Regex::Create("a+|x");
  ASSERT_TRUE(regex.ok());
  EXPECT_EQ((*regex)->FindAll("a b aa b a", 2)->size(), 3u);  // stops at the third match
  EXPECT_EQ((*regex)->FindAll("a b aa b a")->size(), 3u);
  EXPECT_EQ((*regex)->FindAll("a b aa b a x", 1)->size(), 2u);
  // Many pieces: refused while pre-tokenizing, before any merging.
  std::string words;
  for (int i = 0; i < 1'000'000; ++i) words += i % 2 == 0 ? "a " : "b ";
  EXPECT_EQ(tokenizer->Encode(words, false, 4096).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(tokenizer->Encode(std::string(1'000'000, 'x'), false, 10).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(TokenizerTest, RandomTextRoundTripsAndRandomBytesFailCleanly) {
  auto tokenizer = TrainedTokenizer(1024);
  std::mt19937 rng(42);
  const char32_t pool[] = {'a',  'Z',   '0',    ' ',    '\n',    '\t',   '\'',   '<',  '|',
                           0xE9, 0x301, 0x4E2D, 0x3000, 0x1F600, 0x200D, 0xFEFF, 0x85, 0x10FFFF};
  for (int round = 0; round < 300; ++round) {
    std::string text;
    for (int i = rng() % 64; i > 0; --i) {
      AppendCodePoint(pool[rng() % std::size(pool)], &text);
      if (rng() % 16 == 0) text += "<|role_end|>";
    }
    EXPECT_EQ(tokenizer->Decode(Ids(*tokenizer, text)), text);

    std::string bytes;
    for (int i = rng() % 16; i > 0; --i) bytes.push_back(static_cast<char>(rng()));
    absl::StatusOr<std::vector<uint32_t>> ids = tokenizer->Encode(bytes);
    if (ids.ok()) {
      EXPECT_EQ(tokenizer->Decode(*ids), bytes);
    } else {
      EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  auto tokenizer = TrainedTokenizer(2048);
  const std::string text = DefaultTrainingCorpus();
  const std::vector<uint32_t> expected = Ids(*tokenizer, text);
  std::vector<std::vector<uint32_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) result = *tokenizer->Encode(text);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_EQ(result, expected);
}

TEST(TokenizerTest, NfcNormalizerComposes) {
  auto tokenizer = Tiny({}, {}, {{"normalizer", {{"type", "NFC"}}}});
  EXPECT_EQ(Ids(*tokenizer, "e\u0301"), Ids(*tokenizer, "\u00e9"));
  auto sequence =
      Tiny({}, {}, {{"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}}}}}});
  EXPECT_EQ(Ids(*sequence, "\uFB01"), Ids(*sequence, "fi"));
}

TEST(TokenizerTest, RejectsUnsupportedComponents) {
  struct Case {
    nlohmann::json overrides;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"normalizer", {{"type", "Lowercase"}}}}, "normalizer 'Lowercase'"},
      {{{"pre_tokenizer", {{"type", "Whitespace"}}}}, "pre-tokenizer 'Whitespace'"},
      {{{"pre_tokenizer", nullptr}}, "no ByteLevel step"},
      {{{"decoder", {{"type", "Metaspace"}}}}, "decoder 'Metaspace'"},
      {{{"model", {{"type", "WordPiece"}, {"vocab", nlohmann::json::object()}}}},
       "model type 'WordPiece'"},
      {{{"post_processor", {{"type", "BertProcessing"}}}}, "post-processor 'BertProcessing'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        Tokenizer::FromJson(TinyTokenizerJson({}, {}, c.overrides), "");
    ASSERT_FALSE(tokenizer.ok()) << c.overrides.dump();
    EXPECT_THAT(tokenizer.status().message(), HasSubstr(c.message));
  }
  EXPECT_FALSE(Tokenizer::FromJson("{not json", "").ok());
  nlohmann::json missing = nlohmann::json::parse(TinyTokenizerJson({{"a", "b"}}));
  missing["model"]["merges"].push_back({"zz", "q"});
  EXPECT_THAT(Tokenizer::FromJson(missing.dump(), "").status().message(),
              HasSubstr("missing from the vocabulary"));
}

TEST(TokenizerTest, SplitBehaviors) {
  auto make = [](const std::string& behavior, bool invert) {
    nlohmann::json pre = {
        {"type", "Sequence"},
        {"pretokenizers",
         nlohmann::json::array(
             {{{"type", "Split"},
               {"pattern", {{"String", "-"}}},
               {"behavior", behavior},
               {"invert", invert}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
    return Tiny({{"a", "-"}, {"-", "b"}, {"a", "b"}, {"-", "-"}}, {}, {{"pre_tokenizer", pre}});
  };
  EXPECT_THAT(Tokens(*make("Removed", false), "a-b"), ElementsAre("a", "b"));
  EXPECT_THAT(Tokens(*make("Isolated", false), "a-b"), ElementsAre("a", "-", "b"));
  EXPECT_THAT(Tokens(*make("MergedWithPrevious", false), "a-b"), ElementsAre("a-", "b"));
  EXPECT_THAT(Tokens(*make("MergedWithNext", false), "a-b"), ElementsAre("a", "-b"));
  EXPECT_THAT(Tokens(*make("Contiguous", false), "a--b"), ElementsAre("a", "--", "b"));
  EXPECT_THAT(Tokens(*make("Removed", true), "a-b"), ElementsAre("-"));
}

TEST(TokenizerTest, ByteLevelRegexAndPrefixSpace) {
  nlohmann::json pre = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  auto tokenizer = Tiny({{" ", "h"}, {" h", "i"}}, {}, {{"pre_tokenizer", pre}});
  EXPECT_THAT(Tokens(*tokenizer, "hi hi"), ElementsAre("Ġhi", "Ġhi"));
}

TEST(TokenizerTest, AddSpecialTokensFollowsConfigThenTemplate) {
  auto configured = Tiny({}, {"<s>", "</s>"}, nlohmann::json::object(),
                         R"({"bos_token": "<s>", "eos_token": {"content": "</s>"},
                             "add_bos_token": true, "add_eos_token": true})");
  const uint32_t bos = *configured->TokenToId("<s>");
  const uint32_t eos = *configured->TokenToId("</s>");
  EXPECT_THAT(*configured->Encode("a", true), ElementsAre(bos, Ids(*configured, "a")[0], eos));
  EXPECT_THAT(*configured->Encode("a", false), ElementsAre(Ids(*configured, "a")[0]));

  nlohmann::json post = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {256}}, {"tokens", {"<s>"}}}}}}};
  auto templated = Tiny({}, {"<s>"}, {{"post_processor", post}});
  EXPECT_THAT(*templated->Encode("a", true), ElementsAre(256u, Ids(*templated, "a")[0]));
}

TEST(TokenizerTest, LoadsWrittenFilesWithConfig) {
  const std::string dir = testing::MakeTempDir("load");
  ASSERT_TRUE(WriteTokenizerFiles(dir, 1024).ok());
  ASSERT_TRUE(
      base::WriteStringToFile(dir + "/generation_config.json", R"({"eos_token_id": [1012, 1013]})")
          .ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromDirectory(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const Tokenizer& t = **tokenizer;
  const RingSpecialTokenIds ids = RingSpecialTokenIdsFor(1024);
  EXPECT_EQ(t.vocab_size(), 1024u);
  EXPECT_EQ(t.bos_token_id(), ids.startoftext);
  EXPECT_EQ(t.eos_token_id(), ids.role_end);
  EXPECT_EQ(t.TokenToId("[gMASK]"), ids.gmask);
  EXPECT_EQ(t.TokenToId("<think>"), ids.think_open);
  EXPECT_THAT(t.stop_token_ids(), ElementsAre(ids.role_end, ids.endoftext));
  EXPECT_FALSE(t.config().add_bos_token.value_or(true));
  EXPECT_FALSE(t.config().chat_template.empty());
  EXPECT_FALSE(Tokenizer::FromDirectory(dir + "/missing").ok());
}

TEST(TokenizerTest, EncodesA128KTokenPrompt) {
  // Half real text (many repeated words), half pseudo-random words (no repeats to reuse).
  auto tokenizer = TrainedTokenizer(4096);
  const std::string corpus = DefaultTrainingCorpus();
  std::string prompt;
  while (prompt.size() < 320 * 1024) prompt += corpus;
  std::mt19937 rng(3);
  while (prompt.size() < 640 * 1024) {
    for (int i = 1 + rng() % 9; i > 0; --i) prompt.push_back(static_cast<char>('a' + rng() % 26));
    prompt.push_back(rng() % 10 == 0 ? '\n' : ' ');
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<uint32_t>> ids = tokenizer->Encode(prompt);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ids.ok());
  EXPECT_GE(ids->size(), 128u * 1024);
  EXPECT_EQ(tokenizer->Decode(*ids), prompt);
  // About 0.15 s in a release build; the loose bound only catches a super-linear regression.
  std::printf("encoded %zu bytes into %zu tokens in %.3f s\n", prompt.size(), ids->size(), seconds);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
  EXPECT_LT(seconds, 10.0);
#endif
}

}  // namespace
}  // namespace ringserve::text
