// The public API's input checks: each bad request gets INVALID_ARGUMENT naming the field and
// the limit (the README's table lists these cases).
#include <cmath>

#include "gtest/gtest.h"
#include "router/validation.h"

namespace ringserve::router {
namespace {

using ringserve::v1::GenerateRequest;

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
  r = Good();
  r.set_request_id(std::string(200, 'r'));
  ExpectInvalid(r, "request_id of 200 bytes exceeds the limit 128");
}

}  // namespace
}  // namespace ringserve::router
