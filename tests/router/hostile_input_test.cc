// Hostile input at the public edge, through a real router process (tiny model, one prefill and
// one decode worker): each request is refused with INVALID_ARGUMENT and the router keeps
// serving. The limits themselves are unit-tested in validation_test.
#include <string>

#include "gtest/gtest.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

using ringserve::v1::ChatMessages;
using ringserve::v1::GenerateRequest;
using ringserve::v1::TokenizeRequest;

class HostileInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    MakeDefaultModel(dir_->path() + "/model");
    auto cluster = cli::LocalCluster::Start(ClusterOptions(dir_->path() + "/model", 1, 1));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete dir_;
  }

  static grpc::Status Tokenize(const TokenizeRequest& request,
                               ringserve::v1::TokenizeResponse* response,
                               const std::string& router = cluster_->router_address()) {
    auto stub = ringserve::v1::Generation::NewStub(
        grpc::CreateChannel(router, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    return stub->Tokenize(&ctx, request, response);
  }

  // The router still answers a chat Generate and a Tokenize, and its process is alive.
  static void ExpectServing() {
    GenerateRequest chat = TokenRequest({}, 3);
    chat.clear_prompt();
    auto* m = chat.mutable_messages()->add_messages();
    m->set_role("user");
    m->set_content("Hello there");
    const Answer a = Generate(cluster_->router_address(), chat, absl::Minutes(2));
    EXPECT_TRUE(a.status.ok()) << a.status.error_message();
    EXPECT_EQ(a.ids.size(), 3u);
    TokenizeRequest t;
    t.set_text("Hello there");
    ringserve::v1::TokenizeResponse ids;
    EXPECT_TRUE(Tokenize(t, &ids).ok());
    EXPECT_GT(ids.ids_size(), 0);
    EXPECT_TRUE(cluster_->Find("router", 0)->process->running());
  }

  static void ExpectInvalid(const grpc::Status& s, const std::string& fragment) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find(fragment), std::string::npos) << s.error_message();
  }

  static TempDir* dir_;
  static cli::LocalCluster* cluster_;
};
TempDir* HostileInputTest::dir_ = nullptr;
cli::LocalCluster* HostileInputTest::cluster_ = nullptr;

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

ChatMessages OneUserMessage() {
  ChatMessages chat;
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content("hi");
  return chat;
}

GenerateRequest ChatRequest(const ChatMessages& chat) {
  GenerateRequest r = TokenRequest({}, 4);
  *r.mutable_messages() = chat;
  return r;
}

