#include "common/text/stop_matcher.h"

#include <algorithm>

namespace ringserve::text {

StopMatcher::StopMatcher(std::vector<std::string> stop_strings) {
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) continue;
    max_stop_size_ = std::max(max_stop_size_, stop_strings[i].size());
    stops_.push_back(std::move(stop_strings[i]));
    stop_indices_.push_back(static_cast<int>(i));
  }
}

std::string StopMatcher::Push(std::string_view text) {
  if (stopped_) return "";
  held_.append(text);

  size_t first = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t at = held_.find(stops_[i]);
    if (at < first) {
      first = at;
      stop_index_ = stop_indices_[i];
    }
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string shown = held_.substr(0, first);
    held_.clear();
    return shown;
  }

  // Hold back the longest suffix that is a proper prefix of a stop string.
  size_t hold = 0;
  const size_t longest = max_stop_size_ > 0 ? std::min(held_.size(), max_stop_size_ - 1) : 0;
  for (size_t k = longest; k > 0 && hold == 0; --k) {
    const std::string_view suffix = std::string_view(held_).substr(held_.size() - k);
    for (const std::string& stop : stops_) {
      if (stop.size() > k && std::string_view(stop).substr(0, k) == suffix) {
        hold = k;
        break;
      }
    }
  }
  std::string shown = held_.substr(0, held_.size() - hold);
  held_.erase(0, held_.size() - hold);
  return shown;
}

std::string StopMatcher::Flush() {
  std::string rest = std::move(held_);
  held_.clear();
  return stopped_ ? std::string() : rest;
}

}  // namespace ringserve::text
