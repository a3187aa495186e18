#include "common/worker/proto_convert.h"

namespace ringserve::worker {

kernels::SamplingParams SamplingFromProto(const internal::v1::Sampling& proto, uint64_t position) {
  return {proto.temperature(), proto.top_k(), proto.top_p(), proto.min_p(), proto.seed(), position};
}

internal::v1::Sampling SamplingToProto(const kernels::SamplingParams& params) {
  internal::v1::Sampling proto;
  proto.set_temperature(params.temperature);
  proto.set_top_k(params.top_k);
  proto.set_top_p(params.top_p);
  proto.set_min_p(params.min_p);
  proto.set_seed(params.seed);
  return proto;
}

}  // namespace ringserve::worker
