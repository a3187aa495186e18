#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/flags.h"

namespace ringserve::rpc {

// Certificate files of one process. A TLS server needs cert and key, and with `ca` verifies
// client certificates signed by it (mutual TLS, required between components). A TLS client needs
// `ca` to verify servers and presents cert/key when given (components do; public API clients
// need not). With none set, channels are plaintext (loopback development only).
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// --tls-cert, --tls-key, --tls-ca.
void AddTlsFlags(base::FlagSet* flags);
TlsFiles TlsFromFlags(const base::FlagSet& flags);

// `require_client_cert`: internal services refuse peers without a certificate from `ca`.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& tls, bool require_client_cert);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const TlsFiles& tls);

}  // namespace ringserve::rpc
