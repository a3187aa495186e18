#include "common/rpc/tls.h"

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"

namespace ringserve::rpc {
void AddTlsFlags(base::FlagSet* flags) {
  flags->String("tls-cert", "", "PEM certificate of this process");
  flags->String("tls-key", "", "PEM private key of this process");
  flags->String("tls-ca", "", "PEM CA bundle that peers' certificates must chain to");
}

TlsFiles TlsFromFlags(const base::FlagSet& flags) {
  return {flags.Get("tls-cert"), flags.Get("tls-key"), flags.Get("tls-ca")};
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const TlsFiles& tls, bool require_client_cert) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.cert.empty() || tls.key.empty() || (require_client_cert && tls.ca.empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("a TLS server needs --tls-cert and --tls-key",
                     require_client_cert ? ", and --tls-ca to verify its peers (mutual TLS)" : ""));
  }
  ASSIGN_OR_RETURN(std::string cert, base::ReadFileToString(tls.cert));
  ASSIGN_OR_RETURN(std::string key, base::ReadFileToString(tls.key));
  grpc::SslServerCredentialsOptions options(
      require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!tls.ca.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs, base::ReadFileToString(tls.ca));
  }
  options.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  if (tls.ca.empty() || tls.cert.empty() != tls.key.empty()) {
    return absl::InvalidArgumentError(
        "a TLS client needs --tls-ca, and --tls-cert with --tls-key to present a certificate");
  }
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs, base::ReadFileToString(tls.ca));
  if (!tls.cert.empty()) {
    ASSIGN_OR_RETURN(options.pem_private_key, base::ReadFileToString(tls.key));
    ASSIGN_OR_RETURN(options.pem_cert_chain, base::ReadFileToString(tls.cert));
  }
  return grpc::SslCredentials(options);
}

}  // namespace ringserve::rpc
