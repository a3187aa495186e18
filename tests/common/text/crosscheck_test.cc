// Compares ringserve_text with independent implementations: @huggingface/tokenizers (encoding
// and decoding with tokenizers written by WriteTokenizerFiles) and @huggingface/jinja (the Ring
// chat template). Needs node and tests/common/text/npm/install.sh; fails, not skips, without.

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/base/mapped_file.h"
#include "common/text/bpe_trainer.h"
#include "common/text/chat_template.h"
#include "common/text/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/text/crosscheck_util.h"
#include "tests/common/text/ring_conversations.h"
#include "tests/common/text/test_util.h"

namespace ringserve::text {
namespace {

// Texts covering ASCII, CJK, emoji, combining marks, digits, whitespace runs, newlines,
// contractions, scripts and the special tokens.
std::vector<std::string> CrossCheckTexts() {
  std::vector<std::string> texts = {
      "Hello, world!",
      "The quick brown fox jumps over the lazy dog.",
      "I'm sure they'll say it's fine; we've done it, you're right, he'd agree. DON'T SHOUT'S",
      "numbers: 0 1 12 123 1234567890 3.14159 -42 +7 1e-5 6.02e23 0x1F 2024-01-15 09:15:30",
      "   leading spaces and trailing spaces   ",
      "tabs\tand\t\ttabs\t",
      "many     spaces     between      words",
      "newlines\n\nand\r\nwindows\r\nlines\n\n\n\nend\n",
      "\n",
      " ",
      "      \n   \n\t\n",
      "中文：今天天气很好，我们去公园散步吧。",
      "日本語のテキスト、ひらがなとカタカナ。",
      "한국어 텍스트입니다.",
      "Русский текст с пунктуацией — да!",
      "Emoji: 😀🚀🌍 👍🏽 ❤️ 👨‍👩‍👧 🇩🇪🇯🇵 ✨🔥",
      "Combining: e\u0301 n\u0303 o\u0308 a\u030a \u0915\u093f Z\u0351\u0356\u0333 and "
      "precomposed \u00e9\u00f1",
      "Unicode spaces: a\u00a0b\u3000c\u2009d\u202fe",
      "Symbols: @user #tag $5.00 50% a&b x*y a+b=c a|b a\\b ~home ^up `code` {}[]()<>",
      "punctuation runs!!! ??? ... --- *** ;;; ::: \"\"\" '''",
      "mixedCASE camelCase snake_case kebab-case SCREAMING_CASE",
      "int main() {\n  std::vector<int> v = {1, 2, 3};\n  return v.size();\n}\n",
      "def f(x):\n    return x ** 2  # square\n",
      "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
      "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Hi!<|role_end|>"
      "<role>ASSISTANT</role>",
      "<think>\nreasoning\n</think>\n\nanswer<|role_end|>",
      "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
      "<tool_response>\nok\n</tool_response><|endoftext|>[gMASK][CLS]<|startoftext|>",
      "<role >not special</ role> <|role_end| > <think",
      "supercalifragilisticexpialidocious antidisestablishmentarianism",
      "ΑΒΓ αβγ Ωμέγα Straße Größe ÄÖÜ äöü ß",
      "Arabic مرحبا بالعالم Hebrew שלום Hindi नमस्ते Thai สวัสดี",
      "math ∑∫√∞≈≠≤≥±×÷ → ← ↔ ∀∃∈",
      "a",
      "ab",
      "'s'S'll'LL've're'd'm't",
      "x'sy 's 'll 've",
      "edge spaces: a\u0085b x\ufeffy a\u2028b\u2029c \u000b\u000c\u001c x \u200b\u200d",
      "case folding: it\u017fs '\u017f 'K '\u212a \u01c5 numerals \u2167 \u00bd \u00b2 "
      "\u0661\u0662",
      "\u0301abc '\u0301s \U0001d518\U0001d52b \U0001d7d8",
      "\r\r\n\n\r \t \n \u3000\n",
  };
  std::string long_word(3000, 'q');
  texts.push_back(long_word);
  std::string mixed;
  for (int i = 0; i < 200; ++i) absl::StrAppend(&mixed, "w", i * 37, i % 3 ? " " : "\n");
  texts.push_back(mixed);
  return texts;
}

std::vector<nlohmann::json> ReadJsonLines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    lines.push_back(nlohmann::json::parse(line, nullptr, false));
  }
  return lines;
}

