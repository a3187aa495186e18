#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace ringserve::rpc {

// Conversions at the service edge: absl::Status inside, grpc::Status on the wire.
grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace ringserve::rpc
