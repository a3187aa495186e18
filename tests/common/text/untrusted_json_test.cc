#include "common/text/untrusted_json.h"

#include <string>

#include "gtest/gtest.h"

namespace ringserve::text {
namespace {

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(UntrustedJsonTest, ParsesWithinTheLimits) {
  auto json = ParseUntrustedJson(R"({"a": [1, {"b": null}], "c": "d"})", {});
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ((*json)["a"][1]["b"], nullptr);
  EXPECT_EQ(*CheckUntrustedJson(R"({"a": [1, {"b": null}], "c": "d"})", {}), 6u);
  EXPECT_TRUE(ParseUntrustedJson(Nested(64), {}).ok());
  EXPECT_TRUE(ParseUntrustedJson("3", {.max_depth = 0}).ok());
}

TEST(UntrustedJsonTest, RefusesDeepNestingWhileParsing) {
  for (const std::string& text :
       {Nested(65), Nested(100'000), std::string(1'000'000, '['), "{\"a\":" + Nested(100'000) + "}",
        std::string(100'000, '[') + "oops"}) {
    const absl::Status check = CheckUntrustedJson(text, {}).status();
    EXPECT_EQ(check.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(check.message(), "JSON nests deeper than the limit of 64 levels");
    EXPECT_EQ(ParseUntrustedJson(text, {}).status(), check);
  }
  EXPECT_EQ(ParseUntrustedJson("[[1]]", {.max_depth = 1}).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(UntrustedJsonTest, RefusesTooManyValues) {
  const JsonLimits limits{.max_depth = 8, .max_values = 4};
  EXPECT_TRUE(ParseUntrustedJson("[1, 2, 3]", limits).ok());
  const absl::Status s = ParseUntrustedJson("[1, 2, 3, 4]", limits).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), "JSON holds more than the limit of 4 values");
}

TEST(UntrustedJsonTest, MalformedJsonIsInvalidArgument) {
  for (const char* text : {"", "{", "[1,]", "{\"a\" 1}", "[1] 2", "\"\x01\""}) {
    const absl::Status s = ParseUntrustedJson(text, {}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(s.message().find("not valid JSON"), std::string::npos) << s;
    EXPECT_EQ(CheckUntrustedJson(text, {}).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace ringserve::text
