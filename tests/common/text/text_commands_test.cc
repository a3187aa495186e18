#include "cli/text_commands.h"

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/text/bpe_trainer.h"
#include "common/text/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/text/test_util.h"

namespace ringserve::cli {
namespace {

using ::testing::HasSubstr;

// Runs a command, capturing what it prints.
struct Output {
  int code;
  std::string out;
  std::string err;
};

Output Capture(int (*command)(const std::vector<std::string>&),
               const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  std::streambuf* saved_out = std::cout.rdbuf(out.rdbuf());
  std::streambuf* saved_err = std::cerr.rdbuf(err.rdbuf());
  const int code = command(args);
  std::cout.rdbuf(saved_out);
  std::cerr.rdbuf(saved_err);
  return {code, out.str(), err.str()};
}

class TextCommandsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(text::testing::MakeTempDir("cli"));
    ASSERT_TRUE(text::WriteTokenizerFiles(*dir_, 1024).ok());
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string* dir_;
};

std::string* TextCommandsTest::dir_ = nullptr;

TEST_F(TextCommandsTest, TokenizeThenDetokenizeRoundTrips) {
  const std::string text = "Hello, world! 你好 <role>HUMAN</role>";
  Output tokens = Capture(RunTokenize, {"--model", *dir_, "--text", text});
  ASSERT_EQ(tokens.code, 0) << tokens.err;
  const auto ids = nlohmann::json::parse(tokens.out);
  ASSERT_TRUE(ids.is_array());
  EXPECT_EQ(ids.back(), text::RingSpecialTokenIdsFor(1024).role_close);
  std::string joined;
  for (const auto& id : ids) absl::StrAppend(&joined, joined.empty() ? "" : ",", id.get<int>());
  Output decoded =
      Capture(RunDetokenize, {absl::StrCat("--model=", *dir_), absl::StrCat("--ids=", joined)});
  ASSERT_EQ(decoded.code, 0) << decoded.err;
  EXPECT_EQ(decoded.out, text);
  Output skipped =
      Capture(RunDetokenize, {"--model", *dir_, "--ids", joined, "--skip-special-tokens"});
  EXPECT_EQ(skipped.out, "Hello, world! 你好 HUMAN");
}

TEST_F(TextCommandsTest, TokenizeReadsAFile) {
  const std::string file = *dir_ + "/input.txt";
  ASSERT_TRUE(base::WriteStringToFile(file, "line one\nline two\n").ok());
  Output from_file = Capture(RunTokenize, {"--model", *dir_, "--file", file});
  Output from_text = Capture(RunTokenize, {"--model", *dir_, "--text", "line one\nline two\n"});
  EXPECT_EQ(from_file.code, 0);
  EXPECT_EQ(from_file.out, from_text.out);
}

TEST_F(TextCommandsTest, ChatTemplateRendersListsAndObjects) {
  const std::string list_file = *dir_ + "/list.json";
  ASSERT_TRUE(base::WriteStringToFile(list_file, R"([{"role": "user", "content": "Hi"}])").ok());
  Output list = Capture(
      RunChatTemplate, {"--model", *dir_, "--messages-file", list_file, "--add-generation-prompt"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_EQ(list.out,
            "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Hi<|role_end|>"
            "<role>ASSISTANT</role>");

  const std::string object_file = *dir_ + "/object.json";
  ASSERT_TRUE(base::WriteStringToFile(object_file, R"({
      "messages": [{"role": "user", "content": "Weather?"}],
      "tools": [{"type": "function", "function": {"name": "w"}}],
      "add_generation_prompt": false})")
                  .ok());
  Output object = Capture(RunChatTemplate, {"--model", *dir_, "--messages-file", object_file});
  ASSERT_EQ(object.code, 0) << object.err;
  EXPECT_THAT(object.out, HasSubstr("<tools>\n{\"type\": \"function\", \"function\": {\"name\": "
                                    "\"w\"}}\n</tools>"));
  EXPECT_THAT(object.out, ::testing::EndsWith("<role>HUMAN</role>Weather?<|role_end|>"));
}

TEST_F(TextCommandsTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(Capture(RunTokenize, {"--model", *dir_}).code, 2);
  EXPECT_EQ(Capture(RunTokenize, {"--text", "x"}).code, 2);
  EXPECT_EQ(Capture(RunTokenize, {"--model", *dir_, "--text", "x", "--bogus", "1"}).code, 2);
  Output bad_utf8 = Capture(RunTokenize, {"--model", *dir_, "--text", "a\xFF"});
  EXPECT_EQ(bad_utf8.code, 2);
  EXPECT_THAT(bad_utf8.err, HasSubstr("byte offset 1"));
  EXPECT_EQ(Capture(RunDetokenize, {"--model", *dir_, "--ids", "1,x"}).code, 2);
  EXPECT_EQ(Capture(RunDetokenize, {"--model", *dir_, "--ids", "-1"}).code, 2);
  EXPECT_EQ(Capture(RunDetokenize, {"--model", *dir_ + "/missing", "--ids", "1"}).code, 2);
  const std::string bad_file = *dir_ + "/bad.json";
  ASSERT_TRUE(base::WriteStringToFile(bad_file, "{not json").ok());
  EXPECT_EQ(Capture(RunChatTemplate, {"--model", *dir_, "--messages-file", bad_file}).code, 2);
}

}  // namespace
}  // namespace ringserve::cli
