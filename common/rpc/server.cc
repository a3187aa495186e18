#include "common/rpc/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"

namespace ringserve::rpc {
namespace {

using grpc::experimental::InterceptionHookPoints;

// Turns the answer gRPC 1.51's callback handlers give a request that failed to deserialize
// (UNIMPLEMENTED with an empty message, server_callback_handlers.h) into INVALID_ARGUMENT naming
// the method. Only that answer is rewritten: any status a handler sets passes unchanged. One per
// call; not thread-safe (gRPC runs a call's hooks one at a time).
class MalformedRequestInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit MalformedRequestInterceptor(std::string method) : method_(std::move(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      unparsed_ = true;
    }
    if (unparsed_ && methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        methods->ModifySendStatus(grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("the request of ", method_,
                         " is not a valid protobuf message of its type (malformed bytes, or a "
                         "string field that is not UTF-8)")));
      }
    }
    methods->Proceed();
  }

 private:
  const std::string method_;
  bool unparsed_ = false;
};

// Interceptors for the public API's methods whose request is read before the handler runs
// (unary and server-streaming ringserve.v1 methods); no other call pays for one.
class MalformedRequestInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    using Type = grpc::experimental::ServerRpcInfo::Type;
    const std::string_view method = info->method();
    if (method.substr(0, kPublicPrefix.size()) != kPublicPrefix ||
        (info->type() != Type::UNARY && info->type() != Type::SERVER_STREAMING)) {
      return nullptr;
    }
    return new MalformedRequestInterceptor(std::string(method));
  }

 private:
  static constexpr std::string_view kPublicPrefix = "/ringserve.v1.";
};

}  // namespace

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::string& host, int port, const TlsFiles& tls, bool require_client_cert,
    const std::vector<grpc::Service*>& services, int max_receive_bytes) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("port ", port, " is outside [0, 65535]"));
  }
  ASSIGN_OR_RETURN(auto creds, ServerCredentials(tls, require_client_cert));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::unique_ptr<GrpcServer> s(new GrpcServer());
  builder.AddListeningPort(absl::StrCat(host, ":", port), creds, &s->port_);
  builder.SetMaxReceiveMessageSize(max_receive_bytes);
  builder.SetMaxSendMessageSize(64 << 20);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<MalformedRequestInterceptorFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
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