class TokenizerCrossCheck : public ::testing::TestWithParam<int> {};

TEST_P(TokenizerCrossCheck, MatchesHuggingFaceTokenizersJs) {
  const int vocab_size = GetParam();
  const std::string dir = testing::MakeTempDir("crosscheck_" + std::to_string(vocab_size));
  ASSERT_TRUE(WriteTokenizerFiles(dir, vocab_size).ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromDirectory(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();

  const std::vector<std::string> texts = CrossCheckTexts();
  std::string input;
  for (const std::string& text : texts) input += nlohmann::json(text).dump() + "\n";
  ASSERT_TRUE(base::WriteStringToFile(dir + "/texts.jsonl", input).ok());
  absl::StatusOr<std::string> output =
      testing::RunNodeScript("encode.mjs", {dir, dir + "/texts.jsonl"});
  ASSERT_TRUE(output.ok()) << output.status();
  const std::vector<nlohmann::json> expected = ReadJsonLines(*output);
  ASSERT_EQ(expected.size(), texts.size()) << *output;

  for (size_t i = 0; i < texts.size(); ++i) {
    absl::StatusOr<std::vector<uint32_t>> ids = (*tokenizer)->Encode(texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(nlohmann::json(*ids), expected[i]["ids"]) << "text: " << texts[i];
    EXPECT_EQ((*tokenizer)->Decode(*ids), expected[i]["decoded"].get<std::string>());
    EXPECT_EQ((*tokenizer)->Decode(*ids), texts[i]);
  }
}

INSTANTIATE_TEST_SUITE_P(VocabSizes, TokenizerCrossCheck, ::testing::Values(512, 4096));

TEST(ChatTemplateCrossCheck, RingTemplateMatchesHuggingFaceJinja) {
  const std::string config_path =
      std::string(RINGSERVE_SHARED_DATA) + "/ring-v2-tokenizer/tokenizer_config.json";
  absl::StatusOr<std::string> config_text = base::ReadFileToString(config_path);
  ASSERT_TRUE(config_text.ok()) << config_text.status();
  const nlohmann::json config = nlohmann::json::parse(*config_text);
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat_template =
      ChatTemplate::Create(config["chat_template"].get<std::string>());
  ASSERT_TRUE(chat_template.ok()) << chat_template.status();

  const std::vector<ChatTemplateInputs> conversations = testing::RingConversations();
  nlohmann::ordered_json contexts = nlohmann::ordered_json::array();
  for (const ChatTemplateInputs& inputs : conversations) {
    contexts.push_back(ChatTemplate::BuildContext(inputs));
  }
  const std::string dir = testing::MakeTempDir("crosscheck_template");
  ASSERT_TRUE(base::WriteStringToFile(dir + "/cases.json", contexts.dump()).ok());
  absl::StatusOr<std::string> output =
      testing::RunNodeScript("render.mjs", {config_path, dir + "/cases.json"});
  ASSERT_TRUE(output.ok()) << output.status();
  const std::vector<nlohmann::json> expected = ReadJsonLines(*output);
  ASSERT_EQ(expected.size(), conversations.size()) << *output;
  for (size_t i = 0; i < conversations.size(); ++i) {
    ASSERT_TRUE(expected[i].contains("text")) << "case " << i << ": " << expected[i].dump();
    absl::StatusOr<std::string> rendered = (*chat_template)->Render(conversations[i]);
    ASSERT_TRUE(rendered.ok()) << "case " << i << ": " << rendered.status();
    EXPECT_EQ(*rendered, expected[i]["text"].get<std::string>()) << "case " << i;
  }
}

}  // namespace
}  // namespace ringserve::text
