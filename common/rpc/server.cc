#include "common/rpc/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <signal.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"

namespace ringserve::rpc {

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::string& host, int port, const TlsFiles& tls, bool require_client_cert,
    const std::vector<grpc::Service*>& services) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", port, " is outside [0, 65535]"));
  }
  ASSIGN_OR_RETURN(auto creds, ServerCredentials(tls, require_client_cert));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::unique_ptr<GrpcServer> s(new GrpcServer());
  builder.AddListeningPort(absl::StrCat(host, ":", port), creds, &s->port_);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  for (grpc::Service* service : services) builder.RegisterService(service);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port));
  }
  auto* health = s->server_->GetHealthCheckService();
  health->SetServingStatus("liveness", true);
  s->SetReady(false);
  return s;
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetReady(bool ready) {
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus("readiness", ready);
  health->SetServingStatus("", ready);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  SetReady(false);
  server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(grace));
  server_->Wait();
  server_.reset();
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

int ServerMain(const char* name, absl::Status (*body)(const std::vector<std::string>&), int argc,
               char** argv) {
  BlockTerminationSignals();
  const absl::Status status = body(std::vector<std::string>(argv + 1, argv + argc));
  if (base::IsHelp(status)) {
    std::fputs(std::string(status.message()).c_str(), stdout);
    return 0;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", name, std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const TlsFiles& tls) {
  ASSIGN_OR_RETURN(auto creds, ChannelCredentials(tls));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return grpc::CreateCustomChannel(target, creds, args);
}

}  // namespace ringserve::rpc