TEST_F(HostileInputTest, JsonNested100000DeepIsRefused) {
  ChatMessages tools = OneUserMessage();
  tools.add_tools_json(Nested(100'000));
  ExpectInvalid(Generate(cluster_->router_address(), ChatRequest(tools)).status,
                "prompt.messages.tools_json[0]: JSON nests deeper than the limit of 64 levels");
  ChatMessages arguments = OneUserMessage();
  auto* call = arguments.add_messages();
  call->set_role("assistant");
  auto* tool_call = call->add_tool_calls();
  tool_call->set_name("f");
  tool_call->set_arguments_json("{\"a\": " + Nested(100'000) + "}");
  ExpectInvalid(Generate(cluster_->router_address(), ChatRequest(arguments)).status,
                "prompt.messages[1].tool_calls[0].arguments_json: JSON nests deeper");
  TokenizeRequest t;
  *t.mutable_messages() = tools;
  ringserve::v1::TokenizeResponse ids;
  ExpectInvalid(Tokenize(t, &ids), "messages.tools_json[0]: JSON nests deeper");
  ExpectServing();
}

TEST_F(HostileInputTest, ControlCharactersInRequestIdsAreRefused) {
  for (const std::string& id :
       {std::string("x\nts=0 level=error comp=router event=FORGED"), std::string("x\r"),
        std::string("\x1b[2J"), std::string("nul\0id", 6), std::string(129, 'a')}) {
    GenerateRequest r = TokenRequest(PromptOf(8), 2);
    r.set_request_id(id);
    ExpectInvalid(Generate(cluster_->router_address(), r).status, "request_id");
  }
  GenerateRequest r = TokenRequest(PromptOf(8), 2);
  r.set_request_id("printable id = fine");
  EXPECT_TRUE(Generate(cluster_->router_address(), r).status.ok());
  ExpectServing();
}

TEST_F(HostileInputTest, TokenizeHasTheLimitsOfGenerate) {
  ringserve::v1::TokenizeResponse ids;
  TokenizeRequest many;
  for (int i = 0; i < 10'000; ++i) {
    auto* m = many.mutable_messages()->add_messages();
    m->set_role("user");
    m->set_content("hi");
  }
  ExpectInvalid(Tokenize(many, &ids), "messages holds 10000 messages; the limit is 1024");
  TokenizeRequest root;
  *root.mutable_messages() = OneUserMessage();
  root.mutable_messages()->mutable_messages(0)->set_role("root");
  ExpectInvalid(Tokenize(root, &ids), "messages[0].role 'root' is not one of");
  TokenizeRequest big;
  big.set_text(std::string((8 << 20) + 1, 'a'));
  ExpectInvalid(Tokenize(big, &ids), "text of 8388609 bytes exceeds the limit 8388608");
  TokenizeRequest long_text;
  for (int i = 0; i < 200'000; ++i) long_text.mutable_text()->append(i % 2 == 0 ? "a " : "b ");
  ExpectInvalid(Tokenize(long_text, &ids), "more than the limit of 131072 tokens");
  ExpectServing();
}

TEST_F(HostileInputTest, TokenizeCountsAgainstTheInflightBound) {
  // A router alone (its workers' addresses lead nowhere): Tokenize needs none.
  auto options = ClusterOptions(dir_->path() + "/model", 0, 0);
  options.router_args.insert(options.router_args.end(),
                             {"--max-inflight=0", "--prefill=127.0.0.1:1", "--decode=127.0.0.1:1"});
  auto full = cli::LocalCluster::Start(options);
  ASSERT_TRUE(full.ok()) << full.status();
  TokenizeRequest t;
  t.set_text("hello");
  ringserve::v1::TokenizeResponse ids;
  const grpc::Status s = Tokenize(t, &ids, (*full)->router_address());
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_EQ(s.error_message(), "router has 0 requests in flight; the limit is 0 (--max-inflight)");
}

TEST_F(HostileInputTest, CostlyChatIsRefusedBeforeTokenizing) {
  ChatMessages chat;
  for (int i = 0; i < 15; ++i) {
    auto* m = chat.add_messages();
    m->set_role(i % 2 == 0 ? "user" : "assistant");
    m->set_content(std::string(1 << 20, 'a' + i % 26));
  }
  ExpectInvalid(Generate(cluster_->router_address(), ChatRequest(chat)).status,
                "prompt.messages hold 15728640 bytes in all; the limit is 8388608");
  ExpectServing();
}

TEST_F(HostileInputTest, AnOversizedRequestIsRefusedBeforeItIsParsed) {
  // 60 messages of 1 MiB: past the router's 16 MiB request limit, refused by gRPC unread.
  ChatMessages chat;
  for (int i = 0; i < 60; ++i) {
    auto* m = chat.add_messages();
    m->set_role(i % 2 == 0 ? "user" : "assistant");
    m->set_content(std::string(1 << 20, 'a' + i % 26));
  }
  const grpc::Status s = Generate(cluster_->router_address(), ChatRequest(chat)).status;
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  ExpectServing();
}

TEST_F(HostileInputTest, RequestsThatDoNotParseAreInvalidArgument) {
  // A proto3 string must be UTF-8: the router's protobuf parser refuses this request (the C++
  // client sends it, logging an error).
  GenerateRequest r = TokenRequest({}, 2);
  r.set_text("caf\xc3(");
  ExpectInvalid(Generate(cluster_->router_address(), r).status,
                "the request of /ringserve.v1.Generation/Generate is not a valid protobuf message");
  TokenizeRequest t;
  t.set_text("\xff");
  ringserve::v1::TokenizeResponse ids;
  ExpectInvalid(Tokenize(t, &ids), "/ringserve.v1.Generation/Tokenize is not a valid protobuf");
  ExpectServing();
}

}  // namespace
}  // namespace ringserve::testing
