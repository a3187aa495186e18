#include "common/rpc/tls.h"

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"

namespace ringserve::rpc {
namespace {

absl::Status CheckComplete(const TlsFiles& tls) {
  if (tls.cert.empty() || tls.key.empty() || tls.ca.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs all of --tls-cert, --tls-key and --tls-ca (mutual TLS between components)");
  }
  return absl::OkStatus();
}

}  // namespace

void AddTlsFlags(base::FlagSet* flags) {
  flags->String("tls-cert", "", "PEM certificate of this process");
  flags->String("tls-key", "", "PEM private key of this process");
  flags->String("tls-ca", "", "PEM CA bundle that peers' certificates must chain to");
}

TlsFiles TlsFromFlags(const base::FlagSet& flags) {
  return {flags.Get("tls-cert"), flags.Get("tls-key"), flags.Get("tls-ca")};
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  RETURN_IF_ERROR(CheckComplete(tls));
  ASSIGN_OR_RETURN(std::string cert, base::ReadFileToString(tls.cert));
  ASSIGN_OR_RETURN(std::string key, base::ReadFileToString(tls.key));
  ASSIGN_OR_RETURN(std::string ca, base::ReadFileToString(tls.ca));
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = ca;
  options.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  RETURN_IF_ERROR(CheckComplete(tls));
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs, base::ReadFileToString(tls.ca));
  ASSIGN_OR_RETURN(options.pem_private_key, base::ReadFileToString(tls.key));
  ASSIGN_OR_RETURN(options.pem_cert_chain, base::ReadFileToString(tls.cert));
  return grpc::SslCredentials(options);
}

}  // namespace ringserve::rpc
