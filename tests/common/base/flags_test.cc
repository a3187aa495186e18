#include "common/base/flags.h"

#include "gtest/gtest.h"

namespace ringserve::base {
namespace {

TEST(FlagSetTest, ParsesBothFormsAndBooleans) {
  FlagSet f("prog");
  f.String("port", "1", "");
  f.String("ids", "", "");
  f.Bool("json", false, "");
  ASSERT_TRUE(f.Parse({"--port", "7", "--ids=1,2,3", "--json", "pos"}).ok());
  EXPECT_EQ(*f.GetInt("port"), 7);
  EXPECT_EQ(*f.GetIntList("ids"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(f.GetBool("json"));
  EXPECT_EQ(f.positional(), std::vector<std::string>{"pos"});
}

TEST(FlagSetTest, HelpStopsParsingWithTheUsage) {
  for (const char* help : {"--help", "-h"}) {
    FlagSet f("prog");
    f.String("port", "1", "the port");
    const absl::Status status = f.Parse({"--port", "7", help, "--nope"});
    EXPECT_TRUE(IsHelp(status)) << status;
    EXPECT_NE(status.message().find("usage: prog"), std::string::npos);
    EXPECT_NE(status.message().find("--port VALUE  the port"), std::string::npos);
  }
  FlagSet g("prog");
  EXPECT_FALSE(IsHelp(g.Parse({"--nope"})));
  EXPECT_FALSE(IsHelp(absl::CancelledError("usage")));
}

TEST(FlagSetTest, ErrorsNameTheFlag) {
  FlagSet f("prog");
  f.String("port", "1", "");
  f.Bool("json", false, "");
  EXPECT_NE(f.Parse({"--nope"}).message().find("unknown flag --nope"), std::string::npos);
  FlagSet g("prog");
  g.String("port", "1", "");
  EXPECT_NE(g.Parse({"--port"}).message().find("--port needs a value"), std::string::npos);
  FlagSet h("prog");
  h.String("port", "x", "");
  EXPECT_NE(h.GetInt("port").status().message().find("'x' is not an integer"), std::string::npos);
  FlagSet b("prog");
  b.Bool("json", false, "");
  EXPECT_FALSE(b.Parse({"--json=maybe"}).ok());
}

}  // namespace
}  // namespace ringserve::base
