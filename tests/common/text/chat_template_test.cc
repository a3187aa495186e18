#include "common/text/chat_template.h"

#include <string>
#include <vector>

#include "common/base/mapped_file.h"
#include "common/text/ring_chat_template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/text/ring_conversations.h"

namespace ringserve::text {
namespace {

using ::testing::HasSubstr;
using testing::Msg;

std::string SharedTemplate() {
  absl::StatusOr<std::string> text = base::ReadFileToString(
      std::string(RINGSERVE_SHARED_DATA) + "/ring-v2-tokenizer/tokenizer_config.json");
  EXPECT_TRUE(text.ok()) << text.status();
  return nlohmann::json::parse(*text)["chat_template"].get<std::string>();
}

class RingTemplateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ChatTemplate>> compiled = ChatTemplate::Create(SharedTemplate());
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    template_ = std::move(*compiled);
  }

  std::string Render(const ChatTemplateInputs& inputs) {
    absl::StatusOr<std::string> text = template_->Render(inputs);
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }

  std::unique_ptr<ChatTemplate> template_;
};

constexpr char kNoSystem[] = "<role>SYSTEM</role>detailed thinking off<|role_end|>";

TEST(ChatTemplateTest, EmbeddedTemplateEqualsTheCheckpointOne) {
  EXPECT_EQ(kRingChatTemplate, SharedTemplate());
}

TEST_F(RingTemplateTest, SingleTurnWithGenerationPrompt) {
  const std::vector<ChatTemplateInputs> cases = testing::RingConversations();
  EXPECT_EQ(Render(cases[0]),
            absl::StrCat(kNoSystem, "<role>HUMAN</role>Hello!<|role_end|><role>ASSISTANT</role>"));
  ChatTemplateInputs no_prompt = cases[0];
  no_prompt.add_generation_prompt = false;
  EXPECT_EQ(Render(no_prompt), absl::StrCat(kNoSystem, "<role>HUMAN</role>Hello!<|role_end|>"));
}

TEST_F(RingTemplateTest, SystemAndMultiTurn) {
  EXPECT_EQ(Render(testing::RingConversations()[1]),
            "<role>SYSTEM</role>You are terse.\ndetailed thinking off<|role_end|>"
            "<role>HUMAN</role>2+2?<|role_end|><role>ASSISTANT</role>4<|role_end|>"
            "<role>HUMAN</role>And 3+3?<|role_end|><role>ASSISTANT</role>");
}

TEST_F(RingTemplateTest, ReasoningShownOnlyAfterTheLastQuery) {
  EXPECT_EQ(Render(testing::RingConversations()[2]),
            absl::StrCat(kNoSystem,
                         "<role>HUMAN</role>Capital of France?<|role_end|>"
                         "<role>ASSISTANT</role>Paris.<|role_end|>"
                         "<role>HUMAN</role>Germany?<|role_end|>"
                         "<role>ASSISTANT</role>\n<think>\nGermany's capital.\n</think>\n\n"
                         "Berlin.<|role_end|>"));
}

TEST_F(RingTemplateTest, ThinkBlocksInContent) {
  EXPECT_EQ(Render(testing::RingConversations()[3]),
            absl::StrCat(kNoSystem,
                         "<role>HUMAN</role>Q1<|role_end|><role>ASSISTANT</role>A1<|role_end|>"
                         "<role>HUMAN</role>Q2<|role_end|><role>ASSISTANT</role>\n<think>\n"
                         "new thoughts\n</think>\n\nA2<|role_end|>"));
}

TEST_F(RingTemplateTest, ToolsToolCallsAndResults) {
  const std::string text = Render(testing::RingConversations()[4]);
  EXPECT_THAT(text, HasSubstr("<role>SYSTEM</role>Use tools.\n# Tools\n\nYou may call one or "
                              "more functions"));
  EXPECT_THAT(text, HasSubstr("<tools>\n{\"type\": \"function\", \"function\": {\"name\": "
                              "\"get_weather\", \"description\": \"Weather for a city — «quoted» "
                              "\\\"text\\\"\\nsecond line\", \"parameters\""));
  EXPECT_THAT(text, HasSubstr("<role>ASSISTANT</role>Let me check.\n<tool_call>\n{\"name\": "
                              "\"get_weather\", \"arguments\": {\"city\": \"Berlin\", \"days\": "
                              "2}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": "
                              "not json}\n</tool_call><|role_end|>"));
  EXPECT_THAT(text, HasSubstr("<role>OBSERVATION</role>\n<tool_response>\n{\"temp\": 21}\n"
                              "</tool_response>\n<tool_response>\n12:00\n</tool_response>"
                              "<|role_end|><role>ASSISTANT</role>21°C at noon.<|role_end|>"
                              "<role>ASSISTANT</role>"));
}

