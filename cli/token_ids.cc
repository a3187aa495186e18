#include "cli/token_ids.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/mapped_file.h"
#include "common/base/status_macros.h"

namespace ringserve::cli {

void AddTokenIdFlags(base::FlagSet* flags, const std::string& name) {
  flags->String(name, "", "comma-separated token ids");
  flags->String(name + "-file", "",
                absl::StrCat("file of token ids separated by commas or white space (instead of --",
                             name, ")"));
}

bool HasTokenIds(const base::FlagSet& flags, const std::string& name) {
  return !flags.Get(name).empty() || !flags.Get(name + "-file").empty();
}

absl::StatusOr<std::vector<int64_t>> TokenIds(const base::FlagSet& flags, const std::string& name) {
  const std::string& path = flags.Get(name + "-file");
  if (path.empty()) return flags.GetIntList(name);
  if (!flags.Get(name).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("give --", name, " or --", name, "-file, not both"));
  }
  ASSIGN_OR_RETURN(const std::string text, base::ReadFileToString(path));
  std::vector<int64_t> ids;
  for (absl::string_view part :
       absl::StrSplit(text, absl::ByAnyChar(", \t\r\n"), absl::SkipEmpty())) {
    int64_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids.size(), " in ", path, " ('",
                                                     part.substr(0, 32), "') is not an integer"));
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace ringserve::cli
