#include "common/base/logging.h"

#include <string>

#include "gtest/gtest.h"

namespace ringserve::base {
namespace {

TEST(QuoteTest, PlainValuesStayAsTheyAre) {
  EXPECT_EQ(Quote("req-0123"), "req-0123");
  EXPECT_EQ(Quote("a/b:c.d"), "a/b:c.d");
}

TEST(QuoteTest, QuotesWhenNeeded) {
  EXPECT_EQ(Quote(""), "\"\"");
  EXPECT_EQ(Quote("a b"), "\"a b\"");
  EXPECT_EQ(Quote("k=v"), "\"k=v\"");
  EXPECT_EQ(Quote("say \"hi\""), "\"say \\\"hi\\\"\"");
  EXPECT_EQ(Quote("back\\slash"), "\"back\\\\slash\"");
}

TEST(QuoteTest, EscapesEveryByteOutsidePrintableAscii) {
  EXPECT_EQ(Quote("a\nts=0 level=error event=FORGED"), "\"a\\x0ats=0 level=error event=FORGED\"");
  EXPECT_EQ(Quote(std::string("\0\t\r\x1b\x7f", 5)), "\"\\x00\\x09\\x0d\\x1b\\x7f\"");
  EXPECT_EQ(Quote("caf\xc3\xa9"), "\"caf\\xc3\\xa9\"");
  for (int c = 0; c < 256; ++c) {
    for (char q : Quote(std::string(1, static_cast<char>(c)))) {
      EXPECT_TRUE(q >= 0x20 && q < 0x7f) << "byte " << c;
    }
  }
}

TEST(LogLineTest, ALineIsAlwaysOneEvent) {
  ::testing::internal::CaptureStderr();
  RS_LOG(kError) << "event=test value="
                 << "x\ny\r\x01"
                 << " tab=\t";
  const std::string out = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  EXPECT_NE(out.find("event=test value=x\\x0ay\\x0d\\x01 tab=\\x09\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace ringserve::base
