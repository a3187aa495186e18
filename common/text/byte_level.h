#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ringserve::text {

// GPT-2's byte-to-unicode map, used by byte-level BPE vocabularies: every byte is shown as one
// printable code point (printable Latin-1 bytes as themselves, the rest from U+0100 up), so a
// token's bytes can be written as a JSON string. Immutable and thread-safe.
class ByteLevelAlphabet {
 public:
  // The process-wide instance.
  static const ByteLevelAlphabet& Get();

  // The code point that shows `byte`.
  char32_t CodePointOf(uint8_t byte) const { return byte_to_char_[byte]; }
  // The byte that `c` shows, or nullopt when `c` is not in the alphabet.
  std::optional<uint8_t> ByteOf(char32_t c) const;
  // The UTF-8 text of the code points that show `bytes`.
  std::string Encode(std::string_view bytes) const;
  // The bytes shown by `text` (UTF-8), or nullopt when a code point is not in the alphabet.
  std::optional<std::string> Decode(std::string_view text) const;
  // The 256 bytes in the order GPT-2 lists them (printable ones first).
  const std::array<uint8_t, 256>& BytesInOrder() const { return order_; }

 private:
  ByteLevelAlphabet();

  std::array<char32_t, 256> byte_to_char_;
  std::array<uint8_t, 256> order_;
};

}  // namespace ringserve::text
