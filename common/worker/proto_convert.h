#pragma once

#include <cstdint>

#include "kernels/backend.h"
#include "ringserve/internal/v1/worker.pb.h"

// The one conversion of each worker-protocol type to the engine's struct and back.
namespace ringserve::worker {

// The sampling settings of `proto`, drawing at `position`.
kernels::SamplingParams SamplingFromProto(const internal::v1::Sampling& proto,
                                          uint64_t position = 0);
// The settings of `params` (its position travels separately).
internal::v1::Sampling SamplingToProto(const kernels::SamplingParams& params);

}  // namespace ringserve::worker
