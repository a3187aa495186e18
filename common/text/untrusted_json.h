#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ringserve::text {

// Bounds on JSON text that comes from a client. Both are enforced while parsing, so no structure
// beyond them is ever built (nlohmann's copy and dump recurse once per level).
struct JsonLimits {
  int max_depth = 64;           // nesting of arrays and objects; 0 allows only scalars
  size_t max_values = 100'000;  // values of every kind (scalars, arrays, objects), keys excluded
};

// Checks `text` without building anything and returns how many values it holds.
// InvalidArgument when it is not well-formed JSON; ResourceExhausted, naming the limit, as soon
// as it nests deeper or holds more values than `limits` allow (reported even when the text is
// malformed further on).
absl::StatusOr<size_t> CheckUntrustedJson(std::string_view text, const JsonLimits& limits);

// Parses `text` within `limits`; errors as CheckUntrustedJson.
absl::StatusOr<nlohmann::ordered_json> ParseUntrustedJson(std::string_view text,
                                                          const JsonLimits& limits);

}  // namespace ringserve::text
