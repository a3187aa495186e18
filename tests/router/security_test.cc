// TLS everywhere, mutual TLS between components and a bearer token on the public API, with a
// test CA made by scripts/make-test-ca.sh.
#include "common/base/mapped_file.h"
#include "common/rpc/server.h"
#include "gtest/gtest.h"
#include "tests/router/cluster_fixture.h"

namespace ringserve::testing {
namespace {

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    MakeDefaultModel(dir_->path() + "/model");
    certs_ = dir_->path() + "/certs";
    auto ca = base::Subprocess::Start(
        {"/bin/bash", std::string(RINGSERVE_SOURCE_DIR) + "/scripts/make-test-ca.sh", certs_},
        false);
    ASSERT_TRUE(ca.ok());
    ASSERT_EQ(*(*ca)->Wait(absl::Minutes(1)), 0);
    ASSERT_TRUE(base::WriteStringToFile(dir_->path() + "/token", "s3cret\n").ok());
    auto options = ClusterOptions(dir_->path() + "/model", 1, 1);
    const std::vector<std::string> tls = {"--tls-cert=" + certs_ + "/server.crt",
                                          "--tls-key=" + certs_ + "/server.key",
                                          "--tls-ca=" + certs_ + "/ca.crt"};
    options.worker_args.insert(options.worker_args.end(), tls.begin(), tls.end());
    options.router_args.insert(options.router_args.end(), tls.begin(), tls.end());
    options.router_args.push_back("--api-token-file=" + dir_->path() + "/token");
    auto cluster = cli::LocalCluster::Start(options);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete dir_;
  }

  static std::shared_ptr<grpc::Channel> Channel(const std::string& target, const std::string& ca,
                                                const std::string& cert_name) {
    rpc::TlsFiles tls{cert_name.empty() ? "" : certs_ + "/" + cert_name + ".crt",
                      cert_name.empty() ? "" : certs_ + "/" + cert_name + ".key",
                      certs_ + "/" + ca};
    auto channel = rpc::MakeChannel(target, tls);
    EXPECT_TRUE(channel.ok()) << channel.status();
    return *channel;
  }

  static grpc::Status Generate(const std::string& token) {
    auto stub = ringserve::v1::Generation::NewStub(
        Channel(cluster_->router_address(), "ca.crt", ""));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    auto reader = stub->Generate(&ctx, TokenRequest(PromptOf(20), 4));
    ringserve::v1::GenerateResponse r;
    int deltas = 0;
    while (reader->Read(&r)) deltas += r.has_delta();
    grpc::Status s = reader->Finish();
    if (s.ok()) {
      EXPECT_EQ(deltas, 4);
    }
    return s;
  }

  static grpc::Status WorkerStatus(const std::string& cert_name, const std::string& ca) {
    auto stub = internal::v1::Decode::NewStub(
        Channel(cluster_->Find("decode", 0)->address, ca, cert_name));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    internal::v1::WorkerStatus status;
    return stub->GetStatus(&ctx, {}, &status);
  }

  static TempDir* dir_;
  static std::string certs_;
  static cli::LocalCluster* cluster_;
};
TempDir* SecurityTest::dir_ = nullptr;
std::string SecurityTest::certs_;
cli::LocalCluster* SecurityTest::cluster_ = nullptr;

TEST_F(SecurityTest, ThePublicApiNeedsTheBearerToken) {
  EXPECT_TRUE(Generate("s3cret").ok());
  const grpc::Status missing = Generate("");
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(missing.error_message().find("authorization"), std::string::npos);
  EXPECT_EQ(Generate("wrong").error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTest, WorkersAcceptOnlyPeersWithACertificateFromTheCa) {
  EXPECT_TRUE(WorkerStatus("client", "ca.crt").ok());
  EXPECT_FALSE(WorkerStatus("", "ca.crt").ok()) << "a peer without a certificate got in";
  EXPECT_FALSE(WorkerStatus("rogue", "ca.crt").ok()) << "a certificate of another CA got in";
}

TEST_F(SecurityTest, AForgedTicketCannotOpenAnotherRequestsStream) {
  auto stub = internal::v1::Decode::NewStub(
      Channel(cluster_->Find("decode", 0)->address, "ca.crt", "client"));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  internal::v1::ReserveRequest req;
  req.set_request_id("victim");
  req.set_prompt_tokens(10);
  req.set_max_tokens(10);
  internal::v1::ReserveResponse resp;
  ASSERT_TRUE(stub->Reserve(&ctx, req, &resp).ok());
  grpc::ClientContext gctx;
  gctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  internal::v1::DecodeRequest forged;
  forged.set_request_id("victim");
  forged.set_ticket(std::string(32, '0'));
  auto reader = stub->Generate(&gctx, forged);
  internal::v1::DecodeEvent event;
  EXPECT_FALSE(reader->Read(&event));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext rctx;
  rctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  internal::v1::ReleaseRequest release;
  release.set_request_id("victim");
  release.set_ticket(resp.ticket());
  internal::v1::ReleaseResponse released;
  ASSERT_TRUE(stub->Release(&rctx, release, &released).ok());
  EXPECT_TRUE(released.released());
}

}  // namespace
}  // namespace ringserve::testing
