#pragma once

#include <string>
#include <string_view>

namespace ringserve::text {

// A few KB of varied text (English prose, code, numbers, several scripts, emoji) written for
// training the small test tokenizers.
extern const std::string_view kEmbeddedTrainingText;

// The corpus WriteTokenizerFiles trains on: kEmbeddedTrainingText followed by
// /usr/share/common-licenses/GPL-3 when that file exists (it does on every Debian system).
// Deterministic for a given machine image.
std::string DefaultTrainingCorpus();

}  // namespace ringserve::text
