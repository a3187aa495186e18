#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/base/flags.h"

namespace ringserve::rpc {

// Certificate files of one process. With all three set, servers require and verify client
// certificates signed by `ca` (mutual TLS) and clients present `cert`/`key` and verify servers
// against `ca`. With none set, channels are plaintext (loopback development only).
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string ca;
  bool enabled() const { return !cert.empty() || !key.empty() || !ca.empty(); }
};

// --tls-cert, --tls-key, --tls-ca.
void AddTlsFlags(base::FlagSet* flags);
TlsFiles TlsFromFlags(const base::FlagSet& flags);

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const TlsFiles& tls);
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const TlsFiles& tls);

}  // namespace ringserve::rpc
