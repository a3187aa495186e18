// The public API's input checks: each bad request gets INVALID_ARGUMENT naming the field and
// the limit (the README's table lists these cases), the same for Generate and Tokenize.
#include "router/validation.h"

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "common/text/bpe_trainer.h"
#include "gtest/gtest.h"

namespace ringserve::router {
namespace {

using ringserve::v1::ChatMessages;
using ringserve::v1::GenerateRequest;
using ringserve::v1::TokenizeRequest;

RouterLimits Limits() {
  RouterLimits l;
  l.vocab_size = 1024;
  l.max_context = 4096;
  l.max_new_tokens = 512;
  return l;
}

GenerateRequest Good() {
  GenerateRequest r;
  r.mutable_token_ids()->add_ids(5);
  r.mutable_stopping()->set_max_tokens(8);
  return r;
}

void ExpectInvalid(const GenerateRequest& r, const std::string& fragment) {
  const absl::Status s = ValidateRequest(r, Limits());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << fragment;
  EXPECT_NE(s.message().find(fragment), std::string::npos) << s.message();
}

TEST(ValidateRequestTest, AcceptsAGoodRequest) {
  EXPECT_TRUE(ValidateRequest(Good(), Limits()).ok());
}

TEST(ValidateRequestTest, PromptErrorsNameTheFieldAndTheLimit) {
  GenerateRequest r = Good();
  r.clear_prompt();
  ExpectInvalid(r, "prompt is empty");
  r = Good();
  r.mutable_token_ids()->clear_ids();
  ExpectInvalid(r, "prompt.token_ids is empty");
  r = Good();
  for (int i = 0; i < 5000; ++i) r.mutable_token_ids()->add_ids(1);
  ExpectInvalid(r, "exceeds the model's context of 4096");
  r = Good();
  r.mutable_token_ids()->add_ids(1024);
  ExpectInvalid(r, "prompt.token_ids[1] = 1024 is not below the vocabulary size 1024");
  r = Good();
  r.set_text("");
  ExpectInvalid(r, "prompt.text is empty");
  r = Good();
  r.set_text(std::string(9 << 20, 'a'));
  ExpectInvalid(r, "exceeds the limit 8388608");
}

TEST(ValidateRequestTest, ChatErrors) {
  GenerateRequest r = Good();
  r.mutable_messages();
  ExpectInvalid(r, "prompt.messages is empty");
  auto* m = r.mutable_messages()->add_messages();
  m->set_role("wizard");
  ExpectInvalid(r, "prompt.messages[0].role 'wizard' is not one of system, user, assistant, tool");
  m->set_role("user");
  m->set_content(std::string((1 << 20) + 1, 'x'));
  ExpectInvalid(r, "prompt.messages[0] of 1048577 bytes exceeds the limit 1048576");
}

TEST(ValidateRequestTest, SamplingErrors) {
  GenerateRequest r = Good();
  r.mutable_sampling()->set_temperature(std::nanf(""));
  ExpectInvalid(r, "sampling.temperature nan is outside [0, 100]");
  r.mutable_sampling()->set_temperature(-1);
  ExpectInvalid(r, "sampling.temperature -1 is outside [0, 100]");
  r.mutable_sampling()->set_temperature(1e9f);
  ExpectInvalid(r, "is outside [0, 100]");
  r = Good();
  r.mutable_sampling()->set_top_p(0);
  ExpectInvalid(r, "sampling.top_p 0 is outside (0, 1]");
  r.mutable_sampling()->set_top_p(1.5f);
  ExpectInvalid(r, "sampling.top_p 1.5 is outside (0, 1]");
  r = Good();
  r.mutable_sampling()->set_top_k(-3);
  ExpectInvalid(r, "sampling.top_k -3 is negative");
  r = Good();
  r.mutable_sampling()->set_min_p(1.5f);
  ExpectInvalid(r, "sampling.min_p 1.5 is outside [0, 1]");
}

TEST(ValidateRequestTest, StoppingErrors) {
  GenerateRequest r = Good();
  r.mutable_stopping()->set_max_tokens(0);
  ExpectInvalid(r, "stopping.max_tokens must be at least 1");
  r.mutable_stopping()->set_max_tokens(513);
  ExpectInvalid(r, "stopping.max_tokens 513 exceeds the limit 512");
  r = Good();
  for (int i = 0; i < 17; ++i) r.mutable_stopping()->add_stop("x");
  ExpectInvalid(r, "stopping.stop holds 17 strings; the limit is 16");
  r = Good();
  r.mutable_stopping()->add_stop(std::string(257, 'y'));
  ExpectInvalid(r, "stopping.stop[0] has 257 bytes; it must have 1 to 256");
  r = Good();
  r.mutable_stopping()->add_stop_token_ids(5000);
  ExpectInvalid(r, "stopping.stop_token_ids[0] = 5000 is not below the vocabulary size 1024");
}

TEST(ValidateRequestTest, CacheSaltsHaveTheWorkersLimit) {
  GenerateRequest r = Good();
  r.set_cache_salt(std::string(1024, 's'));
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  r.set_cache_salt(std::string(1025, 's'));
  ExpectInvalid(r, "cache_salt of 1025 bytes exceeds the limit 1024");
}

TEST(ValidateRequestTest, RequestIdsAreShortPrintableAscii) {
  GenerateRequest r = Good();
  r.set_request_id(std::string(128, 'r'));
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  r.set_request_id("id with spaces, \"quotes\" and = signs");
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  r.set_request_id(std::string(129, 'r'));
  ExpectInvalid(r, "request_id of 129 bytes exceeds the limit 128");
  r.set_request_id("a\nts=0 level=error comp=router event=FORGED");
  ExpectInvalid(r, "request_id byte 1 is 0x0a; only printable ASCII (0x20 to 0x7e) is accepted");
  r.set_request_id(std::string("a\0b", 3));
  ExpectInvalid(r, "request_id byte 1 is 0x00");
  r.set_request_id("\x1b[31mred");
  ExpectInvalid(r, "request_id byte 0 is 0x1b");
  r.set_request_id("del\x7f");
  ExpectInvalid(r, "request_id byte 3 is 0x7f");
  r.set_request_id("caf\xc3\xa9");
  ExpectInvalid(r, "request_id byte 3 is 0xc3");
}

// `depth` arrays nested in each other: [[[...]]].
std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

GenerateRequest Chat(int messages, size_t bytes_each) {
  GenerateRequest r = Good();
  for (int i = 0; i < messages; ++i) {
    auto* m = r.mutable_messages()->add_messages();
    m->set_role("user");
    m->set_content(std::string(bytes_each, 'x'));
  }
  return r;
}

TEST(ValidateRequestTest, ChatSizesAreCheckedBeforeTokenizing) {
  ExpectInvalid(Chat(1025, 1), "prompt.messages holds 1025 messages; the limit is 1024");
  EXPECT_TRUE(ValidateRequest(Chat(8, 1 << 20), Limits()).ok());
  ExpectInvalid(Chat(60, 1 << 20),
                "prompt.messages hold 62914560 bytes in all; the limit is 8388608");
  GenerateRequest r = Chat(1, 10);
  auto* m = r.mutable_messages()->mutable_messages(0);
  m->set_role("assistant");
  for (int i = 0; i < 129; ++i) m->add_tool_calls()->set_name("f");
  ExpectInvalid(r, "prompt.messages[0].tool_calls holds 129 calls; the limit is 128");
  r = Chat(1, 10);
  auto* call = r.mutable_messages()->mutable_messages(0)->add_tool_calls();
  call->set_arguments_json(std::string(1 << 20, ' '));
  ExpectInvalid(r, "prompt.messages[0] of 1048586 bytes exceeds the limit 1048576");
  r = Chat(1, 10);
  for (int i = 0; i < 129; ++i) r.mutable_messages()->add_tools_json("{}");
  ExpectInvalid(r, "prompt.messages.tools_json holds 129 tools; the limit is 128");
  r = Chat(1, 10);
  r.mutable_messages()->add_tools_json(std::string((1 << 20) + 1, ' '));
  ExpectInvalid(r, "prompt.messages.tools_json[0] of 1048577 bytes exceeds the limit 1048576");
  r = Chat(1, 10);
  r.mutable_messages()->mutable_messages(0)->set_role("root");
  ExpectInvalid(r, "prompt.messages[0].role 'root' is not one of");
}

TEST(ValidateRequestTest, JsonIsRefusedPastItsDepthAndValueLimits) {
  GenerateRequest r = Chat(1, 10);
  r.mutable_messages()->add_tools_json(Nested(64));
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  r.mutable_messages()->set_tools_json(0, Nested(100'000));
  ExpectInvalid(r, "prompt.messages.tools_json[0]: JSON nests deeper than the limit of 64 levels");
  r.mutable_messages()->set_tools_json(0, std::string(100'000, '['));
  ExpectInvalid(r, "JSON nests deeper than the limit of 64 levels");
  r.mutable_messages()->set_tools_json(0, "{\"type\": ");
  ExpectInvalid(r, "prompt.messages.tools_json[0] is not valid JSON");

  r = Chat(1, 10);
  auto* call = r.mutable_messages()->mutable_messages(0)->add_tool_calls();
  call->set_name("f");
  call->set_arguments_json("not JSON: passed on as text");
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  call->set_arguments_json("{\"a\": " + Nested(100'000) + "}");
  ExpectInvalid(r, "prompt.messages[0].tool_calls[0].arguments_json: JSON nests deeper");

  // 60,000 values in each of two tools: each fits, together they pass 100,000.
  std::string many = "[0";
  for (int i = 1; i < 59'999; ++i) many += ",0";
  many += "]";
  r = Chat(1, 10);
  r.mutable_messages()->add_tools_json(many);
  EXPECT_TRUE(ValidateRequest(r, Limits()).ok());
  r.mutable_messages()->add_tools_json(many);
  ExpectInvalid(r, "prompt.messages.tools_json[1]: JSON holds more than the limit of");
}

// A TextCodec over a trained tokenizer with the Ring chat template, in a temporary directory.
class CodecTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = ::testing::TempDir() + "/validation_test_codec";
    std::filesystem::create_directories(dir);
    ASSERT_TRUE(text::WriteTokenizerFiles(dir, 1024).ok());
    auto codec = TextCodec::Load(dir);
    ASSERT_TRUE(codec.ok()) << codec.status();
    codec_ = codec->release();
  }
  static void TearDownTestSuite() { delete codec_; }

  static TextCodec* codec_;
};
TextCodec* CodecTest::codec_ = nullptr;

TEST_F(CodecTest, TextPromptsStopTokenizingAtTheContext) {
  GenerateRequest r = Good();
  r.set_text("hello world");
  auto ids = PromptTokens(r, Limits(), codec_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_FALSE(ids->empty());
  std::string text;
  for (int i = 0; i < 200'000; ++i) text += i % 2 == 0 ? "a " : "b ";
  r.set_text(text);
  const absl::Time start = absl::Now();
  ids = PromptTokens(r, Limits(), codec_);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("more than the limit of 4088 tokens"), std::string::npos)
      << ids.status();
  EXPECT_NE(ids.status().message().find("less stopping.max_tokens 8"), std::string::npos);
  RecordProperty("refusal_ms", static_cast<int>(absl::ToInt64Milliseconds(absl::Now() - start)));
}

TEST_F(CodecTest, ChatPromptsSurviveHostileJson) {
  GenerateRequest r = Chat(1, 10);
  r.mutable_messages()->add_tools_json(Nested(100'000));
  // Even without ValidateRequest, rendering refuses the structure before building it.
  auto ids = PromptTokens(r, Limits(), codec_);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << ids.status();
  EXPECT_NE(ids.status().message().find("nests deeper than the limit of 64"), std::string::npos);
  r = Chat(1, 10);
  r.mutable_messages()->mutable_messages(0)->set_role("assistant");
  auto* call = r.mutable_messages()->mutable_messages(0)->add_tool_calls();
  call->set_name("f");
  call->set_arguments_json("{\"a\": " + Nested(100'000) + "}");
  RouterLimits long_context = Limits();
  long_context.max_context = 1 << 20;
  ids = PromptTokens(r, long_context, codec_);
  ASSERT_TRUE(ids.ok()) << ids.status();  // too deep to parse: rendered as the original text
  call->set_arguments_json(R"({"city": "Paris"})");
  ids = PromptTokens(r, Limits(), codec_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_NE(codec_->tokenizer().Decode(*ids).find(R"({"city": "Paris"})"), std::string::npos);
}

TEST_F(CodecTest, RenderingStopsAtThePromptBytes) {
  RouterLimits limits = Limits();
  limits.max_context = 1 << 20;
  limits.max_prompt_bytes = 1000;
  GenerateRequest r = Chat(1, 990);
  auto ids = PromptTokens(r, limits, codec_);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find("exceeds the limit of 1000 bytes"), std::string::npos)
      << ids.status();
}

TokenizeRequest TokenizeChat(const GenerateRequest& chat) {
  TokenizeRequest t;
  *t.mutable_messages() = chat.messages();
  return t;
}

void ExpectTokenizeInvalid(const TokenizeRequest& t, const TextCodec* codec,
                           const std::string& fragment) {
  auto ids = TokenizeTokens(t, Limits(), codec);
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << fragment;
  EXPECT_NE(ids.status().message().find(fragment), std::string::npos) << ids.status();
}

TEST_F(CodecTest, TokenizeHasTheLimitsOfGenerate) {
  TokenizeRequest t;
  t.set_text("hello world");
  auto ids = TokenizeTokens(t, Limits(), codec_);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(codec_->tokenizer().Decode(*ids), "hello world");
  EXPECT_EQ(TokenizeTokens(t, Limits(), nullptr).status().code(), absl::StatusCode::kUnimplemented);
  ids = TokenizeTokens(TokenizeChat(Chat(2, 5)), Limits(), codec_);
  ASSERT_TRUE(ids.ok()) << ids.status();

  t.set_text(std::string((8 << 20) + 1, 'a'));
  ExpectTokenizeInvalid(t, codec_, "text of 8388609 bytes exceeds the limit 8388608");
  std::string words;
  for (int i = 0; i < 100'000; ++i) words += i % 2 == 0 ? "a " : "b ";
  t.set_text(words);
  ExpectTokenizeInvalid(t, codec_, "more than the limit of 4096 tokens");
  ExpectTokenizeInvalid(TokenizeChat(Chat(10'000, 1)), codec_,
                        "messages holds 10000 messages; the limit is 1024");
  ExpectTokenizeInvalid(TokenizeChat(Chat(60, 1 << 20)), codec_,
                        "messages hold 62914560 bytes in all; the limit is 8388608");
  GenerateRequest chat = Chat(1, 5);
  chat.mutable_messages()->mutable_messages(0)->set_role("root");
  ExpectTokenizeInvalid(TokenizeChat(chat), codec_, "messages[0].role 'root' is not one of");
  chat = Chat(1, 5);
  chat.mutable_messages()->add_tools_json(Nested(100'000));
  ExpectTokenizeInvalid(TokenizeChat(chat), codec_,
                        "messages.tools_json[0]: JSON nests deeper than the limit of 64 levels");
  chat = Chat(1, 0);
  chat.mutable_messages()->mutable_messages(0)->set_content(words);
  ExpectTokenizeInvalid(TokenizeChat(chat), codec_, "more than the limit of 4096 tokens");
}

}  // namespace
}  // namespace ringserve::router
