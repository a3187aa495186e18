#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace ringserve::text {

// UTF-8 helpers shared by the tokenizer, the detokenizer and the template engine.

// The replacement character U+FFFD, encoded.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// OK when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points above
// U+10FFFF); otherwise InvalidArgument naming the byte offset of the first bad sequence.
absl::Status ValidateUtf8(std::string_view text);

// Converts bytes to text the way Rust's String::from_utf8_lossy and the WHATWG decoder do: each
// maximal ill-formed subsequence becomes one U+FFFD. Appends to `out` and returns how many bytes
// of `bytes` were consumed. When `final` is false, a trailing sequence that is incomplete but
// could still become valid is left unconsumed, so that feeding the rest later gives exactly the
// text of converting everything at once.
size_t AppendUtf8Lossy(std::string_view bytes, bool final, std::string* out);

// Appends the UTF-8 encoding of `code_point` (which must be at most U+10FFFF).
void AppendCodePoint(char32_t code_point, std::string* out);

// Decodes the code point starting at `text[*pos]` of well-formed UTF-8 and advances `*pos`.
char32_t NextCodePoint(std::string_view text, size_t* pos);

// Number of code points in well-formed UTF-8.
size_t CodePointCount(std::string_view text);

}  // namespace ringserve::text