TEST_F(RingTemplateTest, ToolCallWithoutContent) {
  EXPECT_THAT(Render(testing::RingConversations()[5]),
              HasSubstr("<role>HUMAN</role>Time?<|role_end|><role>ASSISTANT</role><tool_call>\n"
                        "{\"name\": \"now\", \"arguments\": {}}\n</tool_call><|role_end|>"
                        "<role>OBSERVATION</role>\n<tool_response>\n13:37\n</tool_response>"
                        "<|role_end|><role>ASSISTANT</role>"));
}

TEST_F(RingTemplateTest, UnknownRolesAreAccepted) {
  EXPECT_EQ(Render(testing::RingConversations()[7]),
            absl::StrCat(kNoSystem,
                         "<role>HUMAN</role>Hi<|role_end|><role>SYSTEM</role>Be kind.<|role_end|>"
                         "<role>ASSISTANT</role>Hello<|role_end|><role>ASSISTANT</role>"));
}

TEST_F(RingTemplateTest, ExtraVariablesReachTheTemplate) {
  absl::StatusOr<std::unique_ptr<ChatTemplate>> thinking = ChatTemplate::Create(
      "{{ 'on' if enable_thinking else 'off' }}{{ messages|length }}{{ bos_token }}");
  ASSERT_TRUE(thinking.ok());
  ChatTemplateInputs inputs;
  inputs.messages = {Msg("user", "x")};
  inputs.extra_vars = {{"enable_thinking", true}, {"bos_token", "<s>"}};
  EXPECT_EQ(*(*thinking)->Render(inputs), "on1<s>");
}

TEST_F(RingTemplateTest, HostileArgumentsAndOutputStayWithinTheLimits) {
  ChatTemplateInputs inputs;
  inputs.messages = {Msg("user", "x"), Msg("assistant", "")};
  const std::string deep = "{\"a\": " + std::string(100'000, '[') + std::string(100'000, ']') + "}";
  inputs.messages[1].tool_calls.push_back({"", "f", deep});
  // Too deep to parse within the limits: passed to the template as the original text.
  EXPECT_THAT(Render(inputs), HasSubstr("\"arguments\": " + deep + "}"));
  inputs.messages[1].tool_calls[0].arguments_json = R"({"b":  [1, 2]})";
  EXPECT_THAT(Render(inputs), HasSubstr(R"("arguments": {"b": [1, 2]}})"));
  inputs.json_limits.max_depth = 1;
  EXPECT_THAT(Render(inputs), HasSubstr(R"("arguments": {"b":  [1, 2]}})"));

  inputs.max_output_bytes = 100;
  const absl::StatusOr<std::string> capped = template_->Render(inputs);
  EXPECT_EQ(capped.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(capped.status().message(), HasSubstr("exceeds the limit of 100 bytes"));
}

TEST(ChatTemplateTest, ErrorsAreStatuses) {
  EXPECT_THAT(ChatTemplate::Create("{% for %}").status().message(), HasSubstr("line 1"));
  absl::StatusOr<std::unique_ptr<ChatTemplate>> strict = ChatTemplate::Create(
      "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}");
  ASSERT_TRUE(strict.ok());
  ChatTemplateInputs inputs;
  inputs.messages = {Msg("assistant", "x")};
  absl::StatusOr<std::string> text = (*strict)->Render(inputs);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr("first must be user"));
}

TEST(ChatTemplateTest, MessagesFromOpenAiJson) {
  const auto json = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    {"role": "assistant", "content": null, "reasoning_content": "r",
     "tool_calls": [{"id": "c1", "type": "function",
                     "function": {"name": "f", "arguments": "{\"x\": 1}"}},
                    {"function": {"name": "g", "arguments": {"y": [2]}}}]},
    {"role": "tool", "content": "out", "tool_call_id": "c1"}])");
  absl::StatusOr<std::vector<ChatMessage>> messages = ChatMessagesFromJson(json);
  ASSERT_TRUE(messages.ok()) << messages.status();
  ASSERT_EQ(messages->size(), 3u);
  EXPECT_EQ((*messages)[0].content, "ab");
  EXPECT_FALSE((*messages)[1].content.has_value());
  EXPECT_EQ((*messages)[1].reasoning_content, "r");
  ASSERT_EQ((*messages)[1].tool_calls.size(), 2u);
  EXPECT_EQ((*messages)[1].tool_calls[0].id, "c1");
  EXPECT_EQ((*messages)[1].tool_calls[0].arguments_json, "{\"x\": 1}");
  EXPECT_EQ((*messages)[1].tool_calls[1].arguments_json, "{\"y\":[2]}");
  EXPECT_EQ((*messages)[2].tool_call_id, "c1");

  EXPECT_THAT(ChatMessagesFromJson(nlohmann::ordered_json::parse(R"([{"content": "x"}])"))
                  .status()
                  .message(),
              HasSubstr("message 0: role is not a string"));
  EXPECT_FALSE(ChatMessagesFromJson(nlohmann::ordered_json::parse(
                                        R"([{"role": "user", "content": [{"type": "image"}]}])"))
                   .ok());
}

}  // namespace
}  // namespace ringserve::text
