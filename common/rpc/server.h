#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls.h"

namespace ringserve::rpc {

// A running gRPC server with the standard grpc.health.v1 service (services "liveness" and
// "readiness", plus "" for the whole server) and server reflection. A request that does not
// parse as its method's message is answered INVALID_ARGUMENT naming the method (gRPC's callback
// handlers would answer UNIMPLEMENTED with an empty message). Thread-safe.
class GrpcServer {
 public:
  // Listens on host:port (port 0 picks a free one) with `tls` (see ServerCredentials);
  // `services` must outlive it. gRPC refuses a request message over `max_receive_bytes` with
  // RESOURCE_EXHAUSTED before any handler runs.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const std::string& host, int port, const TlsFiles& tls, bool require_client_cert,
      const std::vector<grpc::Service*>& services, int max_receive_bytes = 64 << 20);
  ~GrpcServer();

  int port() const { return port_; }
  // Readiness as seen by probes and routers.
  void SetReady(bool ready);
  // Stops accepting calls and cancels the ones still running after `grace`.
  void Shutdown(absl::Duration grace);

 private:
  GrpcServer() = default;

  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// Blocks SIGTERM and SIGINT in the calling thread and every thread created after; call first
// thing in main so WaitForTerminationSignal can receive them.
void BlockTerminationSignals();
// Waits for SIGTERM or SIGINT; returns the signal number.
int WaitForTerminationSignal();

// The main() of a server binary: blocks the termination signals, runs `body` with the
// arguments after the program name, and prints a failure as "NAME: message" (exit code 1).
int ServerMain(const char* name, absl::Status (*body)(const std::vector<std::string>&), int argc,
               char** argv);

// A channel to `target` ("host:port" or "dns:///name:port") with `tls`.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const TlsFiles& tls);

}  // namespace ringserve::rpc
