#include "common/text/regex.h"

#include <oniguruma.h>

#include <mutex>

#include "absl/strings/str_cat.h"

namespace ringserve::text {
namespace {

void InitializeOniguruma() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

struct RegionDeleter {
  void operator()(OnigRegion* region) const { onig_region_free(region, 1); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Create(std::string_view pattern) {
  InitializeOniguruma();
  OnigRegex regex = nullptr;
  OnigErrorInfo error_info;
  const auto* begin = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int rc = onig_new(&regex, begin, begin + pattern.size(), ONIG_OPTION_NONE,
                          ONIG_ENCODING_UTF8, ONIG_SYNTAX_ONIGURUMA, &error_info);
  if (rc != ONIG_NORMAL) {
    OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(message, rc, &error_info);
    return absl::InvalidArgumentError(absl::StrCat("invalid regular expression '",
                                                   std::string(pattern),
                                                   "': ", reinterpret_cast<char*>(message)));
  }
  return std::unique_ptr<Regex>(new Regex(std::string(pattern), regex));
}

Regex::~Regex() { onig_free(static_cast<OnigRegex>(regex_)); }

absl::StatusOr<std::vector<std::pair<size_t, size_t>>> Regex::FindAll(std::string_view text,
                                                                      size_t max_nonempty) const {
  std::vector<std::pair<size_t, size_t>> matches;
  size_t nonempty = 0;
  std::unique_ptr<OnigRegion, RegionDeleter> region(onig_region_new());
  const auto* begin = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = begin + text.size();
  size_t pos = 0;
  while (pos < text.size()) {
    const int at = onig_search(static_cast<OnigRegex>(regex_), begin, end, begin + pos, end,
                               region.get(), ONIG_OPTION_NONE);
    if (at == ONIG_MISMATCH) break;
    if (at < 0) {
      OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
      onig_error_code_to_str(message, at);
      return absl::ResourceExhaustedError(absl::StrCat("regular expression search failed at byte ",
                                                       pos, ": ",
                                                       reinterpret_cast<char*>(message)));
    }
    const auto match_begin = static_cast<size_t>(region->beg[0]);
    const auto match_end = static_cast<size_t>(region->end[0]);
    matches.emplace_back(match_begin, match_end);
    if (match_end > match_begin) {
      if (++nonempty > max_nonempty) break;
      pos = match_end;
    } else {
      pos = match_begin + 1;
      while (pos < text.size() && (static_cast<uint8_t>(text[pos]) & 0xC0) == 0x80) ++pos;
    }
  }
  return matches;
}

}  // namespace ringserve::text
