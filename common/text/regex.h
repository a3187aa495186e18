#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace ringserve::text {

// A compiled Oniguruma regular expression over UTF-8 text, with the syntax the HuggingFace
// tokenizers library uses (Oniguruma's own: \p{L}, (?i:...), look-ahead). Immutable after
// Create; Find and FindAll may be called from many threads at once.
class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Create(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The [begin, end) byte ranges of the successive non-overlapping matches in `text`, which must
  // be well-formed UTF-8. An empty match advances the search by one code point. Look-arounds do
  // not see past the ends of `text`. The search stops once it has found more than
  // `max_nonempty` non-empty matches. Fails only when Oniguruma gives up (e.g. its backtracking
  // limit).
  absl::StatusOr<std::vector<std::pair<size_t, size_t>>> FindAll(
      std::string_view text, size_t max_nonempty = SIZE_MAX) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex(std::string pattern, void* regex) : pattern_(std::move(pattern)), regex_(regex) {}

  std::string pattern_;
  void* regex_;  // OnigRegex; kept opaque so that users do not include oniguruma.h.
};

}  // namespace ringserve::text
