#include "common/text/stop_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ringserve::text {
namespace {

// Feeds `pieces` and returns what was shown, with "|" between deltas.
std::string Feed(StopMatcher& matcher, const std::vector<std::string>& pieces) {
  std::string shown;
  for (const std::string& piece : pieces) {
    shown += matcher.Push(piece) + "|";
    if (matcher.stopped()) return shown;
  }
  return shown + matcher.Flush();
}

TEST(StopMatcherTest, PassesTextThroughWithoutStops) {
  StopMatcher matcher({});
  EXPECT_EQ(Feed(matcher, {"a", "b"}), "a|b|");
}

TEST(StopMatcherTest, StopsAcrossDeltasAndTrims) {
  StopMatcher matcher({"</answer>"});
  EXPECT_EQ(Feed(matcher, {"The result", " is 4</", "ans", "wer> and more"}),
            "The result| is 4|||");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.Push("later"), "");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, ReleasesHeldTextThatIsNotAStop) {
  StopMatcher matcher({"STOP"});
  EXPECT_EQ(Feed(matcher, {"ST", "ART", "S", "T", "OP!"}), "|START||||");
  StopMatcher unfinished({"STOP"});
  EXPECT_EQ(Feed(unfinished, {"a", "ST"}), "a||ST");
}

TEST(StopMatcherTest, EarliestStopWinsAndReportsIndex) {
  StopMatcher matcher({"world", "lo w", ""});
  EXPECT_EQ(matcher.stop_index(), -1);
  EXPECT_EQ(matcher.Push("hello world"), "hel");
  EXPECT_TRUE(matcher.stopped());
  EXPECT_EQ(matcher.stop_index(), 1);
}

TEST(StopMatcherTest, StopAtTheVeryStartAndMultibyte) {
  StopMatcher at_start({"\n\n"});
  EXPECT_EQ(at_start.Push("\n\nrest"), "");
  EXPECT_TRUE(at_start.stopped());
  // The held text stops at a character boundary: "é" is not split.
  StopMatcher multibyte({"éclair"});
  EXPECT_EQ(Feed(multibyte, {"un é", "cl", "at"}), "un ||éclat|");
}

}  // namespace
}  // namespace ringserve::text
