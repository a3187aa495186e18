#pragma once

#include <grpcpp/support/status.h>

#include <string>

#include "absl/status/status.h"

// Status conversions at the state transports' gRPC edges (the codes share their numbering).
namespace ringserve::state {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace ringserve::state
