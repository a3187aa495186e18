#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/flags.h"

namespace ringserve::cli {

// Declares --<name> (comma-separated token ids) and --<name>-file (a file of ids separated by
// commas or white space: a 128K-token prompt does not fit in one command-line argument).
void AddTokenIdFlags(base::FlagSet* flags, const std::string& name);
// The ids of --<name> or --<name>-file (both set is an error; neither gives none).
absl::StatusOr<std::vector<int64_t>> TokenIds(const base::FlagSet& flags, const std::string& name);
// Whether --<name> or --<name>-file was given.
bool HasTokenIds(const base::FlagSet& flags, const std::string& name);

}  // namespace ringserve::cli
