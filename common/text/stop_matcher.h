#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ringserve::text {

// Applies stop strings to streamed text. Text that could be the start of a stop string is held
// back until it is known not to be one, so a stop string split across deltas is still caught and
// never shown. When a stop string completes, the text before it is released and everything from
// the stop string on is dropped. If several complete at once, the one that starts first wins
// (the earlier-listed on a tie).
//
// Not thread-safe; one per generated sequence.
class StopMatcher {
 public:
  // Empty stop strings are ignored. Stop strings and the text fed must be UTF-8; held-back
  // text then always starts on a character boundary.
  explicit StopMatcher(std::vector<std::string> stop_strings);

  // Feeds the next piece of generated text; returns what may be shown now. Once a stop string
  // has completed (stopped() turns true), returns the text before it, then nothing more.
  std::string Push(std::string_view text);
  // Ends the stream: returns the text still held back (nothing after a stop).
  std::string Flush();

  bool stopped() const { return stopped_; }
  // Which stop string matched (index into the constructor's list), or -1.
  int stop_index() const { return stop_index_; }
  size_t held_bytes() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  std::vector<int> stop_indices_;  // index of each kept stop string in the constructor's list
  size_t max_stop_size_ = 0;
  std::string held_;
  bool stopped_ = false;
  int stop_index_ = -1;
};

}  // namespace ringserve::text
